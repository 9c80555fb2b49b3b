"""RQ3: do ViTs keep spatial information at the top, and how does the classifier (CLS vs GAP) change that? (Fig 9-11)

Baselines: the same comparison between the random-init twins of the models compared. Uncertainty:
normal draws of each localization CKA cell from its delta-method SE; binomial SE of each probe
accuracy on the n test images (cells drawn independently).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from seelike.results import ResultBundle
from seelike.study.common import rounded, save_per_role, save_png
from seelike.study.engine import Cohort, Section, StudyStep
from seelike.study.verdicts import Quantity, judge


# -- Fig 9, 10: localization ----------------------------------------------------------------------------------
def diagonal_gap(grid: np.ndarray) -> float:
    """Mean CKA on the diagonal (own cell) minus the mean off it, of one layer's [P, P] grid."""
    off = ~np.eye(len(grid), dtype=bool)
    return float(np.nanmean(np.diag(grid)) - np.nanmean(grid[off]))


def gap_quantity(result: Any, key: str, layer: int = 0) -> Quantity:
    """The diagonal gap of ``layer`` (0: the penultimate block by default) with normal draws of its cells."""
    rows, columns = result.metadata["grids"][layer]
    size = rows * columns
    grid, se = result["cka"][layer, :size, :size], result["standard_error"][layer, :size, :size]
    return Quantity.normal(diagonal_gap, grid, se, "localization", key)


def localization_section(bundle: ResultBundle, names: Mapping[str, str], figures_dir: Path | None) -> Section:
    results = bundle.unbundle()
    figures, baseline_figures = save_per_role(
        results, figures_dir, lambda role, r, folder: save_png(r, folder / "rq3", names={"localization": f"localization_{names[role]}"}))
    numbers: dict[str, Any] = {}
    for role, r in results.items():
        numbers[f"share_first[{names[role]}]"] = rounded(r["share_first"])
        numbers[f"diagonal_gap[{names[role]}]"] = rounded(r["diagonal_gap"])
        numbers[f"layers[{names[role]}]"] = list(r.layers)
    gaps = {role: gap_quantity(r, role) for role, r in results.items()}

    def compare(first: str, second: str) -> Quantity | None:
        return gaps[first] - gaps[second] if first in gaps and second in gaps else None

    findings = []
    for (a, b), claim, rule in (
        (("vit", "vit_gap"), "CLS-trained ViT tokens localize more clearly than GAP-trained ViT tokens (Fig 9, 10)",
         "diagonal-minus-off-diagonal CKA (token vs input cells) at the penultimate block: CLS ViT minus GAP ViT > 2 SE"),
        (("vit", "resnet"), "ResNet top layers localize less than CLS ViT tokens (Fig 10)",
         "diagonal gap at the penultimate block / unit: CLS ViT minus ResNet > 2 SE"),
    ):
        if a in gaps and b in gaps:
            ra, rb = f"random_{a}", f"random_{b}"
            findings.append(judge(claim, rule, f"{gaps[a].value:.3f} ({names[a]}) vs {gaps[b].value:.3f} ({names[b]})",
                                  compare(a, b), compare(ra, rb),
                                  baseline_measured=f"{gaps[ra].value:.3f} vs {gaps[rb].value:.3f}" if ra in gaps and rb in gaps else ""))
    return Section(figures=figures, baseline_figures=baseline_figures, numbers=numbers, findings=findings,
                   text="CKA over images between a token at position p and the input patch at every q, at the penultimate and last blocks (Raghu et al. 2021, §7).")


# -- Fig 11: probes --------------------------------------------------------------------------------------------
def accuracy_quantity(result: Any, values: np.ndarray, statistic: Callable[[np.ndarray], float], key: str) -> Quantity:
    """``statistic`` of probe accuracies ``values`` with each drawn from its binomial SE on the n test images."""
    from seelike.statistics import binomial_standard_error

    n = int(result.metadata["n_test"])
    return Quantity.normal(statistic, values, binomial_standard_error(values, n), "probes", key)


def token_top(result: Any, key: str) -> Quantity:
    """Last-block per-token probe accuracy (mean over positions)."""
    return accuracy_quantity(result, np.nanmean(result["token_accuracy"], axis=1), lambda a: a[-1], f"{key}/tokens")


def cls_lead(result: Any, key: str) -> Quantity:
    """Last-block accuracy via the CLS token minus via the mean of the spatial tokens."""
    curves = np.stack([result.curve("cls")[0], result.curve("gap")[0]])
    return accuracy_quantity(result, curves, lambda c: c[0, -1] - c[1, -1], f"{key}/cls")


def first_token_catch_up(result: Any, key: str) -> Quantity:
    """The mean readout's lead over the first token: over the first half of the blocks minus at the last block."""
    curves = np.stack([result.curve("gap")[0], result.curve("first")[0]])

    def statistic(c: np.ndarray) -> float:
        lead = c[0] - c[1]
        return float(lead[: max(1, len(lead) // 2)].mean() - lead[-1])

    return accuracy_quantity(result, curves, statistic, f"{key}/first")


def probes_section(bundle: ResultBundle, names: Mapping[str, str], figures_dir: Path | None) -> Section:
    results = bundle.unbundle()
    figures, baseline_figures = save_per_role(
        results, figures_dir, lambda role, r, folder: save_png(r, folder / "rq3", names={"probes": f"probes_{names[role]}"}))
    numbers: dict[str, Any] = {}
    for role, r in results.items():
        for readout in r.readouts:
            if readout != "tokens":
                numbers[f"probe_accuracy[{names[role]}/{readout}]"] = rounded(r.curve(readout)[0])
        if "token_accuracy" in r.arrays:
            numbers[f"token_probe_accuracy[{names[role]}]"] = rounded(np.nanmean(r["token_accuracy"], axis=1))
        if "lambda" in r.arrays:
            numbers[f"lambda[{names[role]}]"] = np.asarray(r["lambda"]).tolist()
    findings = []

    def has(role: str, *readouts: str) -> bool:
        return role in results and set(readouts) <= set(results[role].readouts)

    if has("vit", "tokens") and has("vit_gap", "tokens"):
        top = {role: token_top(results[role], role) for role in ("vit", "vit_gap", "random_vit", "random_vit_gap") if has(role, "tokens")}
        random = top["random_vit_gap"] - top["random_vit"] if {"random_vit", "random_vit_gap"} <= set(top) else None
        findings.append(judge(
            "Per-token probes stay low at the top of CLS models and rise high in GAP models (Fig 11 left)",
            "last-block per-token probe accuracy (mean over positions): GAP ViT minus CLS ViT > 2 SE (binomial SE on the test images)",
            f"{top['vit_gap'].value:.2%} (GAP) vs {top['vit'].value:.2%} (CLS)", top["vit_gap"] - top["vit"], random,
            baseline_measured=f"{top['random_vit_gap'].value:.2%} vs {top['random_vit'].value:.2%}" if random else ""))
    if has("vit", "cls", "gap"):
        r = results["vit"]
        random = cls_lead(results["random_vit"], "random_vit") if has("random_vit", "cls", "gap") else None
        findings.append(judge(
            "In a CLS model the pooled spatial-token readout falls behind the CLS readout in the last blocks (Fig 11 right)",
            "last-block probe accuracy via the CLS token minus via the mean of spatial tokens > 2 SE",
            f"{r.curve('cls')[0][-1]:.2%} (CLS token) vs {r.curve('gap')[0][-1]:.2%} (spatial mean)", cls_lead(r, "vit"), random,
            baseline_measured=(f"{results['random_vit'].curve('cls')[0][-1]:.2%} vs {results['random_vit'].curve('gap')[0][-1]:.2%}" if random else "")))
    if has("vit_gap", "first", "gap"):
        r = results["vit_gap"]
        lead = r.curve("gap")[0] - r.curve("first")[0]
        random = first_token_catch_up(results["random_vit_gap"], "random_vit_gap") if has("random_vit_gap", "first", "gap") else None
        findings.append(judge(
            "In a GAP model the first-token readout catches up with the mean only at the top (Fig 11 right)",
            "the mean readout's lead over the first token: mean over the first half of the blocks minus at the last block > 2 SE",
            f"lead {lead[: max(1, len(lead) // 2)].mean():.2%} (first half) vs {lead[-1]:.2%} (last block)",
            first_token_catch_up(r, "vit_gap"), random,
            baseline_measured=f"{random.value:.2%}" if random else ""))
    n_train = next(iter(results.values())).metadata.get("n_train")
    return Section(figures=figures, baseline_figures=baseline_figures, numbers=numbers, findings=findings,
                   text=f"Closed-form ridge probes on {n_train} training images (at most the study's n), scored on the test images; "
                        "the ridge grid widens where the chosen λ sits at its edge (Raghu et al. 2021, §7, Fig. 11).")


def steps(models: Mapping[str, str], random_init: Callable[[str], str]) -> list[StudyStep]:
    vit, gap, cnn = models["vit"], models["vit_gap"], models["resnet"]
    randoms = {"random_vit": random_init(vit), "random_vit_gap": random_init(gap), "random_resnet": random_init(cnn)}
    baselines = {"random_vit": "random init of vit", "random_vit_gap": "random init of vit_gap", "random_resnet": "random init of resnet"}
    classifier = (Cohort("vit", {"vit_gap": "GAP-classifier twin"}),)  # CLS vs GAP: the same ViT trained with either classifier
    return [
        StudyStep("rq3_localization", "RQ3", "Spatial localization: CLS vs GAP ViT vs ResNet (Fig 9, 10)", "localization",
                  {"vit": vit, "vit_gap": gap, "resnet": cnn, **randoms}, localization_section, baselines=baselines, required=("vit",),
                  cohorts=classifier),
        StudyStep("rq3_probes", "RQ3", "Probes per token and per readout (Fig 11)", "probes",
                  {"vit": vit, "vit_gap": gap, "resnet": cnn, "random_vit": randoms["random_vit"], "random_vit_gap": randoms["random_vit_gap"]},
                  probes_section, params={"full_data": True, "readouts": "all", "shots": 10, "samples": 5},
                  baselines={k: baselines[k] for k in ("random_vit", "random_vit_gap")}, required=("vit",), cohorts=classifier),
    ]
