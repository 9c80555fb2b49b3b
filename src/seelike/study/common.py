"""Helpers the research-question modules share: figure paths, number formatting, and quantities with draws."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from seelike.similarity import CKAResult
from seelike.study.verdicts import Quantity, draw_seed
from seelike.statistics import normal_draws


def save_png(results: Any, directory: Path, names: Iterable[str] | Mapping[str, str] | None = None,
             **options: Any) -> dict[str, list[Path]]:
    """:func:`seelike.plots.save_figures` writing PNG only: the report shows PNGs, and an SVG beside each
    would double the study's drawing time (the analysis commands write both)."""
    from seelike.plots import save_figures

    return save_figures(results, directory, names, formats=("png",), **options)


def png(paths: Mapping[str, list[Path]] | list[Path]) -> list[Path]:
    """The PNG of each saved figure."""
    groups = paths.values() if isinstance(paths, Mapping) else [paths]
    return [path for group in groups for path in group if path.suffix == ".png"]


def is_baseline(role: str) -> bool:
    """Whether a study role names a baseline model: a random-init twin (``random_*``) or a second seed (``*_seed1``)."""
    return role.startswith("random_") or role.endswith("_seed1")


def save_per_role(results: Mapping[str, Any], figures_dir: Path | None,
                  save: Callable[[str, Any, Path], Mapping[str, list[Path]]]) -> tuple[list[Path], list[Path]]:
    """Each role's figures, saved by ``save(role, result, figures_dir)``, as PNGs split into those of trained models and
    those of baseline models; none when ``figures_dir`` is None (a rank that does not write)."""
    if figures_dir is None:
        return [], []
    written = {role: png(save(role, result, figures_dir)) for role, result in results.items()}
    return ([p for role, paths in written.items() if not is_baseline(role) for p in paths],
            [p for role, paths in written.items() if is_baseline(role) for p in paths])


def baseline_heatmaps(result: CKAResult, names: Mapping[str, str]) -> list[str]:
    """The figure names of a CKA result's heatmaps that involve a baseline model of the step's ``{role: name}``."""
    from seelike.plots import cka_heatmaps

    baselines = {name for role, name in names.items() if is_baseline(role)}
    return [figure for figure, pair in cka_heatmaps(result).items() if baselines & set(pair)]


def split_saved(saved: Mapping[str, list[Path]], baseline: Collection[str]) -> tuple[list[Path], list[Path]]:
    """The PNGs of saved figures (``{figure name: paths}``) split into those not named in ``baseline`` and those named."""
    return ([p for name, paths in saved.items() if name not in baseline for p in png(paths)],
            [p for name, paths in saved.items() if name in baseline for p in png(paths)])


def rounded(values: Any, digits: int = 4) -> Any:
    """A number or an array as JSON numbers (a list for arrays), rounded for reading."""
    array = np.asarray(values, dtype=float)
    return round(float(array), digits) if array.ndim == 0 else np.round(array, digits).tolist()


class CKADraws:
    """Normal draws of a whole CKA matrix from its cells' delta-method standard errors (cells independent)."""

    def __init__(self, result: CKAResult, key: str) -> None:
        self.result = result
        self.draws = normal_draws(result.matrix, result.arrays["standard_error"], seed=draw_seed("cka", key))

    def quantity(self, statistic: Callable[[CKAResult, np.ndarray], float]) -> Quantity:
        """``statistic(result, matrix)`` on the measured matrix and on every draw."""
        return Quantity(float(statistic(self.result, self.result.matrix)), np.array([statistic(self.result, d) for d in self.draws]))


def bootstrap_quantity(result: Any, name: str, statistic: Callable[[np.ndarray], float]) -> Quantity:
    """``statistic`` of ``result[name]`` and of each of its bootstrap draws ``result[name + '_bootstrap']``."""
    return Quantity.of(statistic, result[name], result[f"{name}_bootstrap"])
