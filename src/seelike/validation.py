"""Checks of a command's options against its models, run before any image is streamed.

A bad block number or the wrong kind of model should cost a one-line error at once, not a traceback after the
whole computation (issue 15). Every check raises :class:`~seelike.errors.InvalidInputError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from seelike.errors import InvalidInputError
from seelike.models.model import Model

__all__ = ["check_blocks", "check_cnn", "check_same_architecture", "check_vit"]


def check_blocks(model: Model, blocks: Iterable[int] | None, option: str = "--blocks") -> None:
    """Every block number lies in ``0 .. num_blocks - 1`` of ``model``."""
    if blocks is None:
        return
    bad = [b for b in blocks if isinstance(b, bool) or not isinstance(b, int) or not 0 <= b < model.num_blocks]
    if bad:
        raise InvalidInputError(f"{option} {', '.join(map(str, bad))}: {model.name} has blocks 0..{model.num_blocks - 1}")


def check_vit(model: Model, role: str = "the ViT") -> None:
    """``model`` has attention maps seelike can read (a vision transformer), as the attention analyses need."""
    if not model.attention_layers():
        raise InvalidInputError(f"{role} must be a vision transformer with attention seelike can read, "
                                f"but {model.spec} ({model.family}) has no attention layers")


def check_cnn(model: Model, role: str = "the CNN") -> None:
    """``model`` has feature maps (a CNN), as the head-vs-CNN comparison needs."""
    kinds = {layer.kind for layer in model.block_layers()}
    if model.token_layout is not None or model.attention_layers() or kinds != {"feature_map"}:
        raise InvalidInputError(f"{role} must be a CNN (feature maps [B, C, H, W]), but {model.spec} is a {model.family}")


def check_same_architecture(reference: Model, others: Sequence[Model], what: str = "data-scale CKA") -> None:
    """``others`` share ``reference``'s family, block count and block layer kinds (block i corresponds to block i)."""
    expected = [(layer.kind, layer.role) for layer in reference.block_layers()]
    for model in others:
        if model.family != reference.family or [(layer.kind, layer.role) for layer in model.block_layers()] != expected:
            raise InvalidInputError(
                f"{what} compares block i with block i of the same architecture, but {model.spec} ({model.family}, "
                f"{model.num_blocks} blocks) differs from {reference.spec} ({reference.family}, {reference.num_blocks} blocks)"
            )
