"""Figures in the paper's style, drawn from saved results only (never recomputed here)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from seelike.similarity import CKAResult  # noqa: E402

FORMATS = ("png", "svg")


def save_figure(figure: plt.Figure, path: str | Path) -> list[Path]:
    """Write ``figure`` as PNG and SVG beside each other (``path`` without suffix) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in FORMATS:
        target = path.with_suffix(f".{suffix}")
        figure.savefig(target, dpi=150, bbox_inches="tight")
        written.append(target)
    plt.close(figure)
    return written


def _tick_labels(names: list[str]) -> tuple[list[int], list[str]]:
    """At most ~12 ticks, labelled with the layer index in depth order."""
    step = max(1, int(np.ceil(len(names) / 12)))
    ticks = list(range(0, len(names), step))
    return ticks, [str(t) for t in ticks]


def plot_cka_heatmap(result: CKAResult, model_a: str, model_b: str | None = None, title: str | None = None) -> plt.Figure:
    """Paper Fig 1 (``model_b`` None) or Fig 2: layers input→output on both axes, origin bottom-left."""
    matrix, rows, columns = result.block(model_a, model_b)
    figure, axes = plt.subplots(figsize=(4.6, 4.0))
    image = axes.imshow(matrix, origin="lower", cmap="magma", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    axes.set_ylabel(f"layers of {model_a}")
    axes.set_xlabel(f"layers of {model_b or model_a}")
    for set_ticks, set_labels, names in ((axes.set_yticks, axes.set_yticklabels, rows), (axes.set_xticks, axes.set_xticklabels, columns)):
        ticks, labels = _tick_labels(names)
        set_ticks(ticks)
        set_labels(labels)
    n = result.metadata.get("n")
    axes.set_title(title or (f"{model_a}" if model_b is None else f"{model_a} vs {model_b}") + f"  (CKA, n={n})", fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    return figure


def heatmap_figures(result: CKAResult, directory: str | Path) -> dict[str, list[Path]]:
    """Every within-model heatmap and every cross-model pair of a result, saved under ``directory``."""
    directory = Path(directory)
    models = result.models
    written: dict[str, list[Path]] = {}
    for index, model_a in enumerate(models):
        written[model_a] = save_figure(plot_cka_heatmap(result, model_a), directory / f"cka_{model_a}")
        for model_b in models[index + 1 :]:
            key = f"{model_a}_vs_{model_b}"
            written[key] = save_figure(plot_cka_heatmap(result, model_a, model_b), directory / f"cka_{key}")
    return written
