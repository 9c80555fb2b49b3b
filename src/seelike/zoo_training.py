"""Training, publishing and verifying zoo models: the zoo's side effects, kept beside the trainer.

:mod:`seelike.models.zoo` only reads the zoo (manifests, checked checkpoints), so loading a zoo
model never imports :mod:`seelike.train`; everything that trains or evaluates lives here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from seelike.data import load_dataset
from seelike.errors import ModelLoadError
from seelike.models import load_checkpoint
from seelike.models.zoo import manifests, sha256, zoo_checkpoint, zoo_dir
from seelike.recipes import RECIPES
from seelike.results import atomic_write_text
from seelike.train import MODEL_FILE, Trainer, evaluate

__all__ = ["publish_checkpoint", "train_zoo_model", "verify"]


def train_zoo_model(name: str, runs: Path, out: Path | None = None, on_epoch: Any = None, device: str = "cpu") -> dict[str, Any]:
    """Train (or resume) ``name`` from its recipe in ``runs/NAME`` on ``device``, then publish it into ``out`` as fp16.

    ``out`` defaults to ``runs/published``: the shipped weights inside the package are replaced only when
    ``out`` is :func:`~seelike.models.zoo.zoo_dir` itself (``seelike zoo train NAME --out PACKAGE``).
    """
    if name not in RECIPES:
        raise ModelLoadError(f"no zoo recipe {name!r}; recipes: {', '.join(RECIPES)}")
    config, target, description = RECIPES[name]
    directory = Path(runs) / name
    summary = Trainer(config, directory, on_epoch=on_epoch, device=device).run()
    destination = Path(out) if out is not None else Path(runs) / "published"
    return publish_checkpoint(name, directory / MODEL_FILE, summary, target, description, destination)


def publish_checkpoint(name: str, checkpoint: Path, summary: dict[str, Any], target: float | None, description: str,
                       destination_dir: Path | None = None) -> dict[str, Any]:
    """Copy a trained checkpoint into ``destination_dir`` (default: the installed zoo) as fp16, re-evaluate it, and
    write its manifest beside it."""
    destination_dir = Path(destination_dir) if destination_dir is not None else zoo_dir()
    destination_dir.mkdir(parents=True, exist_ok=True)
    with safe_open(str(checkpoint), framework="pt") as f:
        metadata = f.metadata()
    state = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(checkpoint)).items()}
    destination = destination_dir / f"{name}.safetensors"
    temporary = destination.with_name(f".{destination.name}.tmp")
    save_file(state, temporary, metadata=metadata)
    os.replace(temporary, destination)
    model = load_checkpoint(destination, f"zoo:{name}")
    accuracy = evaluate(model.module, model.preprocessing, load_dataset(summary["config"]["data"], split="test"))
    manifest = {
        "name": name,
        "description": description,
        "arch": summary["config"]["arch"],
        "parameters": sum(p.numel() for p in model.module.parameters()),
        "test_accuracy": round(accuracy, 4),
        "test_accuracy_fp32": round(summary["test_accuracy"], 4),
        "target_accuracy": target,
        "epochs": summary["epochs"],
        "steps": summary["steps"],
        "fraction": summary["config"]["fraction"],
        "seed": summary["config"]["seed"],
        "train_seconds": summary["train_seconds"],
        "images_per_second": summary["images_per_second"],
        "device": summary["device"],
        "torch": summary["torch"],
        "recipe": summary["config"],
        "sha256": sha256(destination),
        "command": f"seelike zoo train {name}",
    }
    atomic_write_text(destination_dir / f"{name}.json", json.dumps(manifest, indent=2) + "\n")
    return manifest


def verify(name: str, evaluate_accuracy: bool = True) -> dict[str, Any]:
    """Check a shipped model's hash and (optionally) re-evaluate its test accuracy."""
    manifest = manifests().get(name)
    if manifest is None:
        raise ModelLoadError(f"zoo:{name} has no manifest; shipped: {', '.join(manifests()) or 'none'}")
    path = zoo_checkpoint(name)
    report: dict[str, Any] = {"name": name, "sha256_ok": sha256(path) == manifest["sha256"]}
    if evaluate_accuracy:
        model = load_checkpoint(path, f"zoo:{name}")
        accuracy = evaluate(model.module, model.preprocessing, load_dataset(manifest["recipe"]["data"], split="test"))
        report.update(test_accuracy=accuracy, recorded=manifest["test_accuracy"], accuracy_ok=abs(accuracy - manifest["test_accuracy"]) <= 0.001)
    return report
