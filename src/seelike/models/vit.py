"""A Vision Transformer for small images (docs/methods.md: the paper's ViT, scaled to 28-32 px).

Pre-norm blocks with timm's attribute names (``norm1``, ``attn``, ``norm2``, ``mlp``) so one
adapter serves this ViT and timm's. Each block can drop its attention and/or MLP skip
connection (paper Fig 8). Attention runs through the fused kernel; analyses that need
attention probabilities recompute them from ``attn.qkv`` (see ``adapters``), so the normal
forward pass never pays for them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of :class:`ViT`; stored beside every checkpoint."""

    image_size: int = 28
    in_channels: int = 1
    patch_size: int = 4
    width: int = 96
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 2.0
    classifier: Literal["cls", "gap"] = "cls"
    num_classes: int = 10
    no_attention_skip: tuple[int, ...] = field(default=())
    no_mlp_skip: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.classifier not in ("cls", "gap"):
            raise ValueError(f"classifier must be 'cls' or 'gap', got {self.classifier!r}")
        object.__setattr__(self, "no_attention_skip", tuple(self.no_attention_skip))
        object.__setattr__(self, "no_mlp_skip", tuple(self.no_mlp_skip))

    def to_dict(self) -> dict:
        return asdict(self)


class Attention(nn.Module):
    """Multi-head self-attention; ``qkv`` and ``proj`` are separate modules so hooks can read them."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.num_heads = heads
        self.head_dim = width // heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, width = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(batch, tokens, width))


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: z2 = z + Attn(LN(z)); out = z2 + MLP(LN(z2)) (docs/methods.md §5)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, attention_skip: bool = True, mlp_skip: bool = True) -> None:
        super().__init__()
        self.attention_skip = attention_skip
        self.mlp_skip = mlp_skip
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = MLP(width, int(width * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        branch = self.attn(self.norm1(x))
        x = x + branch if self.attention_skip else branch
        branch = self.mlp(self.norm2(x))
        return x + branch if self.mlp_skip else branch


class ViT(nn.Module):
    """ViT with a CLS-token or global-average-pool classifier."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        grid = config.image_size // config.patch_size
        self.grid_size = (grid, grid)
        self.patch_size = config.patch_size
        self.num_prefix_tokens = 1 if config.classifier == "cls" else 0
        self.patch_embed = nn.Conv2d(config.in_channels, config.width, config.patch_size, stride=config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.width)) if self.num_prefix_tokens else None
        self.pos_embed = nn.Parameter(torch.randn(1, grid * grid + self.num_prefix_tokens, config.width) * 0.02)
        self.blocks = nn.ModuleList(
            Block(
                config.width,
                config.heads,
                config.mlp_ratio,
                attention_skip=i not in config.no_attention_skip,
                mlp_skip=i not in config.no_mlp_skip,
            )
            for i in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.width)
        self.head = nn.Linear(config.width, config.num_classes)
        self.apply(_init_weights)

    def forward_features(self, images: Tensor) -> Tensor:
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_head(self, features: Tensor) -> Tensor:
        pooled = features[:, 0] if self.config.classifier == "cls" else features.mean(dim=1)
        return self.head(pooled)

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(images))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
