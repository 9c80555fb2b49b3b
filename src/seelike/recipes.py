"""What decides a trained model: the training config, and the recipes of seelike's shipped zoo.

Pure data (DESIGN.md, big_vision's configs-with-expected-results): reading a recipe or a zoo
manifest imports neither the trainer nor any model code, so ``seelike.models.zoo`` can list and
load the zoo without importing ``seelike.train``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from seelike.errors import InvalidInputError

__all__ = ["RECIPES", "TrainConfig"]


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained weights; saved with every checkpoint."""

    arch: str
    model: dict[str, Any] = field(default_factory=dict)
    data: str = "fashion-mnist"
    fraction: float = 1.0
    epochs: int = 10
    steps: int | None = None  # total optimizer steps; overrides epochs (data-fraction models train as long as the full one)
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 200
    label_smoothing: float = 0.1
    augment: Literal["none", "flip", "crop-flip"] = "none"
    seed: int = 0
    bf16: bool = False

    def __post_init__(self) -> None:
        """Refuse settings that would crash mid-run or train nothing (``--epochs 0``, ``--lr -1``, ``--batch-size 0``)."""
        if self.augment not in ("none", "flip", "crop-flip"):
            raise InvalidInputError(f"augment must be one of none, flip, crop-flip; got {self.augment!r}")
        if not _is_number(self.fraction) or not 0 < self.fraction <= 1:
            raise InvalidInputError(f"fraction must be in (0, 1], got {self.fraction}")
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("warmup_steps", 0), ("seed", 0)):
            value = getattr(self, name)
            if not _is_integer(value) or value < minimum:
                raise InvalidInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if self.steps is not None and (not _is_integer(self.steps) or self.steps < 1):
            raise InvalidInputError(f"steps must be an integer >= 1 (or None: train for epochs), got {self.steps!r}")
        if not _is_number(self.lr) or not 0 < self.lr < math.inf:
            raise InvalidInputError(f"lr must be a positive finite number, got {self.lr!r}")
        if not _is_number(self.weight_decay) or not 0 <= self.weight_decay < math.inf:
            raise InvalidInputError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if not _is_number(self.label_smoothing) or not 0 <= self.label_smoothing < 1:
            raise InvalidInputError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing!r}")

    def total_steps(self, steps_per_epoch: int) -> int:
        return self.steps if self.steps is not None else self.epochs * steps_per_epoch


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

