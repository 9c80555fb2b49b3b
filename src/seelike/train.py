"""A small, resumable trainer for seelike's own models (the zoo; DESIGN.md: train).

AdamW, linear warm-up then cosine decay (a pure function of the step, so no scheduler state),
label smoothing, optional light augmentation, and a checkpoint at the end of every epoch: one
safetensors file with the weights, the optimizer state and (in its metadata) the JSON state, renamed
into place, so a kill at any moment leaves one whole checkpoint (``state.json`` is a readable copy). Data order and
augmentation of epoch ``e`` depend only on ``(seed, e)``, so an interrupted run resumed from
its last checkpoint continues exactly as if it had never stopped. No pickle is ever read.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from seelike.capture import ThroughputMeter
from seelike.data import load_dataset
from seelike.errors import CheckpointError, InvalidInputError, SeelikeError
from seelike.models import build_module, check_state_keys, resolve_device, save_checkpoint
from seelike.models.model import Preprocessing
from seelike.recipes import TrainConfig
from seelike.results import atomic_write_text

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
TENSORS_FILE = "state.safetensors"
MODEL_FILE = "model.safetensors"
STATE_KEY = "seelike_training_state"  # the JSON state inside the safetensors checkpoint's metadata


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * peak * (1 + math.cos(math.pi * min(1.0, progress)))


def augment_batch(images: Tensor, mode: str, generator: torch.Generator) -> Tensor:
    """Horizontal flips (``flip``) and ±2 px translations (``crop-flip``), drawn from ``generator``."""
    if mode == "none":
        return images
    batch = images.shape[0]
    flip = torch.rand(batch, generator=generator) < 0.5
    images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
    if mode == "crop-flip":
        pad = 2
        padded = F.pad(images, (pad, pad, pad, pad))
        shifts = torch.randint(0, 2 * pad + 1, (batch, 2), generator=generator)
        height, width = images.shape[-2:]
        images = torch.stack([padded[i, :, y : y + height, x : x + width] for i, (y, x) in enumerate(shifts.tolist())])
    return images


@torch.inference_mode()
def evaluate(module: nn.Module, preprocessing: Preprocessing, dataset: Any, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``module`` on ``dataset`` (on whatever device the module is)."""
    module.eval()
    device = next(module.parameters()).device
    correct = 0
    for start in range(0, len(dataset), batch_size):
        indices = torch.arange(start, min(start + batch_size, len(dataset)))
        logits = module(preprocessing(dataset.images(indices).to(device)))
        correct += (logits.argmax(dim=1).cpu() == dataset.labels[indices]).sum().item()
    return correct / len(dataset)


def training_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``, refused with what works when it is not there."""
    device = resolve_device(name)
    if device.type not in ("cpu", "cuda"):
        raise InvalidInputError(f"seelike trains on cpu or cuda, not {device.type}")
    return device


def device_description(device: torch.device) -> str:
    """What the manifest records as the training device."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


class Trainer:
    """Train ``config`` into ``directory`` on ``device``; resumes from the last epoch checkpoint found there.

    The device is not part of the config: a run started on a GPU can resume on a CPU and the other way round.
    """

    def __init__(self, config: TrainConfig, directory: str | Path, on_epoch: Callable[[dict], None] | None = None,
                 device: str = "cpu", progress: bool = True) -> None:
        self.config = config
        self.progress = progress  # within an epoch: a bar on a terminal, else a line every 10 s (seelike.progress)
        self.device = training_device(device)
        self.directory = Path(directory)
        self.on_epoch = on_epoch
        self.train_set = load_dataset(config.data, split="train", fraction=config.fraction, seed=config.seed)
        self.test_set = load_dataset(config.data, split="test")
        channels = self.train_set.image_shape[0]
        model_config = {"in_channels": channels, "num_classes": self.train_set.num_classes, **config.model}
        if config.arch in ("vit", "mixer"):
            model_config.setdefault("image_size", self.train_set.image_shape[-1])
        torch.manual_seed(config.seed)
        self.module = build_module(config.arch, model_config)
        # Convolutions run 1.2x faster in channels-last on CPU, with bf16 too (benchmarks/train_speed.md);
        # a memory layout only, so the config (and a resumed run) does not change.
        self.memory_format = torch.channels_last if config.arch == "resnet" else torch.contiguous_format
        self.module.to(self.device, memory_format=self.memory_format)
        self.preprocessing = self._data_preprocessing(channels)
        self.optimizer = torch.optim.AdamW(self._parameter_groups(), lr=config.lr, betas=(0.9, 0.999))
        self.steps_per_epoch = max(1, len(self.train_set) // config.batch_size)
        self.total_steps = config.total_steps(self.steps_per_epoch)
        self.epoch, self.step, self.history, self.train_seconds = 0, 0, [], 0.0

    # -- set-up ---------------------------------------------------------------------------
    def _data_preprocessing(self, channels: int) -> Preprocessing:
        sample = self.train_set.images(torch.arange(min(len(self.train_set), 10_000)))
        mean = tuple(sample.mean(dim=(0, 2, 3)).tolist())
        std = tuple(sample.std(dim=(0, 2, 3)).tolist())
        return Preprocessing(tuple(self.train_set.image_shape), tuple(round(m, 4) for m in mean), tuple(round(s, 4) for s in std))

    def _parameter_groups(self) -> list[dict]:
        """No weight decay on biases, norms, embeddings and tokens (the usual ViT recipe)."""
        decay, no_decay = [], []
        for name, parameter in self.module.named_parameters():
            (no_decay if parameter.ndim <= 1 or name.endswith(("pos_embed", "cls_token")) else decay).append(parameter)
        return [{"params": decay, "weight_decay": self.config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    # -- checkpoints ----------------------------------------------------------------------
    def save(self) -> None:
        """One atomic checkpoint: weights, optimizer moments and the JSON state in one safetensors file.

        The state (epoch, step, history, ...) travels in the file's metadata, so the file renamed into place is the
        whole checkpoint: a kill at any point leaves either the previous epoch's checkpoint or this one, never
        weights of one epoch with the step count of another. ``state.json`` is a readable copy, written after.
        """
        tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        optimizer_state = self.optimizer.state_dict()
        for index, state in optimizer_state["state"].items():
            for key, value in state.items():
                tensors[f"optimizer/{index}/{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
        state = {
            "config": asdict(self.config),
            "epoch": self.epoch,
            "step": self.step,
            "history": self.history,
            "train_seconds": self.train_seconds,
            "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in optimizer_state["param_groups"]],
            "preprocessing": asdict(self.preprocessing),
        }
        temporary = self.directory / f".{TENSORS_FILE}.tmp"
        save_file(tensors, temporary, metadata={STATE_KEY: json.dumps(state)})
        os.replace(temporary, self.directory / TENSORS_FILE)
        atomic_write_text(self.directory / STATE_FILE, json.dumps(state, indent=2))

    def resume(self) -> bool:
        """Load the last checkpoint in the directory; False when there is none."""
        tensors_path = self.directory / TENSORS_FILE
        if not tensors_path.exists():
            if (self.directory / STATE_FILE).exists():
                raise CheckpointError(
                    f"{self.directory / STATE_FILE} has no {TENSORS_FILE} beside it, so the run cannot resume; "
                    f"delete {self.directory} to start over"
                )
            return False
        state, tensors = read_training_checkpoint(self.directory)
        try:
            saved = TrainConfig(**state["config"])
        except (TypeError, SeelikeError) as error:
            raise CheckpointError(f"{tensors_path}: its config is not a training config ({error}); delete {self.directory} to start over") from None
        if _normalised(asdict(saved)) != _normalised(asdict(self.config)):
            raise InvalidInputError(
                f"{self.directory} holds a run with another config ({_config_diff(saved, self.config)}); "
                "use another --out folder or delete it to start over."
            )
        self._load_tensors(tensors_path, tensors, state["param_groups"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.history, self.train_seconds = state["history"], state["train_seconds"]
        log.info("resumed %s at epoch %d, step %d", self.directory, self.epoch, self.step)
        return True

    def _load_tensors(self, path: Path, tensors: dict[str, Tensor], param_groups: list[dict]) -> None:
        """Weights and optimizer moments from a checkpoint, refused in one line when they do not fit this model."""
        weights = {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
        check_state_keys(path, weights, self.module.state_dict(), CheckpointError, f"delete {self.directory} to start over")
        optimizer_state: dict[int, dict[str, Tensor]] = {}
        try:
            for key, value in tensors.items():
                if key.startswith("optimizer/"):
                    _, index, name = key.split("/", 2)
                    optimizer_state.setdefault(int(index), {})[name] = value
            self.module.load_state_dict(weights)
            groups = self.optimizer.state_dict()["param_groups"]
            if len(groups) != len(param_groups):
                raise ValueError(f"{len(param_groups)} parameter groups saved, {len(groups)} expected")
            for group, saved_group in zip(groups, param_groups):
                group.update(saved_group)
            self.optimizer.load_state_dict({"state": optimizer_state, "param_groups": groups})
        except (RuntimeError, ValueError, KeyError) as error:
            reason = str(error).strip().splitlines()[0]
            raise CheckpointError(f"{path} does not fit this model ({reason}); delete {self.directory} to start over") from None

    # -- training -------------------------------------------------------------------------
    def _epoch_batches(self, epoch: int) -> tuple[Tensor, torch.Generator]:
        generator = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        order = torch.randperm(len(self.train_set), generator=generator)
        return order, generator

    def train_epoch(self) -> dict:
        config = self.config
        self.module.train()
        order, generator = self._epoch_batches(self.epoch)
        started, losses, seen, correct = time.perf_counter(), [], 0, 0
        steps = min(self.steps_per_epoch, self.total_steps - self.step)
        meter = ThroughputMeter(None if self.progress else False, steps * config.batch_size, f"epoch {self.epoch + 1}: images")
        for batch in range(steps):
            indices = order[batch * config.batch_size : (batch + 1) * config.batch_size]
            images = augment_batch(self.train_set.images(indices), config.augment, generator).to(self.device, non_blocking=True)
            labels = self.train_set.labels[indices].to(self.device, non_blocking=True)
            for group in self.optimizer.param_groups:
                group["lr"] = learning_rate(self.step, self.total_steps, config.lr, config.warmup_steps)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=config.bf16):
                logits = self.module(self.preprocessing(images).contiguous(memory_format=self.memory_format))
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=config.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(loss.item())
            correct += (logits.argmax(dim=1) == labels).sum().item()
            seen += len(indices)
            self.step += 1
            meter.update(len(indices))
        meter.close()
        seconds = time.perf_counter() - started
        self.train_seconds += seconds
        self.epoch += 1
        record = {"epoch": self.epoch, "epochs": -(-self.total_steps // self.steps_per_epoch), "step": self.step,
                  "loss": sum(losses) / max(1, len(losses)), "accuracy": correct / max(1, seen),  # on the augmented batches
                  "seconds": seconds, "images_per_second": seen / max(seconds, 1e-9),
                  "seconds_left": (self.total_steps - self.step) * seconds / max(1, steps)}
        self.history.append(record)
        return record

    def run(self) -> dict:
        """Train to the end (resuming if possible), write ``model.safetensors`` and return the summary."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.resume()
        while self.step < self.total_steps:
            record = self.train_epoch()
            self.save()
            if self.on_epoch:
                self.on_epoch(record)
        accuracy = evaluate(self.module, self.preprocessing, self.test_set)
        throughput = self.step * self.config.batch_size / max(self.train_seconds, 1e-9)
        summary = {
            "test_accuracy": accuracy,
            "epochs": self.epoch,
            "steps": self.step,
            "train_seconds": round(self.train_seconds, 1),
            "images_per_second": round(throughput, 1),
            "device": device_description(self.device),
            "torch": torch.__version__,
            "config": asdict(self.config),
        }
        save_checkpoint(self.directory / MODEL_FILE, self.module, self.config.arch, self.preprocessing, {"training": summary})
        atomic_write_text(self.directory / "summary.json", json.dumps(summary, indent=2))
        return summary


def _normalised(value: Any) -> Any:
    """A config as JSON sees it (tuples and lists alike), for comparing a saved run with a new one."""
    return json.loads(json.dumps(value))


def _config_diff(a: TrainConfig, b: TrainConfig) -> str:
    left, right = _normalised(asdict(a)), _normalised(asdict(b))
    return ", ".join(f"{k}: {left[k]!r} there vs {right[k]!r} now" for k in left if left[k] != right[k])


def read_training_checkpoint(directory: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The state and tensors of the checkpoint in ``directory``, or a one-line :class:`CheckpointError` naming the
    damaged file (truncated safetensors, garbage JSON, missing state fields)."""
    path = directory / TENSORS_FILE
    fix = f"delete {directory} to start over (or restore the file)"
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as error:  # safetensors raises its own error types for truncated or foreign files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path} is damaged or not a safetensors file ({reason}); {fix}") from None
    if STATE_KEY in metadata:
        source, text = path, metadata[STATE_KEY]
    else:  # written by seelike <= 0.1, before the state moved into the checkpoint: its state.json is all there is
        source = directory / STATE_FILE
        log.warning("%s is an old-style checkpoint: resuming from the step in %s", path, source)
        try:
            text = source.read_text()
        except OSError as error:
            raise CheckpointError(f"{source} cannot be read ({error.strerror or error}); {fix}") from None
    try:
        state = json.loads(text)
    except ValueError as error:
        raise CheckpointError(f"{source} holds no valid training state (bad JSON: {error}); {fix}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{source} holds no valid training state (a JSON {type(state).__name__}, not an object); {fix}")
    missing = [key for key in ("config", "epoch", "step", "history", "train_seconds", "param_groups") if key not in state]
    if missing:
        raise CheckpointError(f"{source} holds no valid training state (missing {', '.join(missing)}); {fix}")
    return state, tensors
