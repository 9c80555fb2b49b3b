"""RQ1: are ViT representations more uniform across layers than CNN ones? (Fig 1, 2)

Each rule is a statistic of a CKA result for a pair of models (positive: the claim holds), applied
to the trained ViT and ResNet and, by the same function, to their random-init twins. Uncertainty:
normal draws of every CKA cell from its delta-method standard error.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from seelike.cka_statistics import lower_half_match, top_third_best, uniformity
from seelike.plots import cka_heatmaps
from seelike.similarity import CKAResult
from seelike.study.common import CKADraws, baseline_heatmaps, rounded, save_png, split_saved
from seelike.study.engine import Section, StudyStep
from seelike.study.verdicts import judge


def _pairs(result: CKAResult, names: Mapping[str, str], *roles: str) -> list[str] | None:
    found = [names.get(role) for role in roles]
    return found if all(name in result.models for name in found) else None


def section(result: CKAResult, names: Mapping[str, str], figures_dir: Path | None) -> Section:
    baseline = baseline_heatmaps(result, names)
    saved = {} if figures_dir is None else save_png(result, figures_dir / "rq1", names=list(cka_heatmaps(result)))
    figures, baseline_figures = split_saved(saved, baseline)
    draws = CKADraws(result, "rq1")
    numbers = {f"uniformity[{m}]": rounded(uniformity(result, result.matrix, m)) for m in result.models}
    trained, random = _pairs(result, names, "vit", "resnet"), _pairs(result, names, "random_vit", "random_resnet")
    findings = []
    if trained:
        def quantity(statistic, pair):
            return draws.quantity(lambda r, m: statistic(r, m, *pair)) if pair else None

        def gap(r, m, vit, cnn):
            return uniformity(r, m, vit) - uniformity(r, m, cnn)

        u = [uniformity(result, result.matrix, name) for name in trained]
        ub = [uniformity(result, result.matrix, name) for name in random] if random else None
        findings.append(judge(
            "ViT layers are more uniformly similar to each other than ResNet layers (Fig 1)",
            "mean off-diagonal CKA of the ViT minus the ResNet's > 2 SE (SE: CKA cells drawn from their delta-method SEs)",
            f"{u[0]:.3f} (ViT) vs {u[1]:.3f} (ResNet)", quantity(gap, trained), quantity(gap, random),
            baseline_measured=f"{ub[0]:.3f} vs {ub[1]:.3f}" if ub else ""))

        def lower(r, m, vit, cnn):
            low, high = lower_half_match(r, m, vit, cnn)
            return float(np.min([0.5 - low, high - low]))  # NaN propagates

        low, high = lower_half_match(result, result.matrix, *trained)
        numbers.update({"best_match_vit_depth[lower half of resnet]": rounded(low, 3), "best_match_vit_depth[upper half of resnet]": rounded(high, 3)})
        base = lower_half_match(result, result.matrix, *random) if random else None
        findings.append(judge(
            "The lower half of ResNet layers is most similar to the lowest ViT layers (Fig 2)",
            "with d = mean relative depth (0..1) of the best-matching ViT layer: min(0.5 − d(lower ResNet half), d(upper half) − d(lower half)) > 2 SE",
            f"d = {low:.2f} (lower ResNet half), {high:.2f} (upper half)", quantity(lower, trained), quantity(lower, random),
            baseline_measured=f"d = {base[0]:.2f}, {base[1]:.2f}" if base else ""))

        def top(r, m, vit, cnn):
            top_best, rest_best = top_third_best(r, m, vit, cnn)
            return rest_best - top_best

        top_best, rest_best = top_third_best(result, result.matrix, *trained)
        numbers.update({"top_third_vit_best_cka": rounded(top_best), "lower_vit_best_cka": rounded(rest_best)})
        base = top_third_best(result, result.matrix, *random) if random else None
        findings.append(judge(
            "The top ViT layers match no ResNet layer well (Fig 2)",
            "mean best CKA against any ResNet layer: the other ViT layers' minus the top third's > 2 SE",
            f"{top_best:.3f} (top third) vs {rest_best:.3f} (rest)", quantity(top, trained), quantity(top, random),
            baseline_measured=f"{base[0]:.3f} vs {base[1]:.3f}" if base else ""))
    return Section(figures=figures, baseline_figures=baseline_figures, numbers=numbers, findings=findings,
                   text=f"Minibatch CKA (unbiased HSIC) between block outputs, n={result.metadata.get('n')}, batch {result.metadata.get('batch_size')}.")


def steps(models: Mapping[str, str], random_init) -> list[StudyStep]:
    """The RQ1 step over the preset's roles; ``random_init(spec)`` gives a baseline's spec."""
    return [StudyStep(
        "rq1_layer_similarity", "RQ1", "Layer similarity within and across ViT and ResNet (Fig 1, 2)", "cka",
        {"vit": models["vit"], "resnet": models["resnet"], "random_vit": random_init(models["vit"]), "random_resnet": random_init(models["resnet"])},
        section, baselines={"random_vit": "random init of vit", "random_resnet": "random init of resnet"}, required=("vit", "resnet"))]
