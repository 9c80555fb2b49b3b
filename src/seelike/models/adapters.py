"""Layer discovery: turn any supported ``nn.Module`` into a :class:`Model` with named roles.

Only this module knows that timm calls the attention branch ``blocks.3.ls1`` and torchvision
``encoder.layers.encoder_layer_3.dropout``; analyses ask for roles. Three recipes cover the
families the paper studies:

* pre-norm blocks in a ``blocks`` list (seelike's ViT and Mixer, timm ViT / DeiT / Mixer),
* torchvision's ``encoder.layers`` ViT blocks,
* residual units (seelike's, timm's and torchvision's ResNets, timm's ResNetV2 / BiT).

Attention probabilities are recomputed from the block's own query/key projection in a hook, so
fused attention kernels stay on and the model's outputs do not change.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch import Tensor, nn

from seelike.errors import ModelLoadError
from seelike.models.model import Layer, Model, Preprocessing, TokenLayout

RESIDUAL_UNIT = re.compile(r"(BasicBlock|Bottleneck|BasicUnit|PreActBasic|PreActBottleneck)$")


# -- attention probabilities -------------------------------------------------------------------
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
    mlp_module = getattr(block, mlp)
    layers = [
        Layer(f"{p}.input", p, "tokens", index, "input", hook="input"),
        Layer(f"{p}.norm1", f"{p}.norm1", "tokens", index, "norm1"),
    ]
    attn = getattr(block, mixing)
    if hasattr(attn, "qkv") and hasattr(attn, "num_heads"):
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


def residual_unit_layers(path: str, unit: nn.Module, index: int) -> list[Layer]:
    """Roles of a residual unit: its convs and norms, shortcut, branch (before the add), output.

    Sub-layers are marked ``clone``: torchvision and timm add the shortcut and apply ReLU in
    place, which would overwrite a captured branch or norm output after its hook ran.
    """
    layers = [Layer(f"{path}.input", path, "feature_map", index, "input", hook="input")]
    for name, child in unit.named_children():
        if isinstance(child, (nn.Conv2d, nn.BatchNorm2d, nn.GroupNorm)) and name not in ("downsample", "shortcut"):
            layers.append(Layer(f"{path}.{name}", f"{path}.{name}", "feature_map", index, name, clone=True))
    shortcut = _first(unit, "downsample", "shortcut")
    if shortcut:
        layers.append(Layer(f"{path}.shortcut", f"{path}.{shortcut}", "feature_map", index, "shortcut", clone=True))
    else:  # identity shortcut: the unit's own input
        layers.append(Layer(f"{path}.shortcut", path, "feature_map", index, "shortcut", hook="input"))
    branch = _first(unit, "drop_path", "se", "bn3", "conv3", "bn2")
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
        layers = [layer for i, block in enumerate(blocks) for layer in prenorm_block_layers("blocks", block, i)]
        is_mixer = not hasattr(blocks[0], "attn")
        family = "mixer" if is_mixer else "vit"
        layout = _timm_token_layout(module)
    elif isinstance(encoder_layers, nn.Sequential) and hasattr(module, "class_token"):
        layers = [layer for i, block in enumerate(encoder_layers) for layer in torchvision_vit_block_layers("encoder.layers", block, i)]
        family = "vit"
        grid = module.image_size // module.patch_size
        layout = TokenLayout(1, (grid, grid), module.patch_size)
    else:
        units = [(path, unit) for path, unit in module.named_modules() if RESIDUAL_UNIT.search(type(unit).__name__)]
        if not units:
            raise ModelLoadError(
                f"seelike does not know the blocks of {spec} ({type(module).__name__}): it reads ViT-style `blocks`, "
                "torchvision ViT `encoder.layers` and ResNet residual units."
            )
        layers = [layer for i, (path, unit) in enumerate(units) for layer in residual_unit_layers(path, unit, i)]
        family, layout = "resnet", None
    return Model(module, spec, family, tuple(layers), preprocessing, layout, num_classes)


def _timm_token_layout(module: nn.Module) -> TokenLayout:
    grid = getattr(module, "grid_size", None)
    patch = getattr(module, "patch_size", None)
    embed = getattr(module, "patch_embed", None) or getattr(module, "stem", None)
    if grid is None and embed is not None:
        grid, patch = embed.grid_size, embed.patch_size
    patch = patch[0] if isinstance(patch, (tuple, list)) else patch
    return TokenLayout(int(getattr(module, "num_prefix_tokens", 0)), tuple(grid), int(patch))
