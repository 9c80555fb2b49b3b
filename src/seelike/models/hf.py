"""Hugging Face ``transformers`` vision models as :class:`Model` (specs ``hf:ORG/NAME`` and ``hf:PATH``).

``hf:ORG/NAME`` loads from the hub with transformers' own loading code and offline cache;
``hf:PATH`` from a folder written by ``save_pretrained``. Either way the weights go into the base
vision model (``AutoModel``; CLIP / SigLIP: their vision tower), in float32, and the preprocessing
(input size, mean, std, resampling) is read from the checkpoint's image-processor config, never
guessed. ``?init=random[&seed=N]`` builds the same architecture from the config at random init.

Roles follow the timm vocabulary (``adapters.py``):

* pre-norm blocks (ViT, DeiT, BEiT, DINOv2 with or without registers, CLIP, SigLIP): input, norm1,
  attn_probs, heads, attn, attn_residual, norm2, mlp_hidden, mlp, output. Layer scale (DINOv2's
  modules, BEiT's ``lambda_1/2`` parameters) is part of the branch, as in timm.
* Swin blocks: the same roles; block tokens carry their stage's grid and patch size, attention maps
  the window's (``Layer.token_layout``), so attention distance is measured within windows.
* residual units (ResNet, ConvNeXt): input, shortcut, branch, output (``residual_unit_layers``).

Attention probabilities are recomputed from each block's own query and key projections (plus
BEiT's relative position bias, Swin's bias and shifted-window mask), so the model keeps its fast
attention (SDPA) and its outputs do not change.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from seelike.errors import ModelLoadError
from seelike.models.adapters import attention_probabilities, remember_attention_mask, residual_unit_layers
from seelike.models.model import Layer, Model, Preprocessing, TokenLayout

log = logging.getLogger(__name__)

INSTALL_HINT = "hf: specs need Hugging Face transformers: pip install 'seelike[hf]' (or pip install 'transformers>=5')"

#: Pre-norm block layouts of transformers' vision models: (norm1, attention, attention scale,
#: norm2, mlp, mlp scale); a scale is a module (called on the branch) or a parameter (multiplied).
PRENORM_NAMES: tuple[tuple[str, str, str | None, str, str, str | None], ...] = (
    ("norm1", "attention", "layer_scale1", "norm2", "mlp", "layer_scale2"),  # DINOv2 (with registers)
    ("layernorm_before", "attention", "lambda_1", "layernorm_after", "mlp", "lambda_2"),  # BEiT (ViT, DeiT, Swin: no scale)
    ("layer_norm1", "self_attn", None, "layer_norm2", "mlp", None),  # CLIP, SigLIP
)

#: transformers model types whose pre-norm blocks and attention seelike reads (each checked against eager
#: attention in tests/test_hf.py); others are refused, not guessed (e.g. DINOv3 rotates q and k)
PRENORM_MODEL_TYPES = ("vit", "deit", "beit", "dinov2", "dinov2_with_registers", "clip_vision_model", "siglip_vision_model")

#: composite checkpoints whose vision tower is analysed
VISION_TOWERS = ("vision_model",)

RESAMPLING = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def import_transformers() -> Any:
    """The transformers package, or a :class:`ModelLoadError` that says how to install it."""
    try:
        import transformers
    except ImportError as error:
        raise ModelLoadError(INSTALL_HINT) from error
    major = int(transformers.__version__.split(".")[0])
    if major < 5:
        raise ModelLoadError(f"seelike reads the module layout of transformers 5 (q_proj / k_proj attention); this is transformers "
                             f"{transformers.__version__}: pip install -U 'transformers>=5'")
    return transformers


def load_hf(spec: str, name: str, options: dict[str, str], random_init: bool = False, seed: int = 0) -> Model:
    """A :class:`Model` from ``hf:NAME`` (hub id or ``save_pretrained`` folder); see the module docstring."""
    transformers = import_transformers()
    revision = options.pop("revision", None)
    if options:
        raise ModelLoadError(f"{spec}: unknown option(s) {sorted(options)}; hf: specs take init=random, seed=N and revision=REV")
    where = {"revision": revision} if revision else {}
    logging = transformers.utils.logging
    progress, verbosity = logging.is_progress_bar_enabled(), logging.get_verbosity()
    logging.disable_progress_bar()  # no "Loading weights" bars from library code,
    logging.set_verbosity_error()  # nor its load report: missing weights are checked below
    missing: list[str] = []
    try:
        config = transformers.AutoConfig.from_pretrained(name, **where)
        if random_init:
            torch.manual_seed(seed)
            module = transformers.AutoModel.from_config(config)
        else:
            module, info = transformers.AutoModel.from_pretrained(name, dtype=torch.float32, output_loading_info=True, **where)
            missing = list(info.get("missing_keys", []))
        processor = transformers.AutoImageProcessor.from_pretrained(name, **where)
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(
            f"could not load {spec} with transformers ({type(error).__name__}: {str(error).splitlines()[0]}). "
            "A hub id needs the network or the files in the Hugging Face cache (HF_HOME; HF_HUB_OFFLINE=1 uses only the cache); "
            "a folder needs config.json, the weights and preprocessor_config.json as save_pretrained writes them "
            "(save the image processor too: AutoImageProcessor...save_pretrained(folder))."
        ) from error
    finally:
        logging.set_verbosity(verbosity)
        if progress:
            logging.enable_progress_bar()
    tower = vision_tower(module)
    prefix = next((f"{attribute}." for attribute, child in module.named_children() if child is tower), "")
    missing = [key for key in missing if key.startswith(prefix) and not re.match(r"(pooler|head)\b", key.removeprefix(prefix))]
    if missing:
        raise ModelLoadError(
            f"{spec}: the checkpoint lacks {len(missing)} weights of the vision model ({', '.join(missing[:4])}"
            f"{' ...' if len(missing) > 4 else ''}); they would be random. Check the checkpoint, or add ?init=random for a random-init model."
        )
    module = tower.float().eval()
    preprocessing = hf_preprocessing(processor, module.config)
    _warm_position_index_cache(module, preprocessing)
    return describe_hf(module, spec, preprocessing)


def _warm_position_index_cache(module: nn.Module, preprocessing: Preprocessing) -> None:
    """BEiT caches its relative position index (an LRU cache keyed by the grid). Filled first under
    ``torch.inference_mode`` (capture), the cached tensor could never enter autograd (the ERF):
    fill it here, outside inference mode, for the input size seelike feeds."""
    patch = getattr(module.config, "patch_size", None)
    if patch is None:
        return
    patch = patch[0] if isinstance(patch, (tuple, list)) else patch
    grid = (preprocessing.input_size[1] // patch, preprocessing.input_size[2] // patch)
    with torch.inference_mode(False):
        for submodule in module.modules():
            generate = getattr(type(submodule), "generate_relative_position_index", None)
            if callable(generate):
                generate(grid)


def vision_tower(module: nn.Module) -> nn.Module:
    """CLIP / SigLIP checkpoints hold a text tower too: keep the vision model only."""
    for attribute in VISION_TOWERS:
        tower = getattr(module, attribute, None)
        if isinstance(tower, nn.Module):
            return tower
    return module


def hf_preprocessing(processor: Any, config: Any) -> Preprocessing:
    """Input size, mean, std and resampling from an image processor (the checkpoint's preprocessor_config.json).

    The input size is the crop when the processor centre-crops, else the resize target
    (``height``/``width``, or ``shortest_edge`` for a square input). As for timm models, the data
    layer already centre-crops photos (``imagefolder``: shorter side to size / 0.875, then the
    centre square) and :class:`Preprocessing` resizes that square to the input size.
    """
    def pair(size: Any) -> tuple[int, int] | None:
        if size is None:
            return None
        if isinstance(size, int):
            return size, size
        size = dict(size) if not isinstance(size, dict) else size
        if size.get("height") and size.get("width"):
            return int(size["height"]), int(size["width"])
        edge = size.get("shortest_edge") or size.get("longest_edge")
        return (int(edge), int(edge)) if edge else None

    crop = pair(getattr(processor, "crop_size", None)) if getattr(processor, "do_center_crop", False) else None
    size = crop or pair(getattr(processor, "size", None))
    if size is None:
        raise ModelLoadError(f"the image processor {type(processor).__name__} names no input size (size or crop_size); "
                             "set size in preprocessor_config.json")
    channels = int(getattr(config, "num_channels", 3))
    if getattr(processor, "do_normalize", True):
        mean = tuple(float(m) for m in _per_channel(processor.image_mean, channels))
        std = tuple(float(s) for s in _per_channel(processor.image_std, channels))
    else:
        mean, std = (0.0,) * channels, (1.0,) * channels
    resample = getattr(processor, "resample", 2)
    interpolation = RESAMPLING.get(int(getattr(resample, "value", resample) or 2), "bilinear")
    return Preprocessing((channels, *size), mean, std, interpolation)


def _per_channel(values: Any, channels: int) -> list[float]:
    values = [values] if isinstance(values, (int, float)) else list(values)
    return values * channels if len(values) == 1 else values


# -- roles ---------------------------------------------------------------------------------
def _names(block: nn.Module) -> tuple[str, str, str | None, str, str, str | None] | None:
    for names in PRENORM_NAMES:
        if all(isinstance(getattr(block, n, None), nn.Module) for n in (names[0], names[1], names[3], names[4])):
            return names
    return None


def _scaled(block: nn.Module, scale: str | None) -> Callable[[Tensor], Tensor] | None:
    """BEiT's layer scale is a parameter multiplied in the block's forward: apply it to the hooked branch."""
    if scale is None or not isinstance(getattr(block, scale, None), nn.Parameter):
        return None
    return lambda tensor: getattr(block, scale) * tensor


def prenorm_layers(path: str, block: nn.Module, index: int, layout: TokenLayout | None = None,
                   attention_layout: TokenLayout | None = None) -> list[Layer]:
    """Roles of a transformers pre-norm block at ``path`` (see :data:`PRENORM_NAMES`)."""
    names = _names(block)
    if names is None:
        raise ModelLoadError(f"{path} ({type(block).__name__}) is not a pre-norm block seelike knows")
    norm1, attention, attention_scale, norm2, mlp, mlp_scale = names
    attn = getattr(block, attention)
    p = path
    layers = [
        Layer(f"{p}.input", p, "tokens", index, "input", hook="input", token_layout=layout),
        Layer(f"{p}.norm1", f"{p}.{norm1}", "tokens", index, "norm1", token_layout=layout),
    ]
    if isinstance(getattr(attn, "q_proj", None), nn.Linear) and isinstance(getattr(attn, "k_proj", None), nn.Linear):
        mask = remember_attention_mask(attn)
        layers.append(Layer(f"{p}.attn_probs", f"{p}.{attention}", "attention", index, "attn_probs", hook="input",
                            transform=attention_from_projections(attn, mask), token_layout=attention_layout or layout))
        output = next((o for o in ("o_proj", "out_proj") if isinstance(getattr(attn, o, None), nn.Module)), None)
        if output and attention_layout is None:  # per-head outputs of windows would not be per image
            layers.append(Layer(f"{p}.heads", f"{p}.{attention}.{output}", "heads", index, "heads", hook="input", token_layout=layout))
    if isinstance(getattr(block, "drop_path", None), nn.Module) and attention_layout is not None:
        # Swin: the attention branch leaves its windows (and the cyclic shift) in drop_path
        layers.append(Layer(f"{p}.attn", f"{p}.drop_path", "tokens", index, "attn", token_layout=layout))
    elif attention_scale and isinstance(getattr(block, attention_scale, None), nn.Module):
        layers.append(Layer(f"{p}.attn", f"{p}.{attention_scale}", "tokens", index, "attn", token_layout=layout))
    else:
        layers.append(Layer(f"{p}.attn", f"{p}.{attention}", "tokens", index, "attn",
                            transform=_scaled(block, attention_scale), token_layout=layout))
    layers += [
        Layer(f"{p}.attn_residual", f"{p}.{norm2}", "tokens", index, "attn_residual", hook="input", token_layout=layout),
        Layer(f"{p}.norm2", f"{p}.{norm2}", "tokens", index, "norm2", token_layout=layout),
    ]
    mlp_module = getattr(block, mlp)
    if isinstance(getattr(mlp_module, "activation_fn", None), nn.Module):
        layers.append(Layer(f"{p}.mlp_hidden", f"{p}.{mlp}.activation_fn", "tokens", index, "mlp_hidden", token_layout=layout))
    if mlp_scale and isinstance(getattr(block, mlp_scale, None), nn.Module):
        layers.append(Layer(f"{p}.mlp", f"{p}.{mlp_scale}", "tokens", index, "mlp", token_layout=layout))
    else:
        layers.append(Layer(f"{p}.mlp", f"{p}.{mlp}", "tokens", index, "mlp", transform=_scaled(block, mlp_scale), token_layout=layout))
    layers.append(Layer(p, p, "tokens", index, token_layout=layout))
    return layers


def attention_from_projections(attn: nn.Module, mask: Callable[[], Tensor | None]) -> Callable[[Tensor], Tensor]:
    """softmax(q kᵀ · scale + bias + mask) [B, H, T, T] from the attention module's input [B, T, D].

    q and k come from the module's own ``q_proj`` / ``k_proj``; the additive mask the block passed
    (BEiT's relative position bias, Swin's shifted-window mask) is read by a pre-hook, Swin's own
    relative position bias from its ``relative_position_bias`` module.
    """
    heads = getattr(attn, "num_attention_heads", None) or getattr(attn, "num_heads")
    scale = getattr(attn, "scaling", None) or getattr(attn, "scale", None)

    def probabilities(x: Tensor) -> Tensor:
        batch, tokens, _ = x.shape
        q = attn.q_proj(x).reshape(batch, tokens, heads, -1).transpose(1, 2)
        k = attn.k_proj(x).reshape(batch, tokens, heads, -1).transpose(1, 2)
        bias = attn.relative_position_bias() if isinstance(getattr(attn, "relative_position_bias", None), nn.Module) else None
        return attention_probabilities(q, k, scale or q.shape[-1] ** -0.5, bias, mask())

    return probabilities


def _stage_layouts(module: nn.Module, preprocessing: Preprocessing) -> dict[int, tuple[TokenLayout, TokenLayout]]:
    """Swin: per block index, its stage's token layout and its window's, from the input size."""
    _, height, width = preprocessing.input_size
    patch = module.config.patch_size
    patch = patch[0] if isinstance(patch, (tuple, list)) else patch
    rows, columns = height // patch, width // patch
    layouts, index = {}, 0
    for stage in module.encoder.layers:
        pixels = height // rows
        for block in stage.blocks:
            window = min(int(module.config.window_size), rows, columns)
            if rows % window or columns % window:
                log.warning("Swin stage grid %dx%d is not a multiple of the window %d: padded positions count in its attention distance",
                            rows, columns, window)
            layouts[index] = (TokenLayout(0, (rows, columns), pixels), TokenLayout(0, (window, window), pixels))
            index += 1
        if stage.downsample is not None:
            rows, columns = (rows + 1) // 2, (columns + 1) // 2
    return layouts


def describe_hf(module: nn.Module, spec: str, preprocessing: Preprocessing) -> Model:
    """Find the blocks of a transformers vision model and their roles (see the module docstring);
    ``load_model`` then puts the layers in forward order with a probe pass."""
    model_type = getattr(module.config, "model_type", type(module).__name__)
    units = [(path, unit) for path, unit in module.named_modules() if type(unit).__name__ in HF_RESIDUAL_UNITS]
    if model_type == "swin":
        blocks = [(path, block) for path, block in module.named_modules() if type(block).__name__ == "SwinLayer"]
        stage_layouts = _stage_layouts(module, preprocessing)
        layers = [layer for i, (path, block) in enumerate(blocks) for layer in prenorm_layers(path, block, i, *stage_layouts[i])]
        model = Model(module, spec, "swin", tuple(layers), preprocessing, stage_layouts[0][0])
    elif units:
        layers = [layer for i, (path, unit) in enumerate(units) for layer in residual_unit_layers(path, unit, i)]
        model = Model(module, spec, "convnext" if "ConvNext" in type(units[0][1]).__name__ else "resnet", tuple(layers), preprocessing)
    else:
        blocks = [(path, block) for path, block in module.named_modules() if _names(block) is not None and path.rsplit(".", 1)[-1].isdigit()]
        if not blocks or model_type not in PRENORM_MODEL_TYPES:
            raise ModelLoadError(
                f"seelike does not know the blocks of {spec} ({type(module).__name__}, model_type {model_type!r}): it reads "
                "ViT, DeiT, BEiT, DINOv2 (with registers), CLIP and SigLIP vision towers, Swin, ResNet and ConvNeXt from "
                "transformers; load the model through timm if timm has it (timm:NAME)."
            )
        layers = [layer for i, (path, block) in enumerate(blocks) for layer in prenorm_layers(path, block, i)]
        layout = _token_layout(module, blocks[0][0], preprocessing)
        model = Model(module, spec, "vit", tuple(layers), preprocessing, layout)
    return model


#: transformers' residual units (class names), read with the ResNet recipe
HF_RESIDUAL_UNITS = ("ResNetBottleNeckLayer", "ResNetBasicLayer", "ConvNextLayer", "ConvNextV2Layer")


def _token_layout(module: nn.Module, first_block: str, preprocessing: Preprocessing) -> TokenLayout:
    """Patch grid from the input size and patch size; prefix tokens (CLS, distillation, registers)
    counted in a probe pass as the first block's tokens beyond the grid."""
    channels, height, width = preprocessing.input_size
    patch = module.config.patch_size
    patch = patch[0] if isinstance(patch, (tuple, list)) else patch
    grid = (height // patch, width // patch)
    seen: list[int] = []
    def count(block: nn.Module, args: tuple, kwargs: dict) -> None:  # hidden states, positional or by keyword
        seen.append((args[0] if args else next(v for v in kwargs.values() if isinstance(v, Tensor))).shape[1])

    handle = dict(module.named_modules())[first_block].register_forward_pre_hook(count, with_kwargs=True)
    try:
        with torch.inference_mode():
            module(torch.zeros(1, channels, height, width, device=next(module.parameters()).device))
    except Exception as error:  # a size the model refuses
        raise ModelLoadError(f"{type(module).__name__} does not run at the processor's input size {height}×{width}: {error}") from error
    finally:
        handle.remove()
    prefix = seen[0] - grid[0] * grid[1]
    if prefix < 0:
        raise ModelLoadError(f"{type(module).__name__}: {seen[0]} tokens are fewer than its {grid[0]}×{grid[1]} patch grid")
    return TokenLayout(prefix, grid, int(patch))
