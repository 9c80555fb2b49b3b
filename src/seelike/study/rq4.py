"""RQ4: how does data scale change intermediate representations? (Fig 4, 12, 13)

Data-scale rules are seed-baseline rules: the statistic computed with a second-seed 100% model in
place of the reduced-data model is the seed-to-seed difference, and a difference counts only beyond
it (and beyond 2 SE). Fig 13 right compares model families and has random-init twins as baselines.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from seelike.analyses.probes import middle_blocks
from seelike.results import ResultBundle
from seelike.statistics import binomial_standard_error
from seelike.study.common import is_baseline, png, rounded, save_per_role, save_png
from seelike.study.engine import Cohort, Section, StudyStep
from seelike.study.rq2 import local_share_quantity
from seelike.study.verdicts import Quantity, judge

FRACTION_ROLES = ("vit_frac30", "vit_frac10", "vit_frac03")  # most to least data


# -- Fig 12: per-block CKA against the 100% model ------------------------------------------------------------
def fall_to_top(cka: np.ndarray, se: np.ndarray, key: str) -> Quantity:
    """CKA to the 100% model at the first block minus at the last block (how much more the top changed)."""
    return Quantity.normal(lambda row: float(row[0] - row[-1]), cka, se, "data_scale", key)


def data_scale_section(figure: str) -> Callable[[Any, Mapping[str, str], Path], Section]:
    """The Fig 12 section; ``figure`` names its image so that both model sizes keep theirs."""

    def section(result: Any, names: Mapping[str, str], figures_dir: Path | None) -> Section:
        figures = [] if figures_dir is None else png(save_png(result, figures_dir / "rq4", names={"data_scale": figure}))
        numbers: dict[str, Any] = {f"per_block_cka[{m}]": rounded(row) for m, row in zip(result.models, result["per_block_cka"])}
        numbers["per_block_cka[seed baseline]"] = rounded(result["baseline"])
        numbers.update({f"changed_blocks[{m}]": result.changed_blocks(m) for m in result.models})
        smallest, index = result.models[0], 0  # the steps list the reduced-data models from the least data up
        row, seed = result["per_block_cka"][index], result["baseline"]
        trained = fall_to_top(row, result["standard_error"][index], smallest)
        baseline = fall_to_top(seed, result["baseline_standard_error"], "seed")
        findings = [judge(
            "Lower blocks are already similar with little data; higher blocks need more (Fig 12)",
            f"CKA of the smallest-data model ({smallest}) to the 100% model, first block minus last block, > 2 SE and > the same "
            "fall for a second-seed 100% model",
            f"{row[0]:.3f} (first block) → {row[-1]:.3f} (last block); changed beyond 2 SE of the seed baseline: blocks {result.changed_blocks(smallest)}",
            trained, baseline, baseline_kind="second seed", baseline_measured=f"second seed {seed[0]:.3f} → {seed[-1]:.3f}")]
        return Section(figures=figures, numbers=numbers, findings=findings,
                       text="Per-block CKA of ViTs trained on less data against the 100% model, beside a second-seed 100% model (Raghu et al. 2021, §8, Fig. 12).")

    return section


# -- Fig 4: attention distance and data ---------------------------------------------------------------------------
def fraction_attention_section(bundle: ResultBundle, names: Mapping[str, str], figures_dir: Path | None) -> Section:
    results = bundle.unbundle()
    figures, baseline_figures = save_per_role(
        results, figures_dir, lambda role, r, folder: save_png(r, folder / "rq4", names={"attention_distance_depth": f"attention_{names[role]}"}))
    numbers: dict[str, Any] = {f"share_local_first_block[{names[role]}]": rounded(r.local_share()[0]) for role, r in results.items()}
    numbers.update({f"mean_distance_first_block_px[{names[role]}]": rounded(r.distance[0].mean(), 3) for role, r in results.items()})
    findings = []
    present = [role for role in ("vit", *FRACTION_ROLES) if role in results]
    if len(present) >= 2:
        full, least = present[0], present[-1]
        no_local = all(r.local_share()[0] == 0 for r in results.values())
        seed = results.get("vit_seed1")
        trained = local_share_quantity(results[full], 0) - local_share_quantity(results[least], 0)
        baseline = local_share_quantity(results[full], 0) - local_share_quantity(seed, 0) if seed is not None else None
        findings.append(judge(
            "With less pre-training data, lower blocks learn fewer local heads (Fig 4; a scale effect that may not show at this size)",
            "share of local heads (relative to each model's uniform distance, prefix mass < 0.5) in the first block: the 100% model minus "
            "the smallest-data model > 2 SE and > the same difference between two seeds; not measured when no model has a local head",
            f"{results[full].local_share()[0]:.0%} ({names[full]}) vs {results[least].local_share()[0]:.0%} ({names[least]}); mean distance "
            f"{results[full].distance[0].mean():.1f} vs {results[least].distance[0].mean():.1f} px",
            trained, baseline, baseline_kind="second seed",
            baseline_measured=f"second seed: {seed.local_share()[0]:.0%} local" if seed is not None else "",
            degenerate="no model has a local head in its first block, so there is no share of local heads to compare" if no_local else ""))
    return Section(figures=figures, baseline_figures=baseline_figures, numbers=numbers, findings=findings,
                   text="Mean attention distance per head of ViTs trained on 100% and less of the data (Raghu et al. 2021, §5.1, Fig. 4).")


# -- Fig 13: few-shot probes ------------------------------------------------------------------------------------
middle_slice = middle_blocks  # the middle half of the blocks (Fig 13's intermediate layers), as `seelike probe` prints it


def middle_accuracy(result: Any, key: str) -> Quantity:
    """Mean 10-shot accuracy over the middle blocks: binomial SE on the test images and the shot-sampling SE, per block."""
    mean, std = result.curve("gap", "few_shot")
    samples = max(int(result.metadata.get("samples", 1)), 1)
    se = np.sqrt(binomial_standard_error(mean, int(result.metadata["n_test"])) ** 2 + (np.nan_to_num(std) / np.sqrt(samples)) ** 2)
    return Quantity.normal(lambda curve: float(curve[middle_slice(len(curve))].mean()), mean, se, "few_shot", key)


def probe_comparison_section(bundle: ResultBundle, names: Mapping[str, str], figures_dir: Path | None) -> Section:
    results = bundle.unbundle()
    shown = [r for role, r in results.items() if not is_baseline(role)]
    baselines = [r for role, r in results.items() if is_baseline(role)]
    options = dict(readout="gap", regime="few_shot", comparison=True)
    figures = [] if figures_dir is None else png(save_png(shown, figures_dir / "rq4", names={"probe_comparison": "probes"}, **options))
    baseline_figures = [] if figures_dir is None or not baselines else png(save_png(
        baselines, figures_dir / "rq4", names={"probe_comparison": "probes_baselines"}, **options))
    middle = {role: middle_accuracy(r, role) for role, r in results.items()}
    numbers: dict[str, Any] = {f"few_shot_accuracy[{names[role]}]": rounded(r.curve("gap", "few_shot")[0]) for role, r in results.items()}
    numbers.update({f"few_shot_accuracy_middle_blocks[{names[role]}]": rounded(q.value) for role, q in middle.items()})
    findings = []
    for sizes, seed in (((("vit", *FRACTION_ROLES)), "vit_seed1"), (("vit_large", "vit_large_frac10"), "vit_large_seed1")):
        present = [role for role in sizes if role in middle]
        if len(present) < 2:
            continue
        full, least = present[0], present[-1]
        baseline = middle[full] - middle[seed] if seed in middle else None
        findings.append(judge(
            f"More pre-training data gives stronger intermediate layers (Fig 13 left; {names[full]})",
            "mean 10-shot accuracy over the middle blocks: the 100% model minus the smallest-data model of the same size > 2 SE and > the "
            "difference between two seeds",
            f"{middle[full].value:.2%} ({names[full]}) vs {middle[least].value:.2%} ({names[least]})", middle[full] - middle[least], baseline,
            baseline_kind="second seed", baseline_measured=f"second seed of {names[full]}: {middle[seed].value:.2%}" if baseline else ""))
    large = [role for role in ("vit_large", "vit_large_seed1") if role in middle] or [role for role in ("vit",) if role in middle]
    if large and "resnet" in middle:
        vit_middle = Quantity.mean([middle[role] for role in large])
        random = middle["random_vit_large"] - middle["random_resnet"] if {"random_vit_large", "random_resnet"} <= set(middle) else None
        findings.append(judge(
            f"Larger ViTs have stronger intermediate layers than ResNets (Fig 13 right; {' and '.join(names[r] for r in large)})",
            "mean 10-shot accuracy over the middle blocks: the largest 100% ViT (averaged over its seeds) minus the ResNet > 2 SE",
            f"{vit_middle.value:.2%} ({', '.join(f'{middle[r].value:.2%}' for r in large)}) vs {middle['resnet'].value:.2%} (ResNet)",
            vit_middle - middle["resnet"], random,
            baseline_measured=f"{middle['random_vit_large'].value:.2%} vs {middle['random_resnet'].value:.2%}" if random else ""))
    return Section(figures=figures, baseline_figures=baseline_figures, numbers=numbers, findings=findings,
                   text="10-shot ridge probes on the spatial-token mean (global average pool for CNNs) of every block (Raghu et al. 2021, §8, Fig. 13).")


LARGE_ROLES = ("vit_large", "vit_large_frac10", "vit_large_seed1")
#: the zoo ViT's twins, trained by its recipe with one factor changed: compared with it only when they come from one source
DATA_TWINS = Cohort("vit", {"vit_frac30": "30%-data twin", "vit_frac10": "10%-data twin", "vit_frac03": "3%-data twin", "vit_seed1": "second-seed twin"})
LARGE_TWINS = Cohort("vit_large", {"vit_large_frac10": "10%-data twin", "vit_large_seed1": "second-seed twin"})


def steps(models: Mapping[str, str], random_init: Callable[[str], str]) -> list[StudyStep]:
    """The RQ4 steps; each needs reduced-data twins the paper trained itself, so a preset without them plans them as skipped."""
    vit, cnn = models["vit"], models["resnet"]
    fractions = {role: models[role] for role in FRACTION_ROLES if role in models}
    need_fractions = tuple(fractions) or FRACTION_ROLES
    seed = {"vit_seed1": models["vit_seed1"]} if "vit_seed1" in models else {}
    large = {role: models[role] for role in ("vit_large", "vit_large_frac10") if role in models}
    seeds = {role: models[role] for role in ("vit_seed1", "vit_large_seed1") if role in models}
    randoms = {"random_resnet": random_init(cnn)}
    if "vit_large" in models:
        randoms["random_vit_large"] = random_init(models["vit_large"])
    return [
        StudyStep("rq4_data_scale", "RQ4", "Data scale: per-block CKA against the 100% model (Fig 12)", "data_scale",
                  {"vit": vit, **dict(reversed(list(fractions.items()))), **seed}, data_scale_section("data_scale"),
                  params={"reference": "vit", "seed_twin": "vit_seed1"}, baselines={"vit_seed1": "second seed of vit"},
                  required=("vit", "vit_seed1", *need_fractions), cohorts=(DATA_TWINS,)),
        StudyStep("rq4_data_scale_large", "RQ4", "Data scale of the larger ViT (Fig 12, second model size)", "data_scale",
                  {role: models[role] for role in LARGE_ROLES if role in models},
                  data_scale_section("data_scale_large"), params={"reference": "vit_large", "seed_twin": "vit_large_seed1"},
                  baselines={"vit_large_seed1": "second seed of vit_large"}, required=LARGE_ROLES, cohorts=(LARGE_TWINS,)),
        StudyStep("rq4_attention_distance", "RQ4", "Attention distance and training data (Fig 4)", "attention_distance",
                  {"vit": vit, **fractions, **seed}, fraction_attention_section, baselines={"vit_seed1": "second seed of vit"},
                  required=("vit", *need_fractions), cohorts=(DATA_TWINS,)),
        StudyStep("rq4_probes", "RQ4", "Few-shot probes per layer and training data (Fig 13)", "probes",
                  {"vit": vit, **fractions, **large, "resnet": cnn, **seeds, **randoms}, probe_comparison_section,
                  params={"full_data": False, "readouts": "gap", "shots": 10, "samples": 5},
                  baselines={**{role: f"second seed of {role.replace('_seed1', '')}" for role in seeds},
                             **{role: f"random init of {role.removeprefix('random_')}" for role in randoms}},
                  required=("vit", *need_fractions), cohorts=(DATA_TWINS, LARGE_TWINS)),
    ]
