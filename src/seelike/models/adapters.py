"""Layer discovery: turn any supported ``nn.Module`` into a :class:`Model` with named roles.

Only this module knows that timm calls the attention branch ``blocks.3.ls1`` and torchvision
``encoder.layers.encoder_layer_3.dropout``; analyses ask for roles. Three recipes cover the
families the paper studies:

* pre-norm blocks in a ``blocks`` list (seelike's ViT and Mixer, timm ViT / DeiT / Mixer), and timm's
  residual post-norm ViT blocks (``ResPostBlock``: the GAP-trained ``vit_base_patch16_rpn_224``),
* torchvision's ``encoder.layers`` ViT blocks,
* residual units (seelike's, timm's and torchvision's ResNets, timm's ResNetV2 / BiT and ConvNeXt,
  transformers' ResNet and ConvNeXt),
* timm's Swin blocks (tokens on each stage's grid, attention within windows: ``Layer.token_layout``).

transformers' ViT-like models and Swin are described in ``hf.py``, with the helpers here.

Attention probabilities are recomputed from the block's own query/key projection in a hook (with
the position bias, shifted-window mask or rotary embedding the block passes, kept by a pre-hook),
so fused attention kernels stay on and the model's outputs do not change.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch import Tensor, nn

from seelike.errors import ModelLoadError
from seelike.models.model import Layer, Model, Preprocessing, TokenLayout

RESIDUAL_UNIT = re.compile(r"(BasicBlock|Bottleneck|BasicUnit|PreActBasic|PreActBottleneck|ConvNeXtBlock)$")


# -- attention probabilities -------------------------------------------------------------------
def attention_probabilities(q: Tensor, k: Tensor, scale: float, bias: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
    """softmax(q kᵀ · scale + bias + mask) [B, H, T, T] in float32 from q, k [B, H, T, d].

    ``bias`` and ``mask`` are additive: [H, T, T] or [1 | B, H, T, T] (relative position bias), or
    a window mask [W, T, T] (Swin's shifted windows: B is images × W windows, window-major inside).
    """
    scores = (q * scale) @ k.transpose(-2, -1)
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        if mask.ndim == 3:  # [windows, T, T], shared by every image
            windows, tokens = mask.shape[0], scores.shape[-1]
            scores = (scores.view(-1, windows, scores.shape[1], tokens, tokens) + mask[None, :, None]).view_as(scores)
        else:
            scores = scores + mask
    return scores.float().softmax(dim=-1)


def remember_keyword(attn: nn.Module, name: str) -> Callable[[], Tensor | None]:
    """Keep the tensor a block passes to ``attn`` as keyword ``name`` (EVA's rotary embedding), as below."""
    state: dict[str, Tensor | None] = {name: None}

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        state[name] = kwargs.get(name)

    attn.register_forward_pre_hook(hook, with_kwargs=True)
    return lambda: state[name]


def biased_qkv_attention(attn: nn.Module, rope: Callable[[], Tensor | None], mask: Callable[[], Tensor | None]) -> Callable[[Tensor], Tensor]:
    """timm ``EvaAttention`` (EVA, EVA-02, RoPE ViTs) and BEiT ``Attention``: q and k as their forward makes
    them (fused or separate projections, separate q/v biases, q/k norms, rotary embedding of the patch
    tokens), plus BEiT's relative position bias (own and shared), from the module's input [B, T, D]."""
    from timm.layers import apply_rot_embed_cat

    def probabilities(x: Tensor) -> Tensor:
        batch, tokens, _ = x.shape
        if attn.qkv is not None:
            bias = None if attn.q_bias is None else torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
            qkv = torch.nn.functional.linear(x, attn.qkv.weight, bias if not attn.qkv_bias_separate else None)
            if bias is not None and attn.qkv_bias_separate:
                qkv = qkv + attn.qkv.bias + bias if attn.qkv.bias is not None else qkv + bias
            q, k, _ = qkv.reshape(batch, tokens, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            q = attn.q_proj(x).reshape(batch, tokens, attn.num_heads, -1).transpose(1, 2)
            k = attn.k_proj(x).reshape(batch, tokens, attn.num_heads, -1).transpose(1, 2)
        q, k = getattr(attn, "q_norm", nn.Identity())(q), getattr(attn, "k_norm", nn.Identity())(k)
        embedding = rope()
        if embedding is not None:
            prefix, half = attn.num_prefix_tokens, getattr(attn, "rotate_half", False)
            q = torch.cat([q[:, :, :prefix], apply_rot_embed_cat(q[:, :, prefix:], embedding, half=half)], dim=2)
            k = torch.cat([k[:, :, :prefix], apply_rot_embed_cat(k[:, :, prefix:], embedding, half=half)], dim=2)
        table = getattr(attn, "relative_position_bias_table", None)
        return attention_probabilities(q, k, attn.scale, attn._get_rel_pos_bias() if table is not None else None, mask())

    return probabilities


def remember_attention_mask(attn: nn.Module) -> Callable[[], Tensor | None]:
    """Keep the additive mask a block passes to ``attn`` (second argument, or ``attention_mask`` / ``attn_mask`` / ``mask``).

    A persistent pre-hook on ``attn``: registered when the model is described, it runs before any
    capture hook on the same module, so a transform recomputing attention sees this pass's mask.
    """
    state: dict[str, Tensor | None] = {"mask": None}

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        keys = ("attention_mask", "attn_mask", "mask", "shared_rel_pos_bias")  # the last: timm BEiT's shared bias
        mask = next((kwargs[key] for key in keys if kwargs.get(key) is not None), None)
        state["mask"] = args[1] if mask is None and len(args) > 1 and isinstance(args[1], Tensor) else mask

    attn.register_forward_pre_hook(hook, with_kwargs=True)
    return lambda: state["mask"]


def attention_from_qkv(attn: nn.Module) -> Callable[[Tensor], Tensor]:
    """softmax(q kᵀ · scale) from the output of ``attn.qkv`` ([B, T, 3·D] → [B, H, T, T])."""

    def probabilities(qkv: Tensor) -> Tensor:
        batch, tokens, _ = qkv.shape
        q, k, _ = qkv.reshape(batch, tokens, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        q_norm, k_norm = getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)
        if q_norm is not None:
            q, k = q_norm(q), k_norm(k)
        scale = getattr(attn, "scale", q.shape[-1] ** -0.5)
        return ((q * scale) @ k.transpose(-2, -1)).float().softmax(dim=-1)

    return probabilities


def attention_from_multihead(attn: nn.MultiheadAttention) -> Callable[[Tensor], Tensor]:
    """The same for ``nn.MultiheadAttention`` (torchvision ViT), from its query input [B, T, D]."""

    def probabilities(x: Tensor) -> Tensor:
        batch, tokens, width = x.shape
        heads = attn.num_heads
        q, k, _ = torch.nn.functional.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q = q.reshape(batch, tokens, heads, -1).transpose(1, 2)
        k = k.reshape(batch, tokens, heads, -1).transpose(1, 2)
        return ((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)).float().softmax(dim=-1)

    return probabilities


# -- recipes -------------------------------------------------------------------------------
def _first(module: nn.Module, *names: str) -> str | None:
    for name in names:
        if isinstance(getattr(module, name, None), nn.Module):
            return name
    return None


def prenorm_block_layers(prefix: str, block: nn.Module, index: int) -> list[Layer]:
    """Roles of a pre-norm block with timm's names (norm1, attn|mlp_tokens, ls1, norm2, mlp|mlp_channels, ls2)."""
    p = f"{prefix}.{index}"
    mixing = _first(block, "attn", "mlp_tokens")
    mlp = _first(block, "mlp", "mlp_channels")
    if mixing is None or mlp is None or not hasattr(block, "norm1") or not hasattr(block, "norm2"):
        raise ModelLoadError(f"{p} ({type(block).__name__}) is not a pre-norm block seelike knows")
    attention_branch = "ls1" if _first(block, "ls1") else mixing
    mlp_branch = "ls2" if _first(block, "ls2") else mlp
    if hasattr(block, "gamma_1") and _first(block, "drop_path1") and _first(block, "drop_path2"):
        attention_branch, mlp_branch = "drop_path1", "drop_path2"  # EVA: layer scale is a parameter, applied before drop_path
    mlp_module = getattr(block, mlp)
    layers = [
        Layer(f"{p}.input", p, "tokens", index, "input", hook="input"),
        Layer(f"{p}.norm1", f"{p}.norm1", "tokens", index, "norm1"),
    ]
    attn = getattr(block, mixing)
    if type(attn).__name__ == "EvaAttention" or hasattr(attn, "relative_position_bias_table"):  # EVA, BEiT: as their forward does
        probabilities = biased_qkv_attention(attn, remember_keyword(attn, "rope"), remember_attention_mask(attn))
        layers.append(Layer(f"{p}.attn_probs", f"{p}.{mixing}", "attention", index, "attn_probs", hook="input", transform=probabilities))
        layers.append(Layer(f"{p}.heads", f"{p}.{mixing}.proj", "heads", index, "heads", hook="input"))
        layers.append(Layer(f"{p}.attn", f"{p}.{attention_branch}", "tokens", index, "attn"))
    elif hasattr(attn, "qkv") and hasattr(attn, "num_heads"):
        if not hasattr(attn, "rel_pos"):  # timm's relative-position ViTs add a term not recomputed here: no maps, never wrong ones
            layers.append(Layer(f"{p}.attn_probs", f"{p}.{mixing}.qkv", "attention", index, "attn_probs", transform=attention_from_qkv(attn)))
            layers.append(Layer(f"{p}.heads", f"{p}.{mixing}.proj", "heads", index, "heads", hook="input"))
        layers.append(Layer(f"{p}.attn", f"{p}.{attention_branch}", "tokens", index, "attn"))
    else:  # Mixer: the token-mixing MLP is the block's first branch ([B, D, T])
        layers.append(Layer(f"{p}.token_mixing", f"{p}.{attention_branch}", "other", index, "attn"))
    layers += [
        Layer(f"{p}.attn_residual", f"{p}.norm2", "tokens", index, "attn_residual", hook="input"),
        Layer(f"{p}.norm2", f"{p}.norm2", "tokens", index, "norm2"),
    ]
    if isinstance(getattr(mlp_module, "act", None), nn.Module):
        layers.append(Layer(f"{p}.mlp_hidden", f"{p}.{mlp}.act", "tokens", index, "mlp_hidden"))
    layers += [
        Layer(f"{p}.mlp", f"{p}.{mlp_branch}", "tokens", index, "mlp"),
        Layer(p, p, "tokens", index),
    ]
    return layers


def postnorm_block_layers(prefix: str, block: nn.Module, index: int) -> list[Layer]:
    """Roles of timm's residual post-norm block (``ResPostBlock``: x + norm1(attn(x)), then x + norm2(mlp(x))).

    The branches are the norms' outputs (what each skip adds); ``attn_residual`` is the MLP's input.
    There is no pre-branch norm, so the block has no ``norm1`` / ``norm2`` roles.
    """
    p = f"{prefix}.{index}"
    layers = [Layer(f"{p}.input", p, "tokens", index, "input", hook="input")]
    if not hasattr(block.attn, "rel_pos"):
        layers.append(Layer(f"{p}.attn_probs", f"{p}.attn.qkv", "attention", index, "attn_probs", transform=attention_from_qkv(block.attn)))
        layers.append(Layer(f"{p}.heads", f"{p}.attn.proj", "heads", index, "heads", hook="input"))
    layers += [
        Layer(f"{p}.attn", f"{p}.norm1", "tokens", index, "attn"),
        Layer(f"{p}.attn_residual", f"{p}.mlp", "tokens", index, "attn_residual", hook="input"),
    ]
    if isinstance(getattr(block.mlp, "act", None), nn.Module):
        layers.append(Layer(f"{p}.mlp_hidden", f"{p}.mlp.act", "tokens", index, "mlp_hidden"))
    return [*layers, Layer(f"{p}.mlp", f"{p}.norm2", "tokens", index, "mlp"), Layer(p, p, "tokens", index)]


def torchvision_vit_block_layers(prefix: str, block: nn.Module, index: int) -> list[Layer]:
    """Roles of a torchvision ``EncoderBlock`` (ln_1, self_attention, dropout, ln_2, mlp)."""
    p = f"{prefix}.encoder_layer_{index}"
    return [
        Layer(f"{p}.input", p, "tokens", index, "input", hook="input"),
        Layer(f"{p}.norm1", f"{p}.ln_1", "tokens", index, "norm1"),
        Layer(f"{p}.attn_probs", f"{p}.self_attention", "attention", index, "attn_probs", hook="input",
              transform=attention_from_multihead(block.self_attention)),
        Layer(f"{p}.attn", f"{p}.dropout", "tokens", index, "attn"),
        Layer(f"{p}.attn_residual", f"{p}.ln_2", "tokens", index, "attn_residual", hook="input"),
        Layer(f"{p}.norm2", f"{p}.ln_2", "tokens", index, "norm2"),
        Layer(f"{p}.mlp_hidden", f"{p}.mlp.1", "tokens", index, "mlp_hidden"),
        Layer(f"{p}.mlp", f"{p}.mlp", "tokens", index, "mlp"),
        Layer(p, p, "tokens", index),
    ]


def _tokens(tensor: Tensor) -> Tensor:
    """timm's Swin keeps tokens as [B, H, W, C]: analyses read [B, H·W, C] in row-major order."""
    return tensor.flatten(1, 2) if tensor.ndim == 4 else tensor


def window_attention_from_qkv(attn: nn.Module, mask: Callable[[], Tensor | None]) -> Callable[[Tensor], Tensor]:
    """timm ``WindowAttention``: softmax(q kᵀ · scale + relative position bias + shift mask) per window."""

    def probabilities(qkv: Tensor) -> Tensor:
        windows, tokens, _ = qkv.shape
        q, k, _ = qkv.reshape(windows, tokens, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        return attention_probabilities(q, k, attn.scale, attn._get_rel_pos_bias(), mask())

    return probabilities


def timm_swin_block_layers(path: str, block: nn.Module, index: int, input_size: tuple[int, int, int]) -> list[Layer]:
    """Roles of a timm ``SwinTransformerBlock``: tokens on its stage's grid, attention within windows.

    Tokens [B, H, W, C] are read as [B, H·W, C]; each layer carries its stage's token layout (grid,
    patch size in input pixels) and ``attn_probs`` the window's (``window × window`` on the same
    patch size), so attention distance is measured within windows (docs/swin_attention_distance.md).
    """
    rows, columns = (int(v) for v in block.input_resolution)
    window = tuple(int(v) for v in block.window_size)
    pixels = input_size[1] // rows
    stage, in_window = TokenLayout(0, (rows, columns), pixels), TokenLayout(0, window, pixels)
    p = path
    mask = remember_attention_mask(block.attn)
    return [
        Layer(f"{p}.input", p, "tokens", index, "input", hook="input", transform=_tokens, token_layout=stage),
        Layer(f"{p}.norm1", f"{p}.norm1", "tokens", index, "norm1", transform=_tokens, token_layout=stage),
        Layer(f"{p}.attn_probs", f"{p}.attn.qkv", "attention", index, "attn_probs",
              transform=window_attention_from_qkv(block.attn, mask), token_layout=in_window),
        Layer(f"{p}.attn", f"{p}.drop_path1", "tokens", index, "attn", transform=_tokens, token_layout=stage),
        Layer(f"{p}.attn_residual", f"{p}.norm2", "tokens", index, "attn_residual", hook="input", token_layout=stage),
        Layer(f"{p}.norm2", f"{p}.norm2", "tokens", index, "norm2", token_layout=stage),
        Layer(f"{p}.mlp_hidden", f"{p}.mlp.act", "tokens", index, "mlp_hidden", token_layout=stage),
        Layer(f"{p}.mlp", f"{p}.drop_path2", "tokens", index, "mlp", token_layout=stage),
        Layer(p, p, "tokens", index, transform=_tokens, token_layout=stage),
    ]


#: ConvNeXt sub-layers after the depthwise conv, channels-last [B, H, W, C] in transformers and timm (unless conv_mlp)
CHANNELS_LAST = {"ConvNeXtBlock": ("norm", "mlp.fc1", "mlp.act", "mlp.fc2"),
                 "ConvNextLayer": ("layernorm", "pwconv1", "act", "pwconv2"),
                 "ConvNextV2Layer": ("layernorm", "pwconv1", "act", "grn", "pwconv2")}


def _channels_first(tensor: Tensor) -> Tensor:
    return tensor.permute(0, 3, 1, 2)


def _channels_last_layers(path: str, unit: nn.Module, index: int) -> list[Layer]:
    """A ConvNeXt block's norm and pointwise MLP, read as feature maps [B, C, H, W] (sub-layer CKA)."""
    transform = None if getattr(unit, "use_conv_mlp", False) else _channels_first  # timm's conv_mlp runs channels-first
    modules = dict(unit.named_modules())
    names = [name for name in CHANNELS_LAST.get(type(unit).__name__, ()) if name in modules]
    return [Layer(f"{path}.{name}", f"{path}.{name}", "feature_map", index, name, transform=transform) for name in names]


def residual_unit_layers(path: str, unit: nn.Module, index: int) -> list[Layer]:
    """Roles of a residual unit: its convs and norms, shortcut, branch (before the add), output.

    Sub-layers are marked ``clone``: torchvision and timm add the shortcut and apply ReLU in
    place, which would overwrite a captured branch or norm output after its hook ran.
    """
    layers = [Layer(f"{path}.input", path, "feature_map", index, "input", hook="input")]
    for name, child in unit.named_children():
        if isinstance(child, (nn.Conv2d, nn.BatchNorm2d, nn.GroupNorm)) and name not in ("downsample", "shortcut"):
            layers.append(Layer(f"{path}.{name}", f"{path}.{name}", "feature_map", index, name, clone=True))
    layers += _channels_last_layers(path, unit, index)
    stack = getattr(unit, "layer", None)  # transformers' ResNet: conv + norm + activation units in a Sequential
    if isinstance(stack, nn.Sequential):
        layers += [Layer(f"{path}.layer.{i}", f"{path}.layer.{i}", "feature_map", index, f"layer.{i}", clone=True) for i in range(len(stack))]
    shortcut = _first(unit, "downsample", "shortcut")
    if shortcut:
        layers.append(Layer(f"{path}.shortcut", f"{path}.{shortcut}", "feature_map", index, "shortcut", clone=True))
    else:  # identity shortcut: the unit's own input
        layers.append(Layer(f"{path}.shortcut", path, "feature_map", index, "shortcut", hook="input"))
    branch = _first(unit, "drop_path", "se", "bn3", "conv3", "bn2", "layer")  # layer: transformers' ResNet
    if branch is None:
        raise ModelLoadError(f"{path} ({type(unit).__name__}): cannot find the end of its residual branch")
    layers.append(Layer(f"{path}.branch", f"{path}.{branch}", "feature_map", index, "branch", clone=True))
    layers.append(Layer(path, path, "feature_map", index))
    return layers  # in recipe order; load_model puts them in the order the forward pass runs them


# -- discovery ------------------------------------------------------------------------------
def describe(module: nn.Module, spec: str, preprocessing: Preprocessing, num_classes: int | None = None) -> Model:
    """Build a :class:`Model` for ``module`` by finding its blocks and their roles."""
    module.eval()
    blocks = getattr(module, "blocks", None)
    encoder_layers = getattr(getattr(module, "encoder", None), "layers", None)
    if isinstance(blocks, (nn.ModuleList, nn.Sequential)) and len(blocks) and hasattr(blocks[0], "norm1"):
        recipe = postnorm_block_layers if type(blocks[0]).__name__ == "ResPostBlock" else prenorm_block_layers
        layers = [layer for i, block in enumerate(blocks) for layer in recipe("blocks", block, i)]
        is_mixer = not hasattr(blocks[0], "attn")
        family = "mixer" if is_mixer else "vit"
        layout = _timm_token_layout(module)
    elif isinstance(encoder_layers, nn.Sequential) and hasattr(module, "class_token"):
        layers = [layer for i, block in enumerate(encoder_layers) for layer in torchvision_vit_block_layers("encoder.layers", block, i)]
        family = "vit"
        grid = module.image_size // module.patch_size
        layout = TokenLayout(1, (grid, grid), module.patch_size)
    elif swin_blocks := [(path, unit) for path, unit in module.named_modules() if type(unit).__name__ == "SwinTransformerBlock"]:
        input_size = preprocessing.input_size
        layers = [layer for i, (path, block) in enumerate(swin_blocks) for layer in timm_swin_block_layers(path, block, i, input_size)]
        family, layout = "swin", layers[0].token_layout
    else:
        units = [(path, unit) for path, unit in module.named_modules() if RESIDUAL_UNIT.search(type(unit).__name__)]
        if not units:
            raise ModelLoadError(
                f"seelike does not know the blocks of {spec} ({type(module).__name__}): it reads ViT-style `blocks`, "
                "torchvision ViT `encoder.layers` and ResNet residual units."
            )
        layers = [layer for i, (path, unit) in enumerate(units) for layer in residual_unit_layers(path, unit, i)]
        family, layout = ("convnext" if type(units[0][1]).__name__ == "ConvNeXtBlock" else "resnet"), None
    return Model(module, spec, family, tuple(layers), preprocessing, layout, num_classes)


def _timm_token_layout(module: nn.Module) -> TokenLayout | None:
    """Prefix tokens, patch grid and patch size of a timm-style token model (None when it does not say)."""
    grid = getattr(module, "grid_size", None)
    patch = getattr(module, "patch_size", None)
    embed = getattr(module, "patch_embed", None) or getattr(module, "stem", None)
    if grid is None and embed is not None:
        grid, patch = getattr(embed, "grid_size", None), getattr(embed, "patch_size", None)
    if grid is None or patch is None:
        return None
    patch = patch[0] if isinstance(patch, (tuple, list)) else patch
    return TokenLayout(int(getattr(module, "num_prefix_tokens", 0)), tuple(grid), int(patch))
