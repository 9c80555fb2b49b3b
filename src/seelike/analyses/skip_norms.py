"""How much of each block's output is carried by its skip connection (paper Fig 7, 8; docs/methods.md §5).

Pre-norm block (ViT, Mixer): a = Attn(LN(z)), z₂ = z + a, m = MLP(LN(z₂)). Per token t the ratios
‖z_t‖/‖a_t‖ and ‖z₂_t‖/‖m_t‖ (L2 over channels), averaged over images as per-image ratios; a large
ratio means the token passes the block mostly along the skip path. Reported for the CLS token
(token 0, when the model has prefix tokens) and as the mean over the patch tokens ("spatial"; all
tokens for GAP models and Mixers). ResNet unit: ‖shortcut‖/‖branch‖, L2 over C·H·W per image.

Everything is read through the adapter's roles (``input``, ``attn``, ``attn_residual``, ``mlp``;
``shortcut``, ``branch``), so own models, timm ViTs / Mixers and ResNets work alike. A skip that
was removed (paper Fig 8) leaves the residual role equal to the branch: such ratios are NaN and the
result's metadata names the blocks. :func:`neighbour_cka` reads the Fig 8 split from a CKA result.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from seelike.analyses.base import Accumulator, Batch, activation
from seelike.capture import output_shapes
from seelike.data import ImageDataset
from seelike.driver import run
from seelike.errors import InvalidInputError
from seelike.models.model import BLOCK_OUTPUT, Layer, Model
from seelike.results import Result
from seelike.similarity import CKAResult
from seelike.statistics import bootstrap_means, standard_error

__all__ = ["SkipNormResult", "SkipNorms", "neighbour_cka", "skip_norm_ratios"]

PRENORM_ROLES = ("input", "attn", "attn_residual", "mlp", BLOCK_OUTPUT)
RESIDUAL_ROLES = ("shortcut", "branch")
BRANCHES = ("attention", "mlp")  # the two skips of a pre-norm block, in the state's order


@dataclass(frozen=True)
class SkipNormResult(Result):
    """Skip / branch norm ratios per block (Fig 7).

    Pre-norm models: arrays ``blocks`` [K], ``attention_per_token`` and ``mlp_per_token`` [K, T],
    ``attention_spatial`` and ``mlp_spatial`` [K], and with a CLS token ``attention_cls`` and
    ``mlp_cls`` [K]. Residual models: ``blocks`` and ``shortcut_over_branch`` [K]. A ratio of a
    removed skip is NaN (metadata ``no_skip``); a branch that is exactly zero gives inf
    (metadata ``zero_branch``, e.g. zero-initialised last BN of a ResNet at random init).
    """

    kind: ClassVar[str] = "skip_norms"

    @property
    def blocks(self) -> list[int]:
        return [int(b) for b in self.arrays["blocks"]]

    @property
    def structure(self) -> str:
        """``"prenorm"`` (ViT, Mixer) or ``"residual"`` (ResNet)."""
        return str(self.metadata["structure"])

    def lines(self) -> dict[str, np.ndarray]:
        """The curves of Fig 7 by label: attention / MLP × CLS / spatial, or shortcut / branch."""
        if self.structure == "residual":
            return {"shortcut / branch": self.arrays["shortcut_over_branch"]}
        labels = {"attention_cls": "attention, CLS", "attention_spatial": "attention, spatial",
                  "mlp_cls": "MLP, CLS", "mlp_spatial": "MLP, spatial"}
        return {label: self.arrays[key] for key, label in labels.items() if key in self.arrays}


class SkipNorms(Accumulator):
    """Accumulates per-image skip/branch norm ratios of every block (Fig 7).

    State: sums of per-image ratios, per block the batches where a residual equals its branch (a
    removed skip) and the images whose branch norm is 0, and the batch count; all summed. Each image's
    CLS and spatial-mean ratio per block and branch [images, K, 2, 2] is concatenated, for the bootstrap.
    """

    kind: ClassVar[str] = "skip_norms"

    def __init__(self, model: Model) -> None:
        super().__init__([model])
        self.model = model
        blocks = sorted({layer.block for layer in model.layers if layer.block is not None})
        roles = {block: {layer.role for layer in model.layers if layer.block == block} for block in blocks}
        if blocks and all(set(PRENORM_ROLES) <= roles[b] for b in blocks):
            self.structure, wanted, self.blocks = "prenorm", PRENORM_ROLES, blocks
        else:
            self.structure, wanted = "residual", RESIDUAL_ROLES
            self.blocks = [b for b in blocks if set(RESIDUAL_ROLES) <= roles[b]]
        if not self.blocks:
            raise InvalidInputError(
                f"{model.spec} has no skip connections seelike can read: skip ratios need pre-norm blocks "
                "(roles input, attn, attn_residual, mlp: ViT, DeiT, MLP-Mixer) or residual units (roles shortcut, "
                "branch: ResNet, BiT). A plain CNN has no skips; see `seelike layers MODEL --all` for its roles."
            )
        self.roles: dict[int, dict[str, Layer]] = {b: {role: model.role(b, role) for role in wanted} for b in self.blocks}
        self.role_layers: list[Layer] = [layer for b in self.blocks for layer in self.roles[b].values()]
        # skips removed by construction (own ViT: Block.attention_skip / mlp_skip); others are found numerically
        self._declared = np.zeros((len(self.blocks), 2), dtype=bool)
        if self.structure == "prenorm":
            modules = dict(model.module.named_modules())
            for i, b in enumerate(self.blocks):
                block_module = modules.get(self.roles[b][BLOCK_OUTPUT].module)
                self._declared[i] = [getattr(block_module, "attention_skip", True) is False, getattr(block_module, "mlp_skip", True) is False]
            if self._declared.all():
                raise InvalidInputError(
                    f"every skip connection of {model.spec} is removed, so there is no skip/branch ratio to measure; "
                    "use a model that keeps at least one skip (e.g. seelike:vit, or no_attention_skip=[i] for one block)."
                )
        self._channels_first = self._channels_first_branches() if self.structure == "prenorm" else set()
        self.add_state("sums")  # [K, 2, T] (pre-norm) or [K, 1, 1] (residual), float64 on the CPU
        self.add_state("equal_batches", torch.zeros(len(self.blocks), 2, dtype=torch.int64))  # residual == branch
        self.add_state("zero_branch", torch.zeros(len(self.blocks), 2, dtype=torch.int64))  # images with branch norm 0
        self.add_state("batches", torch.zeros((), dtype=torch.int64))
        self.add_state("per_image", reduce="cat")  # [images, K, branches, (CLS, spatial mean)] per-image ratios
        self._prefix = model.token_layout.num_prefix_tokens if model.token_layout else 0
        # tokens per block: fewer in a hierarchical model's later stages (Swin), whose rows of T are NaN-padded
        layouts = [model.layout_of(self.roles[b]["input"]) if self.structure == "prenorm" else None for b in self.blocks]
        self._tokens = [layout.num_prefix_tokens + layout.num_patches if layout else None for layout in layouts]

    def _channels_first_branches(self) -> set[str]:
        """Keys of mixing branches that come out as [B, D, T] (a Mixer's token MLP), from one probe image."""
        shapes = output_shapes(self.model, self.role_layers)
        found = set()
        for b in self.blocks:
            branch, tokens = self.roles[b]["attn"], shapes[self.roles[b]["input"].name]
            if branch.kind != "tokens" and len(shapes[branch.name]) == 3 and shapes[branch.name][1:] == tokens[1:][::-1]:
                found.add(f"{self.model.name}/{branch.name}")
        return found

    def layers(self) -> dict[str, list[Layer]]:
        return {self.model.name: self.role_layers}

    def reduce(self, key: str, tensor: Tensor) -> Tensor:
        """Per-token L2 norms [B, T] over channels (pre-norm), or per-image norms [B, 1] over C·H·W (residual)."""
        if self.structure == "residual":
            return _norm(tensor.flatten(1), channels=-1)[:, None]
        if key in self._channels_first:  # a Mixer's token-mixing branch, [B, D, T]
            return _norm(tensor, channels=1)
        return _norm(tensor, channels=-1)

    def update(self, activations: Mapping[str, Tensor], batch: Batch) -> None:
        """Add one batch: the norms of every block's role tensors (see :meth:`reduce`)."""
        rows, equal, zero, per_image = [], [], [], []
        for b in self.blocks:
            norm = {role: activation(activations, self.model, layer) for role, layer in self.roles[b].items()}
            if self.structure == "prenorm":
                pairs = ((norm["input"], norm["attn"], norm["attn_residual"]), (norm["attn_residual"], norm["mlp"], norm[BLOCK_OUTPUT]))
                for skip, branch, _ in pairs:
                    if skip.shape != branch.shape:
                        raise InvalidInputError(f"block {b}: branch of {branch.shape[1]} tokens does not match its input's {skip.shape[1]}")
                # a removed skip leaves the residual equal to its branch: every token's norm equal, exactly
                equal.append([torch.equal(residual, branch) for _, branch, residual in pairs])
                norms = [(skip, branch) for skip, branch, _ in pairs]
            else:
                norms = [(norm["shortcut"], norm["branch"])]
                equal.append([False, False])
            ratios = [skip / branch for skip, branch in norms]  # each [B, T] (residual: [B, 1])
            rows.append(torch.stack([ratio.sum(dim=0) for ratio in ratios]))
            per_image.append(torch.stack([torch.stack([ratio[:, 0], ratio[:, self._prefix:].mean(dim=1)], dim=1) for ratio in ratios], dim=1))
            zero.append([int((branch == 0).any(dim=-1).sum()) for _, branch in norms] + [0] * (2 - len(norms)))
        tokens = max(row.shape[-1] for row in rows)
        rows = [torch.nn.functional.pad(row, (0, tokens - row.shape[-1]), value=float("nan")) for row in rows]
        self.accumulate(sums=torch.stack(rows).cpu(), equal_batches=torch.tensor(equal, dtype=torch.int64),
                        zero_branch=torch.tensor(zero, dtype=torch.int64), batches=torch.tensor(1),
                        per_image=torch.stack(per_image, dim=1).cpu())
        self.count(batch)

    def compute(self) -> SkipNormResult:
        """Mean per-image ratios; NaN where a skip is removed (warned and recorded)."""
        means = (self.state("sums") / self.num_images).numpy()
        removed = self._declared | (self.state("equal_batches").numpy() == int(self.state("batches")))
        blocks = np.array(self.blocks)
        draws = bootstrap_means(self.state("per_image").numpy(), seed=0)  # [draws, K, branches, (CLS, spatial)]
        computed: dict[str, Any] = {"model": self.model.name, "model_spec": self.model.spec, "family": self.model.family,
                                    "structure": self.structure, "n": self.num_images, "layers": [l.name for l in self.role_layers]}
        if self.structure == "prenorm":
            if removed.all():
                raise InvalidInputError(
                    f"every skip connection of {self.model.spec} is absent (each residual equals its branch); skip ratios "
                    "need a model with skip connections, e.g. seelike:vit or timm:vit_base_patch16_224"
                )
            means[removed] = np.nan
            prefix = self.model.token_layout.num_prefix_tokens if self.model.token_layout else 0
            arrays = {"blocks": blocks}
            for index, branch in enumerate(BRANCHES):
                per_token = means[:, index]
                arrays[f"{branch}_per_token"] = per_token
                arrays[f"{branch}_spatial"] = np.array([row[prefix:count].mean() for row, count in zip(per_token, self._tokens)])
                bootstrap = np.where(removed[None, :, index], np.nan, draws[:, :, index, 1])
                arrays[f"{branch}_spatial_bootstrap"], arrays[f"{branch}_spatial_se"] = bootstrap, standard_error(bootstrap)
                if prefix:
                    arrays[f"{branch}_cls"] = per_token[:, 0]
                    bootstrap = np.where(removed[None, :, index], np.nan, draws[:, :, index, 0])
                    arrays[f"{branch}_cls_bootstrap"], arrays[f"{branch}_cls_se"] = bootstrap, standard_error(bootstrap)
            no_skip = {branch: blocks[removed[:, i]].tolist() for i, branch in enumerate(BRANCHES)}
            if any(no_skip.values()):
                warnings.warn(f"{self.model.spec}: no skip connection in blocks {no_skip}; their ratios are NaN", RuntimeWarning, stacklevel=2)
            computed.update(num_prefix_tokens=prefix, has_cls=bool(prefix), no_skip=no_skip,
                            ratios="‖z_t‖/‖a_t‖ (attention), ‖z₂_t‖/‖m_t‖ (MLP); L2 over channels, mean of per-image ratios")
        else:
            arrays = {"blocks": blocks, "shortcut_over_branch": means[:, 0, 0], "shortcut_over_branch_bootstrap": draws[:, :, 0, 0]}
            arrays["shortcut_over_branch_se"] = standard_error(draws[:, :, 0, 0])
            computed.update(no_skip={}, ratios="‖shortcut‖/‖branch‖, L2 over C·H·W, mean of per-image ratios")
        zero_counts = self.state("zero_branch").numpy()
        zero_branch = {branch: blocks[zero_counts[:, i] > 0].tolist() for i, branch in enumerate(BRANCHES if self.structure == "prenorm" else ("branch",))}
        if any(zero_branch.values()):
            warnings.warn(f"{self.model.spec}: branches exactly zero for some images in blocks {zero_branch}: ratio inf "
                          "(a zero-initialised branch, e.g. a random-init ResNet's last BN)", RuntimeWarning, stacklevel=2)
        computed["zero_branch"] = zero_branch
        computed["uncertainty"] = "bootstrap over images (seed 0) of the per-image ratios: <name>_bootstrap [draws, blocks], <name>_se"
        return SkipNormResult(arrays=arrays, metadata=computed)


def _norm(x: Tensor, channels: int) -> Tensor:
    return torch.linalg.vector_norm(x.to(torch.float64), dim=channels)


def skip_norm_ratios(
    model: Model,
    dataset: ImageDataset,
    n: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool | None = None,
) -> SkipNormResult:
    """Skip/branch norm ratios of every block of ``model`` on ``n`` images of ``dataset`` (Fig 7; default: all)."""
    return run([SkipNorms(model)], dataset, n, batch_size, seed, progress=progress)[0]


def neighbour_cka(result: CKAResult, model: str, block: int) -> float:
    """CKA between the outputs of blocks ``block − 1`` and ``block + 1`` of ``model`` (Fig 8).

    Read from a within-model CKA result over block outputs (``seelike cka``'s default); sub-layers
    in the result are ignored (a name with another name of the result as its dotted prefix). A low
    value beside the same number for the model with skips intact shows the heatmap splitting at ``block``.
    """
    names = result.layer_names(model)
    blocks = [name for name in names if not any(name.startswith(f"{other}.") for other in names if other != name)]
    if not 1 <= block <= len(blocks) - 2:
        raise InvalidInputError(
            f"{model} has {len(blocks)} block outputs in this CKA result; neighbour CKA needs a block with one on each "
            f"side: 1..{len(blocks) - 2}"
        )
    matrix = result.matrix
    index = {name: i for i, name in enumerate(result.names)}
    return float(matrix[index[f"{model}/{blocks[block - 1]}"], index[f"{model}/{blocks[block + 1]}"]])
