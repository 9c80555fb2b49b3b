"""Mean attention distance per head and block (paper Fig 3, 4; docs/methods.md §2).

For a head with attention probabilities a [T, T] over prefix tokens (CLS, distillation,
registers) followed by a patch grid, the distance of query patch i is Σⱼ aᵢⱼ dᵢⱼ over the key
patches j, with dᵢⱼ = patch_size · ‖gridᵢ − gridⱼ‖ in pixels; a head's distance is the mean over
images and query patches. Prefix tokens are dropped as queries and as keys *without*
renormalising the rest (default, as in the co-author's public snippet), so attention on CLS adds
nothing. The renormalised variant (patch weights rescaled to sum to 1) and each head's attention
mass on prefix tokens are reported beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from seelike.analyses.base import Accumulator, Batch, activation
from seelike.data import ImageDataset
from seelike.driver import run
from seelike.errors import InvalidInputError
from seelike.models.model import Layer, Model
from seelike.results import Result
from seelike.statistics import bootstrap_means, standard_error

__all__ = [
    "LOCAL_FRACTION",
    "MAX_PREFIX_MASS",
    "AttentionDistance",
    "AttentionDistanceResult",
    "attention_distances",
    "attention_entropy",
    "mean_attention_distance",
    "patch_distances",
    "prefix_attention_mass",
    "uniform_attention_distance",
]

#: a head is *local* when its (renormalised) distance is below this fraction of the uniform-attention
#: distance of the model's own grid (14.4 px on 7×7 with patch 4: local below 7.2 px) ...
LOCAL_FRACTION = 0.5
#: ... and it puts less than this share of its attention on prefix tokens (a head that sits on CLS or
#: registers has a small unrenormalised distance without looking at its neighbourhood)
MAX_PREFIX_MASS = 0.5


def patch_distances(grid: tuple[int, int], patch_size: int, dtype: torch.dtype = torch.float64, device: Any = None) -> Tensor:
    """dᵢⱼ = patch_size · ‖gridᵢ − gridⱼ‖ [P, P] in pixels, patches in row-major order (§2)."""
    rows, columns = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    positions = torch.stack([rows.flatten(), columns.flatten()], dim=1).to(torch.float64)
    return (patch_size * torch.cdist(positions, positions)).to(dtype=dtype, device=device)


def uniform_attention_distance(grid: tuple[int, int], patch_size: int) -> float:
    """The distance of a head attending uniformly over the grid: the mean pairwise patch distance
    (14.4 px for 7×7 with patch 4, 116.5 px for 14×14 with patch 16; §2). A reference line for plots."""
    return float(patch_distances(grid, patch_size).mean())


def _check_attention(attn: Tensor, grid: tuple[int, int], num_prefix_tokens: int) -> Tensor:
    if not isinstance(attn, Tensor) or attn.ndim != 4 or attn.shape[-1] != attn.shape[-2]:
        shape = tuple(attn.shape) if isinstance(attn, Tensor) else type(attn).__name__
        raise InvalidInputError(f"attention must be probabilities of shape [B, H, T, T], got {shape}")
    expected = num_prefix_tokens + grid[0] * grid[1]
    if attn.shape[-1] != expected:
        raise InvalidInputError(
            f"attention has {attn.shape[-1]} tokens but {num_prefix_tokens} prefix tokens + a {grid[0]}×{grid[1]} grid "
            f"make {expected}; pass the model's token layout (grid, num_prefix_tokens)"
        )
    return attn if attn.dtype in (torch.float32, torch.float64) else attn.float()


def _per_query(attn: Tensor, grid: tuple[int, int], patch_size: int, num_prefix_tokens: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per image, head and query patch [B, H, P]: Σⱼ aᵢⱼ dᵢⱼ, the same renormalised, prefix mass."""
    attn = _check_attention(attn, grid, num_prefix_tokens)
    p = num_prefix_tokens
    queries = attn[:, :, p:, :]  # patch queries only
    patches = queries[..., p:]  # ... and patch keys only, not renormalised
    distance = (patches * patch_distances(grid, patch_size, attn.dtype, attn.device)).sum(dim=-1)
    patch_mass = patches.sum(dim=-1)
    renormalised = distance / patch_mass.clamp_min(torch.finfo(attn.dtype).tiny)
    prefix_mass = queries[..., :p].sum(dim=-1)
    return distance, renormalised, prefix_mass


def attention_entropy(attn: Tensor, num_prefix_tokens: int = 1) -> Tensor:
    """Entropy of each patch query's attention over all T keys as a fraction of uniform attention's (log T)
    [B, H, P]: 1 for uniform attention, near 0 for attention on one token."""
    attn = attn if attn.dtype in (torch.float32, torch.float64) else attn.float()
    queries = attn[:, :, num_prefix_tokens:, :]
    entropy = -(queries * queries.clamp_min(torch.finfo(attn.dtype).tiny).log()).sum(dim=-1)
    return entropy / np.log(attn.shape[-1])


def mean_attention_distance(
    attn: Tensor, grid: tuple[int, int], patch_size: int, num_prefix_tokens: int = 1, renormalise: bool = False
) -> Tensor:
    """Mean attention distance per head [H] in pixels of attention probabilities ``attn`` [B, H, T, T] (§2).

    Prefix tokens are dropped as queries and keys; ``renormalise`` rescales each query's patch
    weights to sum to 1 (default False: attention on prefix tokens counts as distance 0).
    """
    distance, renormalised, _ = _per_query(attn, grid, patch_size, num_prefix_tokens)
    return (renormalised if renormalise else distance).mean(dim=(0, 2))


def prefix_attention_mass(attn: Tensor, grid: tuple[int, int], num_prefix_tokens: int = 1) -> Tensor:
    """Each head's attention mass on prefix tokens [H], mean over images and query patches (§2)."""
    return _per_query(attn, grid, 1, num_prefix_tokens)[2].mean(dim=(0, 2))


def _stack_heads(sums: list[Tensor]) -> Tensor:
    """[blocks, 3, heads] from per-block [3, heads_b]; blocks with fewer heads (a Swin stage) padded with NaN."""
    heads = max(term.shape[-1] for term in sums)
    return torch.stack([torch.nn.functional.pad(term, (0, heads - term.shape[-1]), value=float("nan")) for term in sums])


@dataclass(frozen=True)
class AttentionDistanceResult(Result):
    """Arrays ``distance``, ``renormalised``, ``prefix_mass``, ``entropy`` [blocks, heads] and ``blocks`` [blocks];
    metadata: model, data, n, seed, patch size, grid, prefix tokens, image width, uniform reference."""

    kind: ClassVar[str] = "attention_distance"

    @property
    def distance(self) -> np.ndarray:
        return self.arrays["distance"]

    @property
    def blocks(self) -> list[int]:
        return [int(b) for b in self.arrays["blocks"]]

    @property
    def image_width(self) -> float:
        """Width of the patch grid in pixels (the reference for 'local' heads: below half of it)."""
        return float(self.metadata["image_width"])

    @property
    def uniform_distance(self) -> float:
        """Distance of uniform attention over this model's grid (the reference for local heads)."""
        return float(self.metadata["uniform_distance"])

    def share_below(self, pixels: float) -> np.ndarray:
        """Share of heads per block whose distance is below ``pixels`` [blocks] (NaN-padded heads of a Swin stage not counted)."""
        heads = (~np.isnan(self.distance)).sum(axis=1)
        return (self.distance < pixels).sum(axis=1) / np.maximum(heads, 1)

    def local_heads(self, fraction: float = LOCAL_FRACTION, draw: int | None = None) -> np.ndarray:
        """Which heads are local [blocks, heads]: renormalised distance below ``fraction`` × the uniform
        distance and prefix mass below :data:`MAX_PREFIX_MASS`; ``draw`` reads one bootstrap draw instead."""
        if draw is None:
            renormalised, prefix = self.arrays["renormalised"], self.arrays["prefix_mass"]
        else:
            renormalised, prefix = self.arrays["renormalised_bootstrap"][draw], self.arrays["prefix_mass_bootstrap"][draw]
        uniform = self.arrays["block_uniform_distance"][:, None] if "block_uniform_distance" in self.arrays else self.uniform_distance
        return (renormalised < fraction * uniform) & (prefix < MAX_PREFIX_MASS)

    def local_share(self, fraction: float = LOCAL_FRACTION) -> np.ndarray:
        """Share of local heads per block [blocks] (see :meth:`local_heads`)."""
        heads = np.maximum((~np.isnan(self.distance)).sum(axis=1), 1)  # NaN-padded heads of a Swin stage not counted
        return self.local_heads(fraction).sum(axis=1) / heads

    def local_share_draws(self, fraction: float = LOCAL_FRACTION) -> np.ndarray:
        """Bootstrap draws [draws, blocks] of :meth:`local_share` (empty when the result has no draws)."""
        if "renormalised_bootstrap" not in self.arrays:
            return np.zeros((0, len(self.distance)))
        heads = np.maximum((~np.isnan(self.distance)).sum(axis=1), 1)
        return np.stack([self.local_heads(fraction, d).sum(axis=1) / heads for d in range(len(self.arrays["renormalised_bootstrap"]))])


class AttentionDistance(Accumulator):
    """Streams attention probabilities of every attention block into per-head sums (§2).

    State: per block and head the summed distance, renormalised distance and prefix mass over query
    rows (images × patches), and the number of query rows, summed; and each image's own means
    [images, blocks, 3, heads], concatenated, for the bootstrap over images of the result's SEs.
    """

    kind: ClassVar[str] = "attention_distance"

    def __init__(self, model: Model, blocks: Sequence[int] | None = None) -> None:
        super().__init__([model])
        layers = model.attention_layers()
        if not layers or model.token_layout is None:
            raise InvalidInputError(
                f"{model.spec} has no attention layers; attention distance needs a ViT (own, timm, torchvision or hf; Swin too): "
                "it does not apply to CNNs"
            )
        if blocks is not None:
            known = {layer.block for layer in layers}
            missing = sorted(set(blocks) - known)
            if missing:
                raise InvalidInputError(f"{model.spec} has attention in blocks {sorted(known)}; blocks {missing} have none")
            layers = [layer for layer in layers if layer.block in set(blocks)]
        self.model = model
        self.attention: list[Layer] = layers
        self.layout = model.token_layout
        # each map's own geometry: the model's grid, or a window on its stage's grid (Swin, docs/swin_attention_distance.md)
        self.layouts = {f"{model.name}/{layer.name}": model.layout_of(layer) for layer in layers}
        self.add_state("sums")  # [blocks, 3, heads] float64 on the CPU, shaped by the first batch; NaN beyond a block's heads
        self.add_state("rows", torch.zeros(len(layers), dtype=torch.int64))  # query rows (images × windows × patches) per block
        self.add_state("entropy")  # [blocks, heads] summed normalised entropy of the query rows (NaN beyond a block's heads)
        self.add_state("per_image", reduce="cat")  # [images, blocks, 3, heads] per-image means (NaN-padded heads): the bootstrap

    def layers(self) -> dict[str, list[Layer]]:
        return {self.model.name: self.attention}

    def reduce(self, key: str, attn: Tensor) -> tuple[Tensor, int, Tensor, Tensor]:
        """Attention probabilities [B, H, T, T] -> summed distance, renormalised distance, prefix mass [3, H],
        the number of query rows (B is images, or images × windows for window attention), the per-map
        sums [B, 3, H] (for the bootstrap over images) and the summed normalised entropy [H]."""
        layout = self.layouts[key]
        terms = _per_query(attn, layout.grid, layout.patch_size, layout.num_prefix_tokens)
        summed = torch.stack([term.sum(dim=(0, 2)) for term in terms]).to("cpu", torch.float64)
        per_map = torch.stack([term.sum(dim=2) for term in terms], dim=1).to("cpu", torch.float64)
        entropy = attention_entropy(attn, layout.num_prefix_tokens).sum(dim=(0, 2)).to("cpu", torch.float64)
        return summed, attn.shape[0] * layout.num_patches, per_map, entropy

    def update(self, activations: Mapping[str, Tensor], batch: Batch) -> None:
        """Add one batch: the per-head sums of every tracked block (see :meth:`reduce`), and each image's means."""
        sums, rows, per_map, entropy = zip(*(activation(activations, self.model, layer) for layer in self.attention))
        images = len(batch)
        per_image = []
        for block_maps, block_rows in zip(per_map, rows):  # windows of one image are consecutive (image-major)
            per_image.append(block_maps.reshape(images, -1, *block_maps.shape[1:]).sum(dim=1) / (block_rows / images))
        heads = max(p.shape[-1] for p in per_image)
        per_image = torch.stack([torch.nn.functional.pad(p, (0, heads - p.shape[-1]), value=float("nan")) for p in per_image], dim=1)
        self.accumulate(sums=_stack_heads(list(sums)), rows=torch.tensor(rows, dtype=torch.int64), per_image=per_image,
                        entropy=_stack_heads([term[None] for term in entropy])[:, 0])
        self.count(batch)

    def compute(self) -> AttentionDistanceResult:
        means = (self.state("sums") / self.state("rows")[:, None, None]).numpy()
        layout = self.layout
        arrays = {
            "distance": means[:, 0],
            "renormalised": means[:, 1],
            "prefix_mass": means[:, 2],
            "entropy": (self.state("entropy") / self.state("rows")[:, None]).numpy(),
            "blocks": np.array([layer.block for layer in self.attention]),
            "block_patch_size": np.array([layout.patch_size for layout in self.layouts.values()]),
            "block_uniform_distance": np.array([uniform_attention_distance(l.grid, l.patch_size) for l in self.layouts.values()]),
        }
        draws = bootstrap_means(self.state("per_image").numpy(), seed=0)  # [draws, blocks, 3, heads]
        for index, name in enumerate(("distance", "renormalised", "prefix_mass")):
            arrays[f"{name}_bootstrap"] = draws[:, :, index]
            arrays[f"{name}_se"] = standard_error(draws[:, :, index])
        computed = {
            "model": self.model.name,
            "model_spec": self.model.spec,
            "layers": [layer.name for layer in self.attention],
            "n": self.num_images,
            "patch_size": layout.patch_size,
            "grid": list(layout.grid),
            "num_prefix_tokens": layout.num_prefix_tokens,
            "image_width": layout.grid[1] * layout.patch_size,
            "uniform_distance": uniform_attention_distance(layout.grid, layout.patch_size),
            "prefix_tokens": "dropped as queries and keys; distance not renormalised (renormalised array beside it)",
            "unit": "pixels",
            "uncertainty": "bootstrap over images (seed 0): *_bootstrap [draws, blocks, heads], *_se their standard deviation",
            "entropy": "per head, mean over images and query patches of the entropy of the query's attention over all "
                       "tokens divided by log(tokens): 1 is uniform attention",
            "local_head": f"renormalised distance < {LOCAL_FRACTION} x uniform distance and prefix mass < {MAX_PREFIX_MASS}",
        }
        return AttentionDistanceResult(arrays=arrays, metadata=computed)


def attention_distances(
    model: Model,
    dataset: ImageDataset,
    n: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool | None = None,
) -> AttentionDistanceResult:
    """Mean attention distance of every head of every block on ``n`` images of ``dataset`` (§2; default: all)."""
    return run([AttentionDistance(model)], dataset, n, batch_size, seed, progress=progress)[0]
