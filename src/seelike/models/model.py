"""The :class:`Model` every analysis works with: a module plus what analyses need to know.

Adapters (``adapters.py``) build it; analyses ask it for layers by name or by *role*
("attention branch of block 3") and never look inside the module themselves.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seelike.errors import InvalidInputError, UnknownLayerError, close_matches

LayerKind = Literal["tokens", "feature_map", "attention", "heads", "other"]

#: Roles a block exposes. Pre-norm blocks (ViT, Mixer): input, norm1, attn (the mixing branch:
#: attention, or token MLP for a Mixer), attn_residual (z + attn), norm2, mlp_hidden, mlp, output;
#: attention blocks also attn_probs and heads. Residual units (ResNet): input, shortcut, branch,
#: output, and each conv / norm by its module name.
BLOCK_OUTPUT = "output"


def short_name(spec: str) -> str:
    """The name a spec gets in results and plots: ``zoo:vit-cls`` → ``vit-cls``,
    ``timm:vit_base_patch16_224?pretrained=1`` → ``vit_base_patch16_224``, ``...?init=random`` → ``...-random``."""
    body, _, query = spec.split(":", 1)[-1].partition("?")
    name = body.rsplit("/", 1)[-1].removesuffix(".safetensors")
    return f"{name}-random" if "init=random" in query.split("&") else name


def spec_source(spec: str) -> str:
    """Where a spec comes from: its scheme (``timm:resnet18`` → ``timm``), or a checkpoint path's folder name."""
    scheme, colon, _ = spec.partition(":")
    if colon and scheme.isalpha() and len(scheme) > 1:  # not a Windows drive letter
        return scheme
    parent = Path(spec.partition("?")[0]).parent.name
    return parent or "."


def unique_names(specs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Short names for several specs, distinct even when two specs share a short name: the query items that differ
    come in brackets and a differing source in parentheses (``seelike:vit?seed=1`` beside ``seelike:vit`` is
    ``vit[seed=1]``; ``timm:resnet18`` beside ``torchvision:resnet18`` is ``resnet18 (timm)``). A name no other spec
    shares stays :func:`short_name`, so the study's zoo names are stable."""
    specs = list(dict.fromkeys(specs))
    names = {spec: short_name(spec) for spec in specs}
    for name in set(names.values()):
        group = [spec for spec in specs if names[spec] == name]
        if len(group) < 2:
            continue
        queries = {spec: [item for item in spec.partition("?")[2].split("&") if item and item != "init=random"] for spec in group}
        shared = set.intersection(*(set(items) for items in queries.values()))
        sources = {spec: spec_source(spec) for spec in group}
        for spec in group:
            differing = "&".join(item for item in queries[spec] if item not in shared)
            names[spec] = name + (f"[{differing}]" if differing else "") + (f" ({sources[spec]})" if len(set(sources.values())) > 1 else "")
    clashes = sorted({name for name in names.values() if list(names.values()).count(name) > 1})
    if clashes:
        raise InvalidInputError(f"these model specs get the same name {clashes}; give them distinct specs")
    return names


@dataclass(frozen=True)
class TokenLayout:
    """How a token model lays out its sequence: prefix tokens (CLS, distillation, registers), then the patch grid."""

    num_prefix_tokens: int
    grid: tuple[int, int]
    patch_size: int

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]


@dataclass(frozen=True)
class Layer:
    """One place in the forward pass where an analysis can read a tensor.

    ``module`` is the module path; ``hook`` says whether its output or its first input is
    read; ``clone`` copies the tensor in the hook (needed where the model later changes it in
    place); ``transform`` (optional) turns what the hook sees into the tensor analyses get
    (used for attention probabilities, recomputed from the block's queries and keys).
    ``token_layout`` (optional) overrides the model's token layout for this layer: a hierarchical
    model's stage grid and patch size, or the window a window-attention map covers (Swin).
    """

    name: str
    module: str
    kind: LayerKind
    block: int | None = None
    role: str = BLOCK_OUTPUT
    hook: Literal["output", "input"] = "output"
    clone: bool = False
    transform: Callable[..., Tensor] | None = field(default=None, compare=False, repr=False)
    token_layout: TokenLayout | None = None

    @property
    def is_block_output(self) -> bool:
        return self.role == BLOCK_OUTPUT


@dataclass(frozen=True)
class Preprocessing:
    """Input size and normalisation that travel with the model's weights (timm's pretrained_cfg)."""

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"

    def __call__(self, images: Tensor) -> Tensor:
        """Map images in [0, 1], [B, C, H, W], to the model's input: channels, size, normalisation."""
        channels, height, width = self.input_size
        if images.shape[1] != channels:
            if images.shape[1] == 1:
                images = images.expand(-1, channels, -1, -1)
            elif channels == 1 and images.shape[1] == 3:
                luma = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
                images = (images * luma).sum(dim=1, keepdim=True)
            else:
                raise InvalidInputError(f"model expects {channels}-channel images, the data has {images.shape[1]}")
        if images.shape[-2:] != (height, width):
            mode = "bicubic" if self.interpolation == "bicubic" else "bilinear"
            images = F.interpolate(images, size=(height, width), mode=mode, align_corners=False, antialias=True)
        mean = images.new_tensor(self.mean).view(1, -1, 1, 1)
        std = images.new_tensor(self.std).view(1, -1, 1, 1)
        return (images - mean) / std


@dataclass
class Model:
    """A vision model as analyses see it.

    ``layers`` lists every analysis layer in the order the forward pass computes them
    (block outputs and sub-layers; attention probabilities and head outputs too).
    """

    module: nn.Module
    spec: str
    family: str
    layers: tuple[Layer, ...]
    preprocessing: Preprocessing
    token_layout: TokenLayout | None = None
    num_classes: int | None = None
    label: str | None = None  # overrides the short name derived from the spec
    _fingerprint: str | None = field(default=None, repr=False)

    # -- layers -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """A short name for plots and result keys (``zoo:vit-cls`` → ``vit-cls``)."""
        return self.label or short_name(self.spec)

    @property
    def num_blocks(self) -> int:
        return len(self.block_layers())

    def block_layers(self) -> list[Layer]:
        """One layer per block (block / residual-unit outputs), input to output."""
        return [layer for layer in self.layers if layer.is_block_output and layer.block is not None]

    def representation_layers(self) -> list[Layer]:
        """Every layer whose tensor is a representation of the images (no attention maps)."""
        return [layer for layer in self.layers if layer.kind not in ("attention", "heads")]

    def attention_layers(self) -> list[Layer]:
        """Attention probabilities [B, H, T, T], one per attention block."""
        return [layer for layer in self.layers if layer.kind == "attention"]

    def layout_of(self, layer: Layer) -> TokenLayout | None:
        """The token layout of ``layer``: its own (a Swin stage or window) or else the model's."""
        return layer.token_layout or self.token_layout

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise UnknownLayerError(
            f"{self.spec} has no layer {name!r}. Closest: {', '.join(close_matches(name, [layer.name for layer in self.layers]))}. "
            f"List them all with `seelike layers {self.spec}`."
        )

    def role(self, block: int, role: str) -> Layer:
        """The layer that plays ``role`` in block ``block`` (e.g. ``role(3, "attn")``)."""
        for layer in self.layers:
            if layer.block == block and layer.role == role:
                return layer
        roles = sorted({layer.role for layer in self.layers if layer.block == block})
        if not roles:
            raise InvalidInputError(f"{self.spec} has {self.num_blocks} blocks (0..{self.num_blocks - 1}); block {block} does not exist")
        raise InvalidInputError(f"block {block} of {self.spec} has no role {role!r}; it has: {', '.join(roles)}")

    def layer_names(self, which: Literal["blocks", "all"] = "blocks") -> list[str]:
        layers = self.block_layers() if which == "blocks" else self.representation_layers()
        return [layer.name for layer in layers]

    def select(self, patterns: str | Sequence[str] | None = None) -> list[Layer]:
        """Layers matching ``patterns`` in depth order.

        ``None`` or ``"blocks"``: block outputs (the default of every analysis);
        ``"all"``: every representation sub-layer; otherwise names or shell-style globs
        (``blocks.*.attn``), as a list or one comma-separated string.
        """
        if patterns is None or patterns == "blocks":
            return self.block_layers()
        if patterns == "all":
            return self.representation_layers()
        if isinstance(patterns, str):
            patterns = [p.strip() for p in patterns.split(",") if p.strip()]
        chosen: set[str] = set()
        for pattern in patterns:
            if pattern in ("blocks", "all"):
                chosen.update(layer.name for layer in self.select(pattern))
                continue
            matched = [layer.name for layer in self.layers if fnmatch.fnmatchcase(layer.name, pattern)]
            if not matched:
                raise UnknownLayerError(
                    f"no layer of {self.spec} matches {pattern!r}. Closest: "
                    f"{', '.join(close_matches(pattern, [layer.name for layer in self.layers]))}. "
                    f"List them all with `seelike layers {self.spec}`."
                )
            chosen.update(matched)
        return [layer for layer in self.layers if layer.name in chosen]

    # -- running ------------------------------------------------------------------------
    def preprocess(self, images: Tensor) -> Tensor:
        return self.preprocessing(images)

    def to(self, device: str | torch.device) -> Model:
        self.module.to(device)
        return self

    @property
    def device(self) -> torch.device:
        for parameter in self.module.parameters():
            return parameter.device
        return torch.device("cpu")

    def fingerprint(self) -> str:
        """sha256 over the weights and buffers: part of every cache key (a stale cache is a wrong number)."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for key, tensor in sorted(self.module.state_dict().items()):
                digest.update(key.encode())
                digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint
