"""The few numbers each command prints under its tables and saves in its result (``metadata["summary"]``), so
every number the README quotes comes from one command's output and one saved file. Pure functions of a result."""

from __future__ import annotations

from typing import Any

import numpy as np

from seelike.analyses.attention_distance import AttentionDistanceResult
from seelike.analyses.probes import ProbeResult, middle_blocks
from seelike.analyses.skip_norms import SkipNormResult, neighbour_cka
from seelike.cka_statistics import best_match_per_layer, uniformity
from seelike.errors import InvalidInputError
from seelike.similarity import CKAResult

__all__ = ["attention_summary", "cka_summary", "probe_summary", "skip_summary"]


def _number(value: Any) -> float:
    return round(float(value), 6)


def cka_summary(result: CKAResult) -> dict[str, Any]:
    """Per model: mean CKA between distinct layers and between neighbours, and across each block (CKA of the
    blocks before and after it, Fig 8: low where a block's skips were removed); per ordered pair of models: the
    best-match CKA (:func:`~seelike.cka_statistics.best_match_cka`), also over the model's top third of layers
    and over the rest (Fig 2: the ViT's top third matches no ResNet layer)."""
    models = {}
    for model in result.models:
        matrix, names, _ = result.block(model)
        entry = {"layers": len(names),
                 "mean_cka_between_layers": _number(uniformity(result, result.matrix, model)) if len(names) > 1 else None,
                 "mean_cka_between_neighbours": _number(np.diag(matrix, 1).mean()) if len(names) > 1 else None,
                 "cka_across_block": {}}
        block = 1
        while True:
            try:
                entry["cka_across_block"][str(block)] = _number(neighbour_cka(result, model, block))
            except InvalidInputError:  # no block with one on each side left
                break
            block += 1
        models[model] = entry
    pairs = []
    for model in result.models:
        for other in result.models:
            if other != model:
                best = best_match_per_layer(result, result.matrix, model, other)
                top = max(1, len(best) // 3)
                pairs.append({"model": model, "other": other, "best_match_cka": _number(best.mean()),
                              "best_match_top_third": _number(best[-top:].mean()),
                              "best_match_rest": _number(best[:-top].mean()) if len(best) > top else None})
    return {"models": models, "pairs": pairs}


def attention_summary(result: AttentionDistanceResult) -> dict[str, Any]:
    """Mean distance per block (px), local heads, and the range over heads of the attention entropy as a
    fraction of uniform attention's (1: uniform)."""
    summary: dict[str, Any] = {
        "mean_distance_per_block_px": [_number(np.nanmean(row)) for row in result.distance],
        "uniform_distance_px": _number(result.uniform_distance),
        "local_heads": int(result.local_heads().sum()),
        "heads": int((~np.isnan(result.distance)).sum()),
    }
    if "entropy" in result.arrays:
        entropy = result["entropy"]
        summary.update({"entropy_fraction_of_uniform_min": _number(np.nanmin(entropy)),
                        "entropy_fraction_of_uniform_max": _number(np.nanmax(entropy)),
                        "entropy_fraction_of_uniform_per_block": [_number(np.nanmean(row)) for row in entropy]})
    return summary


def probe_columns(result: ProbeResult) -> list[tuple[str, str, str]]:
    """(readout, regime, column label) of every probe curve: ``gap n=10000``, ``gap 10-shot``."""
    meta = result.metadata
    return ([(r, "full", f"{r} n={meta['n_train']}") for r in result.readouts]
            + [(r, "few_shot", f"{r} {meta['shots']}-shot") for r in result.few_shot_readouts])


def probe_summary(result: ProbeResult) -> dict[str, Any]:
    """Test accuracy of every probe averaged over the middle blocks (Fig 13's intermediate layers), by column label."""
    middle = middle_blocks(len(result.blocks))
    return {"middle_blocks": result.blocks[middle],
            "middle_block_accuracy": {label: _number(result.curve(readout, regime)[0][middle].mean())
                                      for readout, regime, label in probe_columns(result)}}


def skip_summary(result: SkipNormResult) -> dict[str, Any]:
    """Median ‖skip‖/‖branch‖ over blocks of the spatial tokens (a ViT's attention and MLP ratios together) or of a
    ResNet's units: how much the skips carry, in one number (Fig 7); inf where branches are exactly zero."""
    keys = ("shortcut_over_branch",) if result.structure == "residual" else ("attention_spatial", "mlp_spatial")
    return {"median_spatial_ratio": _number(np.nanmedian(np.concatenate([result[key] for key in keys])))}
