"""An MLP-Mixer for small images (docs/methods.md §8), with timm's attribute names per block.

Block: z2 = z + TokenMLP(LN(z)ᵀ)ᵀ; out = z2 + ChannelMLP(LN(z2)). ``mlp_tokens`` and
``mlp_channels`` are the two mixing branches the adapter exposes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import Tensor, nn

from seelike.models.vit import MLP, _init_weights


@dataclass(frozen=True)
class MixerConfig:
    """Architecture of :class:`Mixer`; stored beside every checkpoint."""

    image_size: int = 28
    in_channels: int = 1
    patch_size: int = 4
    width: int = 128
    depth: int = 6
    token_hidden: int = 64
    channel_hidden: int = 256
    num_classes: int = 10

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")

    def to_dict(self) -> dict:
        return asdict(self)


class MixerBlock(nn.Module):
    def __init__(self, tokens: int, width: int, token_hidden: int, channel_hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.mlp_tokens = MLP(tokens, token_hidden)
        self.norm2 = nn.LayerNorm(width)
        self.mlp_channels = MLP(width, channel_hidden)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.mlp_tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.mlp_channels(self.norm2(x))


class Mixer(nn.Module):
    def __init__(self, config: MixerConfig) -> None:
        super().__init__()
        self.config = config
        grid = config.image_size // config.patch_size
        self.grid_size = (grid, grid)
        self.patch_size = config.patch_size
        self.num_prefix_tokens = 0
        self.patch_embed = nn.Conv2d(config.in_channels, config.width, config.patch_size, stride=config.patch_size)
        self.blocks = nn.ModuleList(
            MixerBlock(grid * grid, config.width, config.token_hidden, config.channel_hidden) for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.width)
        self.head = nn.Linear(config.width, config.num_classes)
        self.apply(_init_weights)

    def forward_features(self, images: Tensor) -> Tensor:
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.forward_features(images).mean(dim=1))
