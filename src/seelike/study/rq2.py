"""RQ2: how do self-attention and skip connections shape information flow? (Fig 3, 5, 6, 7, 8)

Uncertainty: the analyses' bootstrap draws over images (attention distance, ERF radii and shares,
skip ratios), the delta-method SE of CKA cells (Fig 5, 8), the binomial SE of test accuracies (Fig 8).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import numpy as np

from seelike.analyses.attention_distance import LOCAL_FRACTION, MAX_PREFIX_MASS, uniform_attention_distance
from seelike.plots import cka_heatmaps
from seelike.results import ResultBundle
from seelike.similarity import CKAResult
from seelike.study.common import CKADraws, baseline_heatmaps, bootstrap_quantity, is_baseline, png, rounded, save_per_role, save_png, split_saved
from seelike.study.engine import Cohort, Section, StudyStep
from seelike.study.verdicts import Quantity, judge

ZOO_TEST_IMAGES = 10_000  # the zoo manifests' test accuracies are measured on the whole Fashion-MNIST test split
MIN_HEADS = 8  # Fig 5: fewer heads in the block cannot be ranked meaningfully (windows of H/4 heads, sliding by one)
MIN_HEAD_SPAN = 0.1  # Fig 5: ... nor heads whose distances span less than this fraction of the uniform distance


# -- Fig 3: attention distance -------------------------------------------------------------------------------
def local_share_quantity(result: Any, block: int) -> Quantity:
    """Share of local heads of ``block`` (renormalised distance < LOCAL_FRACTION × uniform, prefix mass < MAX_PREFIX_MASS), with bootstrap draws."""
    if np.isnan(result["renormalised"][block]).all() or np.isnan(result["prefix_mass"][block]).all():  # padded Swin heads aside
        return Quantity(float("nan"), np.full(len(result["renormalised_bootstrap"]), np.nan))
    return Quantity(float(result.local_share()[block]), result.local_share_draws()[:, block])


def heads_text(result: Any, block: int) -> str:
    """Each head's distance with its prefix-token mass beside it: '13.1 px (CLS 0.05)'."""
    return ", ".join(f"{d:.1f} px (prefix {p:.2f})" for d, p in zip(result.distance[block], result["prefix_mass"][block]))


def attention_section(bundle: ResultBundle, names: Mapping[str, str], figures_dir: Path | None) -> Section:
    results = bundle.unbundle()
    figures, baseline_figures = save_per_role(results, figures_dir,
                                              lambda role, r, folder: save_png(r, folder / "rq2" / f"attention_{names[role]}"))
    numbers: dict[str, Any] = {}
    for role, r in results.items():
        numbers[f"mean_distance_px[{names[role]}]"] = rounded(r.distance.mean(axis=1), 3)
        numbers[f"distance_se_px[{names[role]}]"] = rounded(r["distance_se"].mean(axis=1), 3)
        numbers[f"share_local[{names[role]}]"] = rounded(r.local_share(), 3)
        numbers[f"prefix_mass[{names[role]}]"] = rounded(r["prefix_mass"].mean(axis=1), 3)
    findings = []
    if "vit" in results:
        r, random = results["vit"], results.get("random_vit")

        def globality(result: Any) -> Quantity:
            return bootstrap_quantity(result, "distance", lambda d: d[-1].mean() - d[0].mean())

        uniform = r.uniform_distance
        findings.append(judge(
            "Higher blocks attend more globally than lower blocks (Fig 3)",
            "mean attention distance of the last block minus the first block's > 2 SE (SE: bootstrap over images)",
            f"first block {r.distance[0].mean():.2f} px, last block {r.distance[-1].mean():.2f} px (uniform attention: {uniform:.1f} px)",
            globality(r), globality(random) if random else None,
            baseline_measured=f"first {random.distance[0].mean():.2f} px, last {random.distance[-1].mean():.2f} px" if random else ""))

        def mix(result: Any) -> Quantity:
            return local_share_quantity(result, 0) - local_share_quantity(result, -1)

        findings.append(judge(
            "Lowest blocks mix local and global heads, top blocks have only global heads (Fig 3; needs large-scale pre-training)",
            f"share of local heads (renormalised distance < {LOCAL_FRACTION:g} × the uniform {uniform:.1f} px and prefix mass < {MAX_PREFIX_MASS:g}) "
            "in the first block minus the last block's > 2 SE",
            f"local heads: first {r.local_share()[0]:.0%}, last {r.local_share()[-1]:.0%}; first-block heads {heads_text(r, 0)}",
            mix(r), mix(random) if random else None,
            baseline_measured=f"local heads: first {random.local_share()[0]:.0%}, last {random.local_share()[-1]:.0%}" if random else ""))
    return Section(figures=figures, baseline_figures=baseline_figures, numbers=numbers, findings=findings,
                   text="Mean attention distance per head (Raghu et al. 2021, §5.1): prefix tokens dropped as queries and keys, not renormalised; "
                        "the attention mass on prefix tokens beside each head. Uncertainty: bootstrap over images.")


# -- Fig 6: effective receptive fields ---------------------------------------------------------------------
def erf_quantity(result: Any, name: str, layer: int) -> Quantity:
    """An ERF radius or share of one layer (index into the result's layers) with its bootstrap draws."""
    return bootstrap_quantity(result, name, lambda values: values[layer])


def first_block(result: Any) -> int:
    """Index of block 0's output in an ERF result that starts with the embedding."""
    return 1 if result.metadata.get("embedding") else 0


def receptive_field_section(bundle: ResultBundle, names: Mapping[str, str], figures_dir: Path | None) -> Section:
    results = bundle.unbundle()
    figures, baseline_figures = save_per_role(results, figures_dir,
                                              lambda role, r, folder: save_png(r, folder / "rq2" / f"erf_{names[role]}"))
    numbers: dict[str, Any] = {}
    for role, r in results.items():
        for key in ("radius_50", "radius_90", "outside_patch"):
            if key in r.arrays:
                numbers[f"{key}[{names[role]}]"] = rounded(r[key], 3)
                numbers[f"{key}_se[{names[role]}]"] = rounded(r[f"{key}_se"], 3)
        numbers[f"layers[{names[role]}]"] = list(r.layer_names)
    findings = []
    vit, cnn = results.get("vit"), results.get("resnet")
    if vit is not None and cnn is not None:
        v0, c0 = first_block(vit), first_block(cnn)

        def radius_gap(result: Any, layer: int) -> Quantity:
            return erf_quantity(result, "radius_90", layer) - erf_quantity(cnn, "radius_90", c0)

        findings.append(judge(
            "ViT receptive fields are larger than ResNet's in the lowest layers (Fig 6)",
            "90%-mass radius of the ViT's first block minus the ResNet's first unit > 2 SE; baseline: the ViT's patch embedding alone "
            "(patchification by itself gives a field the size of a patch)",
            f"{vit['radius_90'][v0]:.2f} px (ViT block 0) vs {cnn['radius_90'][c0]:.2f} px (ResNet unit 0)",
            radius_gap(vit, v0), radius_gap(vit, 0) if v0 == 1 else None, baseline_kind="patch embedding",
            baseline_measured=f"{vit['radius_90'][0]:.2f} px (patch embedding) vs {cnn['radius_90'][c0]:.2f} px" if v0 == 1 else ""))
        if "outside_patch" in vit.arrays and "outside_patch" in cnn.arrays:
            def outside_gap(v: Any, c: Any) -> Quantity:
                return erf_quantity(v, "outside_patch", first_block(v)) - erf_quantity(c, "outside_patch", first_block(c))

            rv, rc = results.get("random_vit"), results.get("random_resnet")
            patch = vit.metadata.get("patch_size")
            findings.append(judge(
                "A ViT's first block already mixes in other patches, more than a ResNet's first unit reaches (Fig 6)",
                f"share of ERF mass outside the centre's own {patch}×{patch} patch: ViT block 0 minus ResNet unit 0 > 2 SE "
                "(the patch embedding alone has 0 by construction)",
                f"{vit['outside_patch'][v0]:.3f} (ViT block 0; patch embedding {vit['outside_patch'][0]:.3f}) vs {cnn['outside_patch'][c0]:.3f} (ResNet unit 0)",
                outside_gap(vit, cnn), outside_gap(rv, rc) if rv is not None and rc is not None else None,
                baseline_measured=f"{rv['outside_patch'][first_block(rv)]:.3f} vs {rc['outside_patch'][first_block(rc)]:.3f}" if rv is not None and rc is not None else ""))

        def growth(result: Any) -> Quantity:
            start = first_block(result)

            def statistic(radii: np.ndarray) -> float:
                radii = radii[start:]
                if len(radii) < 2:
                    return float("nan")
                return float(np.min([radii[-1] - radii[0], np.min(np.diff(radii)) + 0.5]))  # NaN propagates

            return bootstrap_quantity(result, "radius_50", statistic)

        rc = results.get("random_resnet")
        findings.append(judge(
            "ResNet receptive fields grow gradually with depth (Fig 6)",
            "min(last − first 50%-mass radius, smallest step + 0.5 px) of the ResNet's units > 2 SE (grows, never shrinks by more than 0.5 px)",
            f"ResNet radii {', '.join(f'{x:.1f}' for x in cnn['radius_50'][c0:])} px",
            growth(cnn), growth(rc) if rc is not None else None,
            baseline_measured=f"radii {', '.join(f'{x:.1f}' for x in rc['radius_50'][first_block(rc):])} px" if rc is not None else ""))
    channel = next(iter(results.values())).metadata.get("channel_average")
    return Section(figures=figures, baseline_figures=baseline_figures, numbers=numbers, findings=findings,
                   text=f"Effective receptive fields |∂y_c(centre)/∂x| after the residual add, channels averaged by one estimator for every model "
                        f"({channel}), patch embedding first, normalised to [0, 1] (Raghu et al. 2021, §5.3). Uncertainty: bootstrap over the images.")


# -- Fig 7: skip connections -------------------------------------------------------------------------------
def vit_skip_ratio(result: Any) -> Quantity:
    """Median ‖skip‖/‖branch‖ over a ViT's blocks, attention and MLP, spatial tokens."""
    value = float(np.nanmedian(np.concatenate([result["attention_spatial"], result["mlp_spatial"]])))
    draws = np.nanmedian(np.concatenate([result["attention_spatial_bootstrap"], result["mlp_spatial_bootstrap"]], axis=1), axis=1)
    return Quantity(value, draws)


def cnn_skip_ratio(result: Any) -> Quantity:
    """Median ‖shortcut‖/‖branch‖ over a ResNet's units; inf where the branches are exactly zero
    (a zero-initialised last norm at random init: the skip is all there is)."""
    return Quantity(float(np.nanmedian(result["shortcut_over_branch"])), np.nanmedian(result["shortcut_over_branch_bootstrap"], axis=1))


def phase_change(result: Any) -> Quantity:
    """Mean log(CLS ratio / spatial ratio) of the MLP skips, first half of the blocks minus the second half (Fig 7)."""
    def statistic(cls: np.ndarray, spatial: np.ndarray) -> float:
        gap = np.log(cls) - np.log(spatial)
        half = len(gap) // 2
        return float(np.nanmean(gap[:half]) - np.nanmean(gap[half:]))

    draws = np.array([statistic(c, s) for c, s in zip(result["mlp_cls_bootstrap"], result["mlp_spatial_bootstrap"])])
    return Quantity(statistic(result["mlp_cls"], result["mlp_spatial"]), draws)


def skips_section(bundle: ResultBundle, names: Mapping[str, str], figures_dir: Path | None) -> Section:
    results = bundle.unbundle()
    trained = [r for role, r in results.items() if not is_baseline(role)]
    baselines = [r for role, r in results.items() if is_baseline(role)]
    figures = [] if figures_dir is None else png(save_png(trained, figures_dir / "rq2"))
    baseline_figures = [] if figures_dir is None or not baselines else png(save_png(baselines, figures_dir / "rq2", names={"skip_norms": "skip_norms_baselines"}))
    numbers = {f"{label}[{names[role]}]": rounded(line, 3) for role, r in results.items() for label, line in r.lines().items()}
    findings = []
    if "vit" in results and "resnet" in results:
        def dominance(vit: Any, cnn: Any) -> Quantity:
            return vit_skip_ratio(vit) - cnn_skip_ratio(cnn)

        rv, rc = results.get("random_vit"), results.get("random_resnet")
        v, c = vit_skip_ratio(results["vit"]), cnn_skip_ratio(results["resnet"])
        baseline = dominance(rv, rc) if rv is not None and rc is not None else None
        findings.append(judge(
            "Skip connections dominate more in ViT than in ResNet (Fig 7)",
            "median ‖skip‖/‖branch‖ over the ViT's blocks (spatial tokens) minus the ResNet's > 2 SE (SE: bootstrap over images)",
            f"{v.value:.2f} (ViT) vs {c.value:.2f} (ResNet)", dominance(results["vit"], results["resnet"]), baseline,
            baseline_measured=(f"{vit_skip_ratio(rv).value:.2f} vs {cnn_skip_ratio(rc).value:.2f}"
                               + (" (its branches start at zero)" if np.isinf(cnn_skip_ratio(rc).value) else "")) if baseline else ""))
        if "mlp_cls" in results["vit"].arrays:
            random = rv if rv is not None and "mlp_cls" in rv.arrays else None
            findings.append(judge(
                "Phase change: the CLS token is carried by the skip path early and changed by the MLPs late, spatial tokens the reverse (Fig 7)",
                "mean log(CLS ratio / spatial ratio) of the MLP skips, first half of the blocks minus the second half > 2 SE",
                f"{phase_change(results['vit']).value:.2f}", phase_change(results["vit"]), phase_change(random) if random else None,
                baseline_measured=f"{phase_change(random).value:.2f}" if random else ""))
    return Section(figures=figures, baseline_figures=baseline_figures, numbers=numbers, findings=findings,
                   text="Ratio of the norms of the skip path and the branch per block (Raghu et al. 2021, §6); CLS = token 0, spatial = mean over the rest. "
                        "Uncertainty: bootstrap over images.")


# -- Fig 5: local heads against lower CNN layers ---------------------------------------------------------------
def spearman_quantity(result: Any, key: str) -> Quantity:
    """−(mean Spearman over CNN units) with normal draws from the Fisher-z SE 1.06/√(k − 3) over k windows."""
    spearman = np.asarray(result["spearman"], dtype=float)
    windows = len(result["window_distance"]) if "window_distance" in result.arrays else len(result["head_distance"])
    se = 1.06 / np.sqrt(max(windows - 3, 1)) / np.sqrt(max(np.isfinite(spearman).sum(), 1))
    return Quantity.normal(lambda s: -float(np.nanmean(s)), np.array(np.nanmean(spearman)), np.array(se), "spearman", key)


def head_similarity_section(bundle: ResultBundle, names: Mapping[str, str], figures_dir: Path | None) -> Section:
    results = bundle.unbundle()
    result = results["vit"]
    figures = [] if figures_dir is None else png(save_png(result, figures_dir / "rq2" / "heads"))
    numbers = {"spearman[windows]": rounded(result["spearman"], 3), "spearman[single heads]": rounded(result["spearman_single_heads"], 3),
               "head_distance_px": rounded(result["head_distance"], 3)}
    heads, distance = len(result["head_distance"]), np.asarray(result["head_distance"])
    uniform = uniform_attention_distance(tuple(result.metadata["grid"]), int(result.metadata["patch_size"]))
    span = float(np.ptp(distance))
    degenerate = ""
    if heads < MIN_HEADS:
        degenerate = f"{heads} heads in the block; ranking windows of heads needs at least {MIN_HEADS}"
    elif span < MIN_HEAD_SPAN * uniform:
        degenerate = f"the heads' distances span {span:.2f} px, under {MIN_HEAD_SPAN:.0%} of the uniform distance ({uniform:.1f} px)"
    random = results.get("random_vit")
    if random is not None:
        numbers["spearman[windows, random-init ViT]"] = rounded(random["spearman"], 3)
    findings = [judge(
        "Local heads of the first ViT block resemble lower CNN layers more than global heads do (Fig 5)",
        f"minus the mean over lower ResNet units of the Spearman correlation between window distance and CKA > 2 SE (Fisher-z SE); "
        f"not measured below {MIN_HEADS} heads or when the heads span less than {MIN_HEAD_SPAN:.0%} of the uniform distance",
        f"Spearman {np.nanmean(result['spearman']):.2f} over {heads} heads spanning {span:.2f} px",
        spearman_quantity(result, "vit"), spearman_quantity(random, "random") if random is not None else None,
        baseline_measured=f"Spearman {np.nanmean(random['spearman']):.2f}" if random is not None else "", degenerate=degenerate)]
    return Section(figures=figures, numbers=numbers, findings=findings,
                   text="Windows of consecutive heads of the first block, sorted by attention distance, against the lower ResNet units by minibatch CKA (Raghu et al. 2021, §5.2).")


# -- Fig 8: no skips --------------------------------------------------------------------------------------
#: Fig 6: exact per-channel ERF gradients (one backward pass per channel) while every model's layers have at most
#: this many channels in all (the zoo's: 672); the paper's models (ViT-B/16: 9,984, ResNet-50: ~15,000) use the
#: gradient of the channel sum, recorded in the result (the paper's ERF method: "exact where affordable")
ERF_EXACT_LIMIT = 2048
NOSKIP_BLOCKS = {"vit_noskip_early": 1, "vit_noskip_mid": 3}  # the block whose two skips the zoo's no-skip models lack


def noskip_section(result: CKAResult, names: Mapping[str, str], figures_dir: Path | None) -> Section:
    from seelike.analyses.skip_norms import neighbour_cka
    from seelike.models.zoo import manifests

    seed = names.get("vit_seed1")
    shown = [name for name, (model, other) in cka_heatmaps(result).items() if other is None]
    saved = {} if figures_dir is None else save_png(result, figures_dir / "rq2" / "noskip", names=shown)
    figures, baseline_figures = split_saved(saved, baseline_heatmaps(result, names))
    draws = CKADraws(result, "rq2_no_skip")
    shipped = manifests()
    numbers: dict[str, Any] = {}
    findings = []
    reference = names["vit"]
    for role, block in NOSKIP_BLOCKS.items():
        name = names.get(role)
        if name is None or name not in result.models:
            continue

        def neighbour(model: str) -> Quantity:
            return draws.quantity(lambda r, m: _neighbour(r, m, model, block))

        without, with_skips = neighbour_cka(result, name, block), neighbour_cka(result, reference, block)
        numbers[f"cka(block {block - 1}, block {block + 1})[{name}]"] = rounded(without)
        numbers[f"cka(block {block - 1}, block {block + 1})[{reference}]"] = rounded(with_skips)
        seed_twin = seed if seed in result.models else None
        if seed_twin:
            numbers[f"cka(block {block - 1}, block {block + 1})[{seed}]"] = rounded(neighbour_cka(result, seed, block))
        findings.append(judge(
            f"Removing both skips of block {block} splits the CKA heatmap there (Fig 8)",
            f"CKA between blocks {block - 1} and {block + 1}: with skips minus without > 2 SE and > the same difference between two seeds with skips",
            f"{without:.3f} without vs {with_skips:.3f} with skips",
            neighbour(reference) - neighbour(name), (neighbour(reference) - neighbour(seed_twin)) if seed_twin else None,
            baseline_kind="second seed", baseline_measured=f"second seed with skips: {neighbour_cka(result, seed_twin, block):.3f}" if seed_twin else ""))
        spec_names = {role_: names[role_] for role_ in ("vit", role, "vit_seed1") if role_ in names}
        if all(n in shipped for n in (spec_names.get("vit"), spec_names.get(role))):
            findings.append(accuracy_cost(shipped, spec_names["vit"], spec_names[role], spec_names.get("vit_seed1"), block))
    return Section(figures=figures, baseline_figures=baseline_figures, numbers=numbers, findings=findings,
                   text="ViTs trained with both skip connections of one block removed (Raghu et al. 2021, §6, Fig. 8).")


def _neighbour(result: CKAResult, matrix: np.ndarray, model: str, block: int) -> float:
    from seelike.analyses.skip_norms import neighbour_cka

    return neighbour_cka(CKAResult(arrays={**result.arrays, "cka": matrix}, metadata=result.metadata), model, block)


def accuracy_cost(shipped: Mapping[str, Mapping[str, Any]], reference: str, name: str, seed: str | None, block: int):
    """Fig 8's accuracy claim from the zoo manifests' test accuracies (binomial SE on 10,000 images; seed-to-seed difference as baseline)."""
    def accuracy(model: str) -> Quantity:
        return Quantity.accuracy(shipped[model]["test_accuracy"], ZOO_TEST_IMAGES, "accuracy", model)

    cost = accuracy(reference) - accuracy(name)
    seed_gap = (accuracy(reference) - accuracy(seed)) if seed in shipped else None
    return judge(
        f"Removing the skips of a block costs accuracy (Fig 8: ≈4% for a middle block; block {block})",
        f"test accuracy with the skips minus without > 2 SE (binomial, {ZOO_TEST_IMAGES} test images) and > the difference between two seeds",
        f"{shipped[name]['test_accuracy']:.2%} without vs {shipped[reference]['test_accuracy']:.2%} with skips (cost {cost.value:.2%})",
        cost, seed_gap, baseline_kind="second seed",
        baseline_measured=f"second seed {shipped[seed]['test_accuracy']:.2%} (difference {seed_gap.value:.2%})" if seed_gap else "")


def steps(models: Mapping[str, str], random_init: Callable[[str], str]) -> list[StudyStep]:
    vit, gap, cnn = models["vit"], models["vit_gap"], models["resnet"]
    random_vit, random_cnn = random_init(vit), random_init(cnn)
    baselines = {"random_vit": "random init of vit", "random_resnet": "random init of resnet"}
    found = [
        StudyStep("rq2_attention_distance", "RQ2", "How far each head looks (Fig 3)", "attention_distance",
                  {"vit": vit, "vit_gap": gap, "random_vit": random_vit}, attention_section,
                  baselines={"random_vit": baselines["random_vit"]}, required=("vit",)),
        StudyStep("rq2_receptive_fields", "RQ2", "Effective receptive fields (Fig 6)", "receptive_field",
                  {"vit": vit, "resnet": cnn, "random_vit": random_vit, "random_resnet": random_cnn}, receptive_field_section,
                  params={"channels": "auto", "exact_limit": ERF_EXACT_LIMIT}, baselines={**baselines, "vit": "its patch embedding alone (first layer of the ViT's ERF)"},
                  required=("vit", "resnet")),
        StudyStep("rq2_skip_norms", "RQ2", "What the skip connections carry (Fig 7)", "skip_norms",
                  {"vit": vit, "resnet": cnn, "random_vit": random_vit, "random_resnet": random_cnn}, skips_section,
                  baselines=baselines, required=("vit", "resnet")),
        StudyStep("rq2_local_heads", "RQ2", "Local heads against lower ResNet layers (Fig 5)", "head_similarity",
                  {"vit": vit, "resnet": cnn, "random_vit": random_vit}, head_similarity_section,
                  params={"cnn": "resnet"}, baselines={"random_vit": baselines["random_vit"]}, required=("vit", "resnet")),
    ]
    noskip = {role: models[role] for role in NOSKIP_BLOCKS if role in models}
    seed = {"vit_seed1": models["vit_seed1"]} if "vit_seed1" in models else {}
    found.append(StudyStep("rq2_no_skip", "RQ2", "ViTs with the skips of one block removed (Fig 8)", "cka", {"vit": vit, **noskip, **seed},
                           noskip_section, baselines={"vit_seed1": "second seed of vit"}, required=("vit", *(noskip or NOSKIP_BLOCKS)),
                           cohorts=(Cohort("vit", {**{role: "skip-removed twin" for role in NOSKIP_BLOCKS}, "vit_seed1": "second-seed twin"}),)))
    return found
