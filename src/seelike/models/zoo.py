"""seelike's shipped models: the recipes that made them and the manifests that say what they reach.

Each zoo model is ``seelike/zoo/NAME.safetensors`` (fp16 weights, architecture in its
metadata) beside ``seelike/zoo/NAME.json`` (the manifest: recipe, seed, epochs and steps,
training fraction, test accuracy of the shipped fp16 weights, wall time, device, sha256 and
the command that reproduces it), in the style of big_vision's configs-with-expected-results.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from seelike.errors import ModelLoadError, close_matches
from seelike.train import MODEL_FILE, TrainConfig, Trainer

VIT = {"width": 96, "depth": 6, "heads": 4, "mlp_ratio": 2.0}
VIT_LARGE = {"width": 128, "depth": 8, "heads": 4, "mlp_ratio": 2.0}
VIT_RECIPE = {"epochs": 12, "lr": 2e-3, "batch_size": 256, "augment": "none"}
VIT_STEPS = 12 * (60_000 // 256)  # data-fraction models take as many optimizer steps as the full one
# The large ViT costs ~2.4x vit-cls per image; half the epochs keeps it near the issue's ~20 min per model.
VIT_LARGE_RECIPE = {**VIT_RECIPE, "epochs": 6}
VIT_LARGE_STEPS = 6 * (60_000 // 256)

#: name → (training recipe, target test accuracy or None, what it is for)
RECIPES: dict[str, tuple[TrainConfig, float | None, str]] = {
    "vit-cls": (TrainConfig("vit", {**VIT, "classifier": "cls"}, **VIT_RECIPE), 0.88, "ViT, CLS-token classifier"),
    "vit-gap": (TrainConfig("vit", {**VIT, "classifier": "gap"}, **VIT_RECIPE), 0.88, "ViT, global-average-pool classifier"),
    "resnet": (
        TrainConfig("resnet", {"widths": (16, 32, 64), "units_per_stage": (2, 2, 2)}, epochs=15, lr=2e-3, augment="crop-flip", bf16=True),
        0.92,
        "ResNet for 28x28 (3 stages of 2 basic units)",
    ),
    "mixer": (
        TrainConfig("mixer", {"width": 128, "depth": 6, "token_hidden": 64, "channel_hidden": 256}, **VIT_RECIPE),
        0.87,
        "MLP-Mixer, patch 4",
    ),
    "vit-cls-seed1": (TrainConfig("vit", {**VIT, "classifier": "cls"}, **VIT_RECIPE, seed=1), None, "vit-cls with seed 1: the seed baseline"),
    "vit-cls-noskip-early": (
        TrainConfig("vit", {**VIT, "classifier": "cls", "no_attention_skip": (1,), "no_mlp_skip": (1,)}, **VIT_RECIPE),
        None,
        "vit-cls without both skips of block 1 (paper Fig 8)",
    ),
    "vit-cls-noskip-mid": (
        TrainConfig("vit", {**VIT, "classifier": "cls", "no_attention_skip": (3,), "no_mlp_skip": (3,)}, **VIT_RECIPE),
        None,
        "vit-cls without both skips of block 3 (paper Fig 8)",
    ),
    **{
        f"vit-cls-frac{round(f * 100):02d}": (
            TrainConfig("vit", {**VIT, "classifier": "cls"}, **{**VIT_RECIPE, "fraction": f, "steps": VIT_STEPS}),
            None,
            f"vit-cls on {round(f * 100)}% of the training set, same steps (paper Fig 12-13)",
        )
        for f in (0.03, 0.10, 0.30)
    },
    "vit-cls-large": (
        TrainConfig("vit", {**VIT_LARGE, "classifier": "cls"}, **VIT_LARGE_RECIPE),
        None,
        "wider and deeper ViT (half vit-cls's epochs)",
    ),
    "vit-cls-large-seed1": (
        TrainConfig("vit", {**VIT_LARGE, "classifier": "cls"}, **VIT_LARGE_RECIPE, seed=1),
        None,
        "vit-cls-large with seed 1: the seed baseline for the large model's data scale",
    ),
    "vit-cls-large-frac10": (
        TrainConfig("vit", {**VIT_LARGE, "classifier": "cls"}, **{**VIT_LARGE_RECIPE, "fraction": 0.10, "steps": VIT_LARGE_STEPS}),
        None,
        "vit-cls-large on 10% of the data, same steps",
    ),
}


def zoo_dir() -> Path:
    """The folder of the installed zoo (inside the seelike package)."""
    return Path(str(resources.files("seelike") / "zoo"))


def manifests() -> dict[str, dict[str, Any]]:
    """Every shipped model's manifest, by name."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(zoo_dir().glob("*.json"))}


def zoo_checkpoint(name: str) -> Path:
    """Path of a shipped checkpoint; a clear error when it is not (yet) in the zoo."""
    path = zoo_dir() / f"{name}.safetensors"
    if path.is_file():
        return path
    shipped = sorted(manifests())
    if name in RECIPES:
        raise ModelLoadError(
            f"zoo:{name} is a zoo recipe but its checkpoint is not shipped in this install. "
            f"Train it with `seelike zoo train {name}` (shipped: {', '.join(shipped) or 'none'})."
        )
    closest = close_matches(name, list(RECIPES))
    hint = f" Closest: {', '.join(closest)};" if closest else f" Recipes: {', '.join(RECIPES)};"
    raise ModelLoadError(f"no zoo model {name!r}.{hint} shipped: {', '.join(shipped) or 'none'}")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train_zoo_model(name: str, runs: Path, publish: bool = True, on_epoch: Any = None, device: str = "cpu") -> dict[str, Any]:
    """Train (or resume) ``name`` from its recipe in ``runs/NAME`` on ``device``; with ``publish``, copy it into the zoo as fp16."""
    if name not in RECIPES:
        raise ModelLoadError(f"no zoo recipe {name!r}; recipes: {', '.join(RECIPES)}")
    config, target, description = RECIPES[name]
    directory = Path(runs) / name
    summary = Trainer(config, directory, on_epoch=on_epoch, device=device).run()
    if publish:
        summary = publish_checkpoint(name, directory / MODEL_FILE, summary, target, description)
    return summary


def publish_checkpoint(name: str, checkpoint: Path, summary: dict[str, Any], target: float | None, description: str) -> dict[str, Any]:
    """Copy a trained checkpoint into the zoo as fp16, re-evaluate it, and write its manifest."""
    from safetensors import safe_open

    from seelike.data import load_dataset
    from seelike.models import load_checkpoint
    from seelike.train import evaluate

    with safe_open(str(checkpoint), framework="pt") as f:
        metadata = f.metadata()
    state = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(checkpoint)).items()}
    destination = zoo_dir() / f"{name}.safetensors"
    temporary = destination.with_name(f".{destination.name}.tmp")
    save_file(state, temporary, metadata=metadata)
    temporary.replace(destination)
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
    (zoo_dir() / f"{name}.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def verify(name: str, evaluate_accuracy: bool = True) -> dict[str, Any]:
    """Check a shipped model's hash and (optionally) re-evaluate its test accuracy."""
    from seelike.data import load_dataset
    from seelike.models import load_checkpoint
    from seelike.train import evaluate

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


__all__ = ["RECIPES", "manifests", "publish_checkpoint", "train_zoo_model", "verify", "zoo_checkpoint", "zoo_dir"]
