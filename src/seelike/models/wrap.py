"""Your own ``nn.Module`` as a :class:`Model`, so that every analysis can read it (:func:`wrap`).

An analysis needs to know three things a bare module does not say: the input it expects
(:class:`Preprocessing`), where its blocks are and what each sub-layer does (:class:`Layer` roles),
and for token models how tokens map onto the image (:class:`TokenLayout`). :func:`wrap` takes
them from you, finds what it can itself, and checks the rest with one forward pass of a blank image.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Union

import torch
from torch import nn

from seelike.errors import InvalidInputError, ModelLoadError
from seelike.models.adapters import describe
from seelike.models.model import BLOCK_OUTPUT, Layer, LayerKind, Model, Preprocessing, TokenLayout

#: ``layers=``: module paths (each a block output), {path: role or roles}, or ready :class:`Layer` records
LayerSpec = Union[Sequence[str], Mapping[str, Union[str, Sequence[str]]], Sequence[Layer], None]
INPUT_SUFFIX = "@input"  # "attn_residual@input": the role is read from the module's input, not its output


def wrap(
    module: nn.Module,
    preprocessing: Preprocessing | Mapping[str, Any],
    layers: LayerSpec = None,
    *,
    name: str = "custom",
    token_layout: TokenLayout | None = None,
    num_classes: int | None = None,
) -> Model:
    """``module`` as a :class:`Model` every analysis accepts (CKA, skips, localization, probes, ERF, ...).

    ``preprocessing``: a :class:`Preprocessing`, or a mapping with ``input_size`` (C, H, W) and
    optionally ``mean`` / ``std`` (default 0 and 1: images in [0, 1] as they are). Images of another
    size or channel count are resized / converted to ``input_size``, with a one-line notice.

    ``layers``:

    * ``None``: the blocks seelike knows (timm ViT / Mixer blocks in ``blocks``, residual units such
      as torchvision's ``Bottleneck``) with all their roles; otherwise the module's top-level
      children, in the order the forward pass runs them, each a block output;
    * module paths (``["features.0", "features.3"]``): each a block output, in forward order;
    * ``{path: role}`` or ``{path: (role, ...)}``: ``"output"`` marks a block output; any other role
      (``input``, ``attn``, ``attn_residual``, ``mlp`` for skip norms; ``shortcut``, ``branch`` for
      residual units) belongs to the block whose path encloses it; ``ROLE@input`` reads the
      module's input instead of its output (``input`` always does);
    * :class:`Layer` records, used as they are (attention maps need a ``transform``).

    ``token_layout``: prefix tokens, patch grid and patch size of a token model; when omitted it is
    inferred from the block tokens (T = grid² or grid² + 1) and the input size.
    """
    preprocessing = _preprocessing(preprocessing)
    spec = f"python:{name}"
    module.eval()
    model = _known_blocks(module, spec, preprocessing, num_classes) if layers is None else None
    if model is None:
        chosen = _layers(module, layers if layers is not None else _children_in_forward_order(module, preprocessing), preprocessing)
        model = Model(module, spec, "custom", tuple(chosen), preprocessing, None, num_classes)
    if token_layout is not None:
        model.token_layout = token_layout
    elif model.token_layout is None:
        model.token_layout = _infer_token_layout(model)
    from seelike.capture import forward_order

    model.layers = tuple(forward_order(model))
    return model


def _preprocessing(preprocessing: Preprocessing | Mapping[str, Any]) -> Preprocessing:
    if isinstance(preprocessing, Preprocessing):
        return preprocessing
    if not isinstance(preprocessing, Mapping) or "input_size" not in preprocessing:
        raise InvalidInputError("wrap(..., preprocessing=...) needs the model's input: Preprocessing(input_size=(C, H, W), mean=..., std=...) "
                                "or {'input_size': (C, H, W)}")
    size = tuple(int(v) for v in preprocessing["input_size"])
    if len(size) != 3:
        raise InvalidInputError(f"input_size must be (channels, height, width), got {size}")
    channels = size[0]
    mean = tuple(preprocessing.get("mean", (0.0,) * channels))
    std = tuple(preprocessing.get("std", (1.0,) * channels))
    return Preprocessing(size, mean, std, preprocessing.get("interpolation", "bilinear"))


def _known_blocks(module: nn.Module, spec: str, preprocessing: Preprocessing, num_classes: int | None) -> Model | None:
    """The roles seelike's adapters find (timm-style blocks, residual units), or None when they find no blocks."""
    try:
        model = describe(module, spec, preprocessing, num_classes)
    except ModelLoadError:
        return None
    model.family = f"custom {model.family}"
    return model


def _probe(module: nn.Module, paths: Sequence[str], preprocessing: Preprocessing) -> dict[str, tuple[int, ...] | None]:
    """The output shape of each module in ``paths``, in the order one forward pass of a blank image runs them
    (None: its output is not a tensor); modules that do not run are left out."""
    modules = dict(module.named_modules())
    unknown = [path for path in paths if path not in modules]
    if unknown:
        raise InvalidInputError(f"the module has no submodule {', '.join(map(repr, unknown))}; "
                                f"its submodules: {', '.join(name for name in modules if name)[:300]}")
    seen: dict[str, tuple[int, ...] | None] = {}
    handles = []
    for path in paths:
        def hook(_: nn.Module, inputs: Any, output: Any, path: str = path) -> None:
            seen.setdefault(path, tuple(output.shape) if isinstance(output, torch.Tensor) else None)

        handles.append(modules[path].register_forward_hook(hook))
    try:
        device = next(iter(module.parameters()), torch.empty(0)).device
        with torch.inference_mode():
            module(torch.zeros(1, *preprocessing.input_size, device=device))
    except Exception as error:  # a module that cannot take its declared input: say so in one line
        raise InvalidInputError(f"the module failed on a blank {preprocessing.input_size} input ({type(error).__name__}: {error}); "
                                "check preprocessing input_size") from None
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _children_in_forward_order(module: nn.Module, preprocessing: Preprocessing) -> list[str]:
    """The top-level children that run and return a tensor with a batch axis, in forward order."""
    names = [name for name, _ in module.named_children()]
    if not names:
        raise InvalidInputError("the module has no children to read: pass layers=[...] (module paths) or wrap a module with submodules")
    shapes = _probe(module, names, preprocessing)
    return [name for name, shape in shapes.items() if shape is not None and len(shape) >= 2]


def _kind(shape: tuple[int, ...] | None) -> LayerKind:
    return {4: "feature_map", 3: "tokens"}.get(len(shape) if shape else 0, "other")


def _layers(module: nn.Module, layers: LayerSpec, preprocessing: Preprocessing) -> list[Layer]:
    """:class:`Layer` records for ``layers`` (see :func:`wrap`), blocks numbered in forward order."""
    if isinstance(layers, str):
        layers = [layers]
    items = list(layers.items()) if isinstance(layers, Mapping) else list(layers)
    if not items:
        raise InvalidInputError("layers= is empty: name at least one module path")
    if all(isinstance(item, Layer) for item in items):
        return items
    if any(isinstance(item, Layer) for item in items):
        raise InvalidInputError("layers= mixes Layer records and module paths: give one or the other")
    if isinstance(layers, Mapping):
        roles = {path: [value] if isinstance(value, str) else list(value) for path, value in items}
    else:
        roles = {path: [BLOCK_OUTPUT] for path in items}
    shapes = _probe(module, list(roles), preprocessing)
    blocks = [path for path in shapes if BLOCK_OUTPUT in roles[path]]  # in forward order
    if not blocks:
        raise InvalidInputError("layers= names no block: mark at least one module path with the role 'output'")
    found = []
    for path, wanted in roles.items():
        if path not in shapes:
            raise InvalidInputError(f"layer {path!r} does not run in the module's forward pass")
        block = max((b for b in blocks if path == b or path.startswith(f"{b}.")), key=len, default=None)
        for role in wanted:
            role, _, hook = role.partition("@")
            if hook not in ("", "input"):
                raise InvalidInputError(f"role {role}@{hook} of {path!r}: only ROLE@input is understood")
            if block is None:
                raise InvalidInputError(f"{path!r} ({role}) lies in no block: mark its block's path with the role 'output'")
            reads_input = hook == "input" or role == "input"
            index = blocks.index(block)
            layer_name = path if role == BLOCK_OUTPUT else f"{block}.{role}"
            found.append(Layer(layer_name, path, "other" if reads_input else _kind(shapes[path]), index, role,
                               hook="input" if reads_input else "output", clone=not reads_input))
    if any(layer.hook == "input" for layer in found):  # an input's kind is that of the block output it feeds into
        kinds = {layer.block: layer.kind for layer in found if layer.is_block_output}
        found = [Layer(layer.name, layer.module, kinds[layer.block], layer.block, layer.role, hook=layer.hook, clone=layer.clone)
                 if layer.hook == "input" else layer for layer in found]
    names = [layer.name for layer in found]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InvalidInputError(f"two layers share the name(s) {repeated}: give each role of a block once")
    return found


def _infer_token_layout(model: Model) -> TokenLayout | None:
    """A token model's layout from its first block's tokens [1, T, D]: T = g² (no prefix) or g² + 1 (one CLS token)."""
    blocks = [layer for layer in model.block_layers() if layer.kind == "tokens"]
    if not blocks:
        return None
    from seelike.capture import output_shapes

    tokens = output_shapes(model, blocks[:1])[blocks[0].name][1]
    _, height, width = model.preprocessing.input_size
    for prefix in (0, 1):
        grid = math.isqrt(tokens - prefix)
        if grid > 0 and grid * grid == tokens - prefix and height == width and height % grid == 0:
            return TokenLayout(prefix, (grid, grid), height // grid)
    return None
