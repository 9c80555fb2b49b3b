"""The studies ``seelike study`` runs: the steps of each preset and how each becomes a report section.

Every finding is computed from the step's saved result by a rule written next to the claim,
and is reported as held / not held at this scale, with a baseline beside it where the step
measures one: the same architecture at random init, or a second seed of the 100% model (the
noise level of data-scale and no-skip comparisons). Nothing here is asserted in advance.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from seelike.models.model import Model, unique_names
from seelike.plots import heatmap_figures
from seelike.results import Result, ResultBundle
from seelike.similarity import CKAResult
from seelike.study import Finding, Section, StudySettings, StudyStep, verdict


# -- RQ1: layer similarity within and across models (Fig 1, 2) --------------------------------------
def cka_run(layers: str = "blocks") -> Callable[[dict[str, Model], Any, StudySettings], CKAResult]:
    def run(models: dict[str, Model], dataset: Any, settings: StudySettings) -> CKAResult:
        from seelike.analyses.layer_similarity import layer_similarity

        return layer_similarity(list(models.values()), dataset, n=settings.n, batch_size=settings.batch_size, layers=layers, seed=settings.seed)

    return run


def uniformity(result: CKAResult, model: str) -> float:
    """Mean CKA between distinct layers of one model: high means uniform representations (Fig 1)."""
    matrix = result.block(model)[0]
    return float(matrix[~np.eye(len(matrix), dtype=bool)].mean())


def best_match_depth(cross: np.ndarray) -> np.ndarray:
    """For each column layer (e.g. ResNet), the relative depth in [0, 1] of its most similar row layer (e.g. ViT)."""
    return cross.argmax(axis=0) / max(1, cross.shape[0] - 1)


def rq1_section(vit: str, cnn: str, random_vit: str, random_cnn: str) -> Callable[[CKAResult, Path], Section]:
    def section(result: CKAResult, figures_dir: Path) -> Section:
        figures = [paths[0] for paths in heatmap_figures(result, figures_dir / "rq1").values()]
        numbers: dict[str, Any] = {f"uniformity[{m}]": round(uniformity(result, m), 4) for m in result.models}
        models = result.models
        findings = []
        if vit in models and cnn in models:
            u_vit, u_cnn = uniformity(result, vit), uniformity(result, cnn)
            baseline = ""
            if random_vit in models and random_cnn in models:
                baseline = f"random init: {uniformity(result, random_vit):.3f} vs {uniformity(result, random_cnn):.3f}"
            findings.append(Finding(
                "ViT layers are more uniformly similar to each other than ResNet layers (Fig 1); rule: mean off-diagonal CKA of the ViT > the ResNet's",
                f"{u_vit:.3f} (ViT) vs {u_cnn:.3f} (ResNet)", verdict(u_vit > u_cnn, u_vit, u_cnn), baseline))
            cross = result.block(vit, cnn)[0]
            depth = best_match_depth(cross)
            half = cross.shape[1] // 2
            lower, upper = float(depth[:half].mean()), float(depth[half:].mean())
            numbers.update({"best_match_vit_depth[lower half of resnet]": round(lower, 3),
                            "best_match_vit_depth[upper half of resnet]": round(upper, 3)})
            findings.append(Finding(
                "The lower half of ResNet layers is most similar to the lowest ViT layers (Fig 2); rule: their best-matching ViT layers lie in the lower half of the ViT (mean relative depth < 0.5) and below those of the upper half",
                f"mean relative depth of best ViT match: {lower:.2f} (lower ResNet half), {upper:.2f} (upper half)",
                verdict(lower < 0.5 and lower < upper, lower, upper)))
            top = max(1, cross.shape[0] // 3)
            top_best, rest_best = float(cross[-top:].max(axis=1).mean()), float(cross[:-top].max(axis=1).mean())
            numbers.update({"top_third_vit_best_cka": round(top_best, 4), "lower_vit_best_cka": round(rest_best, 4)})
            findings.append(Finding(
                "The top ViT layers match no ResNet layer well (Fig 2); rule: mean best CKA of the top third of ViT layers against any ResNet layer < that of the other ViT layers",
                f"{top_best:.3f} (top third) vs {rest_best:.3f} (rest)", verdict(top_best < rest_best, top_best, rest_best)))
        return Section(figures=figures, numbers=numbers, findings=findings,
                       text=f"Minibatch CKA (unbiased HSIC) between block outputs, n={result.metadata.get('n')}, batch {result.metadata.get('batch_size')}.")

    return section


# -- RQ5: MLP-Mixer against ViT and ResNet (appendix H) -------------------------------------------------
def best_match_cka(result: CKAResult, model: str, other: str) -> float:
    """Mean over ``model``'s layers of its best CKA against any layer of ``other`` (appendix H)."""
    return float(result.block(model, other)[0].max(axis=1).mean())


def rq5_section(mixer: str, vit: str, cnn: str, random_mixer: str) -> Callable[[CKAResult, Path], Section]:
    def section(result: CKAResult, figures_dir: Path) -> Section:
        figures = [paths[0] for key, paths in heatmap_figures(result, figures_dir / "rq5").items()
                   if mixer in key.split("_vs_") and random_mixer not in key.split("_vs_")]
        numbers: dict[str, Any] = {}
        findings = []
        if {mixer, vit, cnn} <= set(result.models):
            to_vit, to_cnn = best_match_cka(result, mixer, vit), best_match_cka(result, mixer, cnn)
            numbers.update({"mixer_best_cka_vs_vit": round(to_vit, 4), "mixer_best_cka_vs_resnet": round(to_cnn, 4),
                            f"uniformity[{mixer}]": round(uniformity(result, mixer), 4)})
            baseline = ""
            if random_mixer in result.models:
                random_vit, random_cnn = best_match_cka(result, random_mixer, vit), best_match_cka(result, random_mixer, cnn)
                numbers.update({"random_mixer_best_cka_vs_vit": round(random_vit, 4), "random_mixer_best_cka_vs_resnet": round(random_cnn, 4)})
                baseline = f"random-init Mixer: {random_vit:.3f} (vs ViT) vs {random_cnn:.3f} (vs ResNet)"
            findings.append(Finding(
                "MLP-Mixer representations resemble ViT more than ResNet (appendix H); rule: mean over Mixer blocks of the best CKA against any ViT block > against any ResNet unit",
                f"{to_vit:.3f} (vs ViT) vs {to_cnn:.3f} (vs ResNet)", verdict(to_vit > to_cnn, to_vit, to_cnn), baseline))
        return Section(figures=figures, numbers=numbers, findings=findings,
                       text="Mixer, ViT and ResNet in one pass of the CKA engine (one forward pass per model per batch).")

    return section


# -- shared helpers for the steps below ---------------------------------------------------------------------
def per_model(analysis: Callable[[Model, Any, StudySettings], Result]) -> Callable[[dict[str, Model], Any, StudySettings], ResultBundle]:
    """Run a one-model analysis on every model of a step and keep the results together, by model name."""

    def run(models: dict[str, Model], dataset: Any, settings: StudySettings) -> ResultBundle:
        return ResultBundle.of({model.name: analysis(model, dataset, settings) for model in models.values()})

    return run


def _figure(paths: dict[str, list[Path]] | list[Path]) -> list[Path]:
    """The PNG of each saved figure (save_figure writes PNG and SVG)."""
    groups = paths.values() if isinstance(paths, dict) else [paths]
    return [path for group in groups for path in group if path.suffix == ".png"]


def _fmt(values: Any) -> str:
    return ", ".join(f"{float(v):.2f}" for v in np.atleast_1d(values))


# -- RQ2: attention distance (Fig 3), receptive fields (Fig 6), skips (Fig 7, 8), local heads (Fig 5) -------
def attention_run(model: Model, dataset: Any, settings: StudySettings) -> Result:
    from seelike.analyses.attention_distance import attention_distances

    return attention_distances(model, dataset, n=settings.n, batch_size=settings.batch_size, seed=settings.seed)


def local_share(result: Any) -> np.ndarray:
    """Share of heads per block attending more locally than half the uniform-attention distance."""
    return result.share_below(0.5 * float(result.metadata["uniform_distance"]))


def attention_section(vit: str, random_vit: str) -> Callable[[ResultBundle, Path], Section]:
    def section(bundle: ResultBundle, figures_dir: Path) -> Section:
        from seelike.plots import attention_distance_figures

        results = bundle.unbundle()
        figures = [p for name, r in results.items() for p in _figure(attention_distance_figures(r, figures_dir / "rq2" / f"attention_{name}"))]
        numbers: dict[str, Any] = {}
        for name, r in results.items():
            numbers[f"mean_distance_px[{name}]"] = _fmt(r.distance.mean(axis=1))
            numbers[f"share_below_half_width[{name}]"] = _fmt(r.share_below(r.image_width / 2))
            numbers[f"share_local[{name}]"] = _fmt(local_share(r))
        findings = []
        if vit in results:
            r = results[vit]
            random = results.get(random_vit)
            first, last = r.distance[0], r.distance[-1]
            baseline = f"random init: first {random.distance[0].mean():.1f} px, last {random.distance[-1].mean():.1f} px" if random else ""
            findings.append(Finding(
                "Higher blocks attend globally (Fig 3); rule: mean attention distance of the last block > the first block's",
                f"first block {first.mean():.1f} px, last block {last.mean():.1f} px (uniform attention: {r.metadata['uniform_distance']:.1f} px)",
                verdict(last.mean() > first.mean(), first, last), baseline))
            findings.append(Finding(
                "Lowest blocks mix local and global heads, top blocks have only global heads (Fig 3; needs large-scale pre-training); rule: "
                "the first block has a head below half the uniform distance, the last block none, and the first block's distance range is wider than the last block's",
                f"local heads: first {local_share(r)[0]:.0%}, last {local_share(r)[-1]:.0%}; range first {np.ptp(first):.1f} px, last {np.ptp(last):.1f} px",
                verdict(local_share(r)[0] > 0 and local_share(r)[-1] == 0 and np.ptp(first) > np.ptp(last), first, last)))
        return Section(figures=figures, numbers=numbers, findings=findings,
                       text="Mean attention distance per head (PAPER.md §2): prefix tokens dropped as queries and keys, not renormalised.")

    return section


def receptive_field_run(model: Model, dataset: Any, settings: StudySettings) -> Result:
    from seelike.analyses.receptive_field import effective_receptive_fields

    # exact per-channel gradients for every model, so that ViT and ResNet radii are the same estimator
    return effective_receptive_fields(model, dataset, n=32, batch_size=32, channels="exact", seed=settings.seed)


def receptive_field_section(vit: str, cnn: str) -> Callable[[ResultBundle, Path], Section]:
    def section(bundle: ResultBundle, figures_dir: Path) -> Section:
        from seelike.plots import receptive_field_figures

        results = bundle.unbundle()
        figures = [p for name, r in results.items() for p in _figure(receptive_field_figures(r, figures_dir / "rq2" / f"erf_{name}"))]
        numbers = {f"radius_50_px[{name}]": _fmt(r["radius_50"]) for name, r in results.items()}
        numbers.update({f"radius_90_px[{name}]": _fmt(r["radius_90"]) for name, r in results.items()})
        findings = []
        if vit in results and cnn in results:
            v, c = results[vit]["radius_50"], results[cnn]["radius_50"]
            findings.append(Finding(
                "ViT receptive fields are larger than ResNet's in the lowest layers (Fig 6); rule: 50%-mass radius of the ViT's first block > the ResNet's first unit",
                f"{v[0]:.1f} px (ViT) vs {c[0]:.1f} px (ResNet)", verdict(bool(v[0] > c[0]), v[0], c[0])))
            findings.append(Finding(
                "ResNet receptive fields grow gradually with depth (Fig 6); rule: the ResNet's 50%-mass radius never shrinks by more than 0.5 px from one unit to the next and ends larger than it starts",
                f"ResNet radii {_fmt(c)} px", verdict(bool(np.all(np.diff(c) > -0.5) and c[-1] > c[0]), c)))
        return Section(figures=figures, numbers=numbers, findings=findings,
                       text="Effective receptive fields |∂y_c(centre)/∂x| after the residual add, exact per-channel gradients averaged over channels, 32 images, normalised to [0, 1] (PAPER.md §4).")

    return section


def skips_run(model: Model, dataset: Any, settings: StudySettings) -> Result:
    from seelike.analyses.skip_norms import skip_norm_ratios

    return skip_norm_ratios(model, dataset, n=settings.n, batch_size=settings.batch_size, seed=settings.seed)


def vit_skip_ratio(result: Any) -> float:
    """Median ‖skip‖/‖branch‖ over a ViT's blocks, attention and MLP, spatial tokens."""
    return float(np.nanmedian(np.concatenate([result["attention_spatial"], result["mlp_spatial"]])))


def cnn_skip_ratio(result: Any) -> float:
    """Median ‖shortcut‖/‖branch‖ over a ResNet's units; inf where the branches are exactly zero
    (a zero-initialised last norm at random init: the skip is all there is)."""
    return float(np.nanmedian(result["shortcut_over_branch"]))


def phase_change(result: Any) -> tuple[float, float]:
    """Mean log(CLS ratio / spatial ratio) of the MLP skips over the first and the second half of the blocks (Fig 7)."""
    gap = np.log(result["mlp_cls"]) - np.log(result["mlp_spatial"])
    half = len(gap) // 2
    return float(np.nanmean(gap[:half])), float(np.nanmean(gap[half:]))


def skips_section(vit: str, cnn: str, random_vit: str, random_cnn: str) -> Callable[[ResultBundle, Path], Section]:
    def section(bundle: ResultBundle, figures_dir: Path) -> Section:
        from seelike.plots import plot_skip_norms, save_figure

        results = bundle.unbundle()
        trained = [r for name, r in results.items() if name not in (random_vit, random_cnn)]
        figures = _figure(save_figure(plot_skip_norms(trained), figures_dir / "rq2" / "skip_norms"))
        numbers = {f"{label}[{name}]": _fmt(line) for name, r in results.items() for label, line in r.lines().items()}
        findings = []
        if vit in results and cnn in results:
            v, c = results[vit], results[cnn]
            vit_ratio, cnn_ratio = vit_skip_ratio(v), cnn_skip_ratio(c)
            baseline = ""
            if random_vit in results and random_cnn in results:
                random_cnn_ratio = cnn_skip_ratio(results[random_cnn])
                note = " (its branches start at zero)" if np.isinf(random_cnn_ratio) else ""
                baseline = f"random init: {vit_skip_ratio(results[random_vit]):.2f} (ViT) vs {random_cnn_ratio:.2f} (ResNet{note})"
            findings.append(Finding(
                "Skip connections dominate more in ViT than in ResNet (Fig 7); rule: median ‖skip‖/‖branch‖ over the ViT's blocks (spatial tokens) > the ResNet's",
                f"{vit_ratio:.2f} (ViT) vs {cnn_ratio:.2f} (ResNet)", verdict(vit_ratio > cnn_ratio, vit_ratio, cnn_ratio), baseline))
            if "mlp_cls" in v.arrays:
                early, late = phase_change(v)
                baseline = ""
                if random_vit in results and "mlp_cls" in results[random_vit].arrays:
                    baseline = "random-init ViT: {:.2f} vs {:.2f}".format(*phase_change(results[random_vit]))
                findings.append(Finding(
                    "Phase change: the CLS token is carried by the skip path early and changed by the MLPs late, spatial tokens the reverse (Fig 7); "
                    "rule: log(CLS ratio / spatial ratio) of the MLP skips is higher in the first half of the blocks than in the second",
                    f"mean log ratio {early:.2f} (first half) vs {late:.2f} (second half)", verdict(early > late, early, late), baseline))
        return Section(figures=figures, numbers=numbers, findings=findings,
                       text="Ratio of the norms of the skip path and the branch per block (PAPER.md §5); CLS = token 0, spatial = mean over the rest.")

    return section


def head_similarity_run(models: dict[str, Model], dataset: Any, settings: StudySettings) -> ResultBundle:
    """Heads of the trained ViT against the CNN, and of its random-init twin (the chance level of the
    rank correlation, which with a handful of heads is far from 0) when that is given third."""
    from seelike.analyses.head_similarity import head_similarity

    vit, cnn, *random = list(models.values())
    pairs = {"trained": vit, **({"random init": random[0]} if random else {})}
    return ResultBundle.of({key: head_similarity(model, cnn, dataset, n=settings.n, batch_size=settings.batch_size, seed=settings.seed)
                            for key, model in pairs.items()})


def head_similarity_section(bundle: ResultBundle, figures_dir: Path) -> Section:
    from seelike.plots import head_similarity_figures

    results = bundle.unbundle()
    result = results["trained"]
    figures = _figure(head_similarity_figures(result, figures_dir / "rq2" / "heads"))
    spearman = result["spearman"]
    numbers = {"spearman[windows]": _fmt(spearman), "spearman[single heads]": _fmt(result["spearman_single_heads"]),
               "head_distance_px": _fmt(result["head_distance"])}
    mean = float(np.nanmean(spearman))
    baseline, chance = "", 0.0
    if "random init" in results:
        random_spearman = results["random init"]["spearman"]
        random_mean = float(np.nanmean(random_spearman))
        chance = min(0.0, random_mean)
        numbers["spearman[windows, random-init ViT]"] = _fmt(random_spearman)
        baseline = f"random-init ViT: Spearman {random_mean:.2f}"
    findings = [Finding(
        "Local heads of the first ViT block resemble lower CNN layers more than global heads do (Fig 5); rule: mean over lower ResNet units "
        "of the Spearman correlation between window distance and CKA < 0 and below the random-init ViT's",
        f"Spearman {mean:.2f} over {len(result['head_distance'])} heads (per unit: {_fmt(spearman)})", verdict(mean < chance, mean, chance), baseline)]
    return Section(figures=figures, numbers=numbers, findings=findings,
                   text="Windows of consecutive heads of the first block, sorted by attention distance, against the lower ResNet units by minibatch CKA (PAPER.md §3).")


def noskip_section(reference: str, removed: dict[str, int], seed: str | None = None) -> Callable[[CKAResult, Path], Section]:
    """The Fig 8 section; ``seed`` (a second-seed ``reference``) gives the with-skips values their seed-to-seed spread."""

    def section(result: CKAResult, figures_dir: Path) -> Section:
        from seelike.analyses.skip_norms import neighbour_cka
        from seelike.models.zoo import manifests

        figures = [paths[0] for key, paths in heatmap_figures(result, figures_dir / "rq2" / "noskip").items() if "_vs_" not in key and key != seed]
        shipped = manifests()
        numbers: dict[str, Any] = {}
        findings = []
        for name, block in removed.items():
            if name not in result.models:
                continue
            without, with_skips = neighbour_cka(result, name, block), neighbour_cka(result, reference, block)
            numbers[f"cka(block {block - 1}, block {block + 1})[{name}]"] = round(without, 4)
            numbers[f"cka(block {block - 1}, block {block + 1})[{reference}]"] = round(with_skips, 4)
            baseline = ""
            if seed is not None and seed in result.models:
                seed_cka = neighbour_cka(result, seed, block)
                numbers[f"cka(block {block - 1}, block {block + 1})[{seed}]"] = round(seed_cka, 4)
                baseline = f"second-seed ViT with skips: {seed_cka:.3f}"
            findings.append(Finding(
                f"Removing both skips of block {block} splits the CKA heatmap there (Fig 8); rule: CKA between blocks {block - 1} and {block + 1} is lower without the skips",
                f"{without:.3f} without vs {with_skips:.3f} with skips", verdict(without < with_skips, without, with_skips), baseline))
            if {name, reference} <= set(shipped):
                findings.append(_accuracy_cost(shipped, name, reference, block, seed))
        return Section(figures=figures, numbers=numbers, findings=findings,
                       text="ViTs trained with both skip connections of one block removed (PAPER.md §5, Fig 8).")

    return section


def _accuracy_cost(shipped: dict[str, dict], name: str, reference: str, block: int, seed: str | None) -> Finding:
    """Fig 8's accuracy claim, from the zoo manifests' test accuracies; the seed-to-seed difference is the noise level."""
    cost = shipped[reference]["test_accuracy"] - shipped[name]["test_accuracy"]
    noise = abs(shipped[reference]["test_accuracy"] - shipped[seed]["test_accuracy"]) if seed in shipped else 0.0
    return Finding(
        f"Removing the skips of a block costs accuracy (Fig 8: ≈4% for a middle block); rule: test accuracy without the skips of block {block} "
        "is lower than with them by more than the difference between two seeds",
        f"{shipped[name]['test_accuracy']:.2%} without vs {shipped[reference]['test_accuracy']:.2%} with skips (cost {cost:.2%})",
        verdict(cost > noise, cost), f"seed-to-seed difference {noise:.2%}" if seed in shipped else "")


# -- RQ3: localization (Fig 9, 10) and probes (Fig 11) --------------------------------------------------------
def localization_run(model: Model, dataset: Any, settings: StudySettings) -> Result:
    from seelike.analyses.localization import spatial_localization

    return spatial_localization(model, dataset, n=settings.n, batch_size=settings.batch_size, seed=settings.seed)


def localization_section(vit: str, gap: str, cnn: str, random_vit: str) -> Callable[[ResultBundle, Path], Section]:
    def section(bundle: ResultBundle, figures_dir: Path) -> Section:
        from seelike.plots import plot_localization, save_figure

        results = bundle.unbundle()
        figures = [p for name, r in results.items() if name != random_vit
                   for p in _figure(save_figure(plot_localization(r), figures_dir / "rq3" / f"localization_{name}"))]
        numbers = {}
        for name, r in results.items():
            for index, layer in enumerate(r.layers):
                numbers[f"share_first[{name}/{layer}]"] = round(float(r["share_first"][index]), 4)
                numbers[f"diagonal_gap[{name}/{layer}]"] = round(float(r["diagonal_gap"][index]), 4)
        findings = []
        gaps = {name: float(r["diagonal_gap"][0]) for name, r in results.items()}  # the penultimate block: first layer by default
        baseline = f"random-init ViT: {gaps[random_vit]:.3f}" if random_vit in gaps else ""
        if vit in gaps and gap in gaps:
            findings.append(Finding(
                "CLS-trained ViT tokens localize more clearly than GAP-trained ViT tokens (Fig 9, 10); rule: diagonal-minus-off-diagonal CKA at the penultimate block is larger for the CLS model",
                f"{gaps[vit]:.3f} (CLS) vs {gaps[gap]:.3f} (GAP)", verdict(gaps[vit] > gaps[gap], gaps[vit], gaps[gap]), baseline))
        if vit in gaps and cnn in gaps:
            findings.append(Finding(
                "ResNet top layers localize less than CLS ViT tokens (Fig 10); rule: diagonal gap at the penultimate unit of the ResNet < the CLS ViT's",
                f"{gaps[cnn]:.3f} (ResNet) vs {gaps[vit]:.3f} (CLS ViT)", verdict(gaps[cnn] < gaps[vit], gaps[cnn], gaps[vit]), baseline))
        return Section(figures=figures, numbers=numbers, findings=findings,
                       text="CKA over images between a token at position p and the input patch at every q, at the penultimate and last blocks (PAPER.md §6).")

    return section


PROBE_TRAIN_IMAGES = 10_000


def probes_run(model: Model, dataset: Any, settings: StudySettings) -> Result:
    from seelike.analyses.probes import probe_layers
    from seelike.data import load_dataset

    train_set = load_dataset(settings.data, split="train")
    return probe_layers(model, train_set, dataset, n_train=min(PROBE_TRAIN_IMAGES, len(train_set)), n_test=settings.n, batch_size=settings.batch_size,
                        readouts="all", shots=10, samples=5, seed=settings.seed)


def probes_section(vit: str, gap: str, cnn: str, random_vit: str) -> Callable[[ResultBundle, Path], Section]:
    def section(bundle: ResultBundle, figures_dir: Path) -> Section:
        from seelike.plots import plot_probes, save_figure

        results = bundle.unbundle()
        figures = [p for name, r in results.items() if name != random_vit
                   for p in _figure(save_figure(plot_probes(r), figures_dir / "rq3" / f"probes_{name}"))]
        numbers = {}
        for name, r in results.items():
            for readout in r.readouts:
                if readout != "tokens":
                    numbers[f"probe_accuracy[{name}/{readout}]"] = _fmt(r.curve(readout)[0])
            if "token_accuracy" in r.arrays:
                numbers[f"token_probe_accuracy[{name}]"] = _fmt(np.nanmean(r["token_accuracy"], axis=1))
        findings = []
        token = {name: np.nanmean(r["token_accuracy"], axis=1) for name, r in results.items() if "token_accuracy" in r.arrays}
        random = results.get(random_vit)
        if vit in token and gap in token:
            baseline = f"random-init CLS ViT: {token[random_vit][-1]:.2%}" if random_vit in token else ""
            findings.append(Finding(
                "Per-token probes stay low at the top of CLS models and rise high in GAP models (Fig 11 left); rule: last-block per-token accuracy of the GAP ViT > the CLS ViT's",
                f"{token[gap][-1]:.2%} (GAP) vs {token[vit][-1]:.2%} (CLS)", verdict(token[gap][-1] > token[vit][-1], token[gap][-1], token[vit][-1]), baseline))
        if vit in results and {"cls", "gap"} <= set(results[vit].readouts):
            cls_curve, pooled = results[vit].curve("cls")[0], results[vit].curve("gap")[0]
            baseline = ""
            if random is not None and {"cls", "gap"} <= set(random.readouts):
                baseline = f"random init: {random.curve('cls')[0][-1]:.2%} (CLS token) vs {random.curve('gap')[0][-1]:.2%} (spatial mean)"
            findings.append(Finding(
                "In a CLS model the pooled spatial-token readout falls behind the CLS readout in the last blocks (Fig 11 right); rule: last-block accuracy via the CLS token > via the mean of spatial tokens",
                f"{cls_curve[-1]:.2%} (CLS token) vs {pooled[-1]:.2%} (spatial mean)", verdict(cls_curve[-1] > pooled[-1], cls_curve[-1], pooled[-1]), baseline))
        if gap in results and {"first", "gap"} <= set(results[gap].readouts):
            lag = results[gap].curve("gap")[0] - results[gap].curve("first")[0]
            early = float(lag[: max(1, len(lag) // 2)].mean())
            findings.append(Finding(
                "In a GAP model the first-token readout catches up with the mean only at the top (Fig 11 right); rule: the mean readout's lead over the "
                "first token is larger over the first half of the blocks than at the last block",
                f"lead {early:.2%} (first half) vs {lag[-1]:.2%} (last block)", verdict(early > lag[-1], early, lag[-1])))
        return Section(figures=figures, numbers=numbers, findings=findings,
                       text=f"Closed-form ridge probes on {PROBE_TRAIN_IMAGES} training images, scored on the test images; few-shot: 10 per class, 5 samples (PAPER.md §7).")

    return section


# -- RQ4: data scale (Fig 4, 12, 13) ------------------------------------------------------------------------
def data_scale_run(models: dict[str, Model], dataset: Any, settings: StudySettings) -> Result:
    from seelike.analyses.data_scale import data_scale

    reference, *others, baseline = list(models.values())
    return data_scale(reference, others, baseline, dataset, n=settings.n, batch_size=settings.batch_size, seed=settings.seed)


def data_scale_section(figure: str) -> Callable[[Any, Path], Section]:
    """The Fig 12 section; ``figure`` names its image so that both model sizes keep theirs."""

    def section(result: Any, figures_dir: Path) -> Section:
        from seelike.plots import plot_data_scale, save_figure

        figures = _figure(save_figure(plot_data_scale(result), figures_dir / "rq4" / figure))
        numbers = {f"per_block_cka[{m}]": _fmt(row) for m, row in zip(result.models, result["per_block_cka"])}
        numbers["per_block_cka[seed baseline]"] = _fmt(result["baseline"])
        numbers.update({f"changed_blocks[{m}]": str(result.changed_blocks(m)) for m in result.models})
        smallest = result.models[0]
        row, seed = result["per_block_cka"][0], result["baseline"]
        drop_first, drop_last = seed[0] - row[0], seed[-1] - row[-1]
        findings = [Finding(
            "Lower blocks are already similar with little data; higher blocks need more (Fig 12); rule: for the smallest-data model, "
            "the fall of its CKA to the 100% model below the seed baseline is larger at the last block than at the first",
            f"{smallest}: CKA first block {row[0]:.3f}, last block {row[-1]:.3f}; seed baseline {seed[0]:.3f} → {seed[-1]:.3f} "
            f"(fall below it {drop_first:.3f} → {drop_last:.3f})",
            verdict(bool(drop_last > drop_first), row, seed),
            baseline=f"changed beyond 2 SE of the seed baseline: blocks {result.changed_blocks(smallest)}")]
        return Section(figures=figures, numbers=numbers, findings=findings,
                       text="Per-block CKA of ViTs trained on less data against the 100% model, beside a second-seed 100% model (PAPER.md §7).")

    return section


def fraction_attention_section(models: list[str], seed: str | None = None) -> Callable[[ResultBundle, Path], Section]:
    """The Fig 4 section; ``models`` from the most to the least data, ``seed`` a second-seed 100% model."""

    def section(bundle: ResultBundle, figures_dir: Path) -> Section:
        from seelike.plots import plot_attention_distance_depth, save_figure

        results = bundle.unbundle()
        figures = [p for name, r in results.items() if name != seed
                   for p in _figure(save_figure(plot_attention_distance_depth(r), figures_dir / "rq4" / f"attention_{name}"))]
        numbers = {f"share_local_first_block[{name}]": round(float(local_share(r)[0]), 4) for name, r in results.items()}
        numbers.update({f"mean_distance_first_block_px[{name}]": round(float(r.distance[0].mean()), 3) for name, r in results.items()})
        findings = []
        present = [m for m in models if m in results]
        if len(present) >= 2:
            full, least = present[0], present[-1]
            baseline = ""
            if seed in results:
                baseline = f"second-seed 100% ViT: {local_share(results[seed])[0]:.0%} local, {results[seed].distance[0].mean():.1f} px"
            findings.append(Finding(
                "With less pre-training data, lower blocks learn fewer local heads (Fig 4; a scale effect that may not show at this size); rule: the first block "
                "has a larger share of local heads (below half the uniform distance) in the 100% model than in the smallest-data model",
                f"local heads in the first block: {local_share(results[full])[0]:.0%} ({full}) vs {local_share(results[least])[0]:.0%} ({least}); "
                f"mean distance {results[full].distance[0].mean():.1f} vs {results[least].distance[0].mean():.1f} px",
                verdict(local_share(results[full])[0] > local_share(results[least])[0], results[full].distance[0], results[least].distance[0]), baseline))
        return Section(figures=figures, numbers=numbers, findings=findings,
                       text="Mean attention distance per head of ViTs trained on 100% and less of the data (PAPER.md §2, Fig 4).")

    return section


def middle_accuracy(curve: np.ndarray) -> float:
    """Mean probe accuracy over the middle half of the blocks (Fig 13's intermediate layers)."""
    middle = slice(len(curve) // 4, max(len(curve) // 4 + 1, 3 * len(curve) // 4))
    return float(curve[middle].mean())


def probe_comparison_section(series: list[list[str]], seeds: list[str | None], cnn: str) -> Callable[[ResultBundle, Path], Section]:
    """The Fig 13 section. ``series`` lists each model size's ViTs from the most to the least data (base size
    first); ``seeds[i]`` is a second-seed twin of ``series[i][0]``, the noise level of that size's comparison."""

    def section(bundle: ResultBundle, figures_dir: Path) -> Section:
        from seelike.plots import plot_probe_comparison, save_figure

        results = bundle.unbundle()
        shown = [r for name, r in results.items() if name not in seeds]
        figures = _figure(save_figure(plot_probe_comparison(shown, readout="gap", regime="few_shot"), figures_dir / "rq4" / "probes"))
        middle = {name: middle_accuracy(r.curve("gap", "few_shot")[0]) for name, r in results.items()}
        numbers = {f"few_shot_accuracy[{name}]": _fmt(r.curve("gap", "few_shot")[0]) for name, r in results.items()}
        numbers.update({f"few_shot_accuracy_middle_blocks[{name}]": round(value, 4) for name, value in middle.items()})
        findings = []
        for models, seed in zip(series, seeds):
            present = [m for m in models if m in middle]
            if len(present) < 2:
                continue
            full, least = present[0], present[-1]
            noise = abs(middle[full] - middle[seed]) if seed in middle else 0.0
            baseline = f"second seed of {full}: {middle[seed]:.2%} (seed-to-seed difference {noise:.2%})" if seed in middle else ""
            findings.append(Finding(
                f"More pre-training data gives stronger intermediate layers (Fig 13 left; {full}); rule: mean 10-shot accuracy over the "
                "middle blocks of the 100% model exceeds the smallest-data model's of the same size by more than the difference between two seeds",
                f"{middle[full]:.2%} ({full}) vs {middle[least]:.2%} ({least})",
                verdict(middle[full] - middle[least] > noise, middle[full], middle[least]), baseline))
        size = next(((models[0], seed) for models, seed in reversed(list(zip(series, seeds))) if models and models[0] in middle), None)
        if size is not None and cnn in middle:
            largest = [name for name in size if name in middle]  # the largest 100% ViT and its second seed, averaged
            vit_middle = float(np.mean([middle[name] for name in largest]))
            findings.append(Finding(
                f"Larger ViTs have stronger intermediate layers than ResNets (Fig 13 right; {' and '.join(largest)}); rule: mean 10-shot accuracy "
                "over the middle blocks of the largest 100% ViT (averaged over its seeds) > over the middle units of the ResNet",
                f"{vit_middle:.2%} ({', '.join(f'{middle[name]:.2%}' for name in largest)}) vs {middle[cnn]:.2%} ({cnn})",
                verdict(vit_middle > middle[cnn], vit_middle, middle[cnn])))
        return Section(figures=figures, numbers=numbers, findings=findings,
                       text="10-shot ridge probes on the spatial-token mean (global average pool for CNNs) of every block (PAPER.md §7, Fig 13).")

    return section


def few_shot_probes_run(model: Model, dataset: Any, settings: StudySettings) -> Result:
    from seelike.analyses.probes import probe_layers
    from seelike.data import load_dataset

    return probe_layers(model, load_dataset(settings.data, split="train"), dataset, n_train=0, n_test=settings.n,
                        batch_size=settings.batch_size, readouts="gap", shots=10, samples=5, seed=settings.seed)


# -- presets ----------------------------------------------------------------------------------------------
#: Each preset names a model per role; ``seelike study --models ROLE=SPEC`` replaces any of them.
ZOO_MODELS = {
    "vit": "zoo:vit-cls",
    "vit_gap": "zoo:vit-gap",
    "resnet": "zoo:resnet",
    "mixer": "zoo:mixer",
    "vit_seed1": "zoo:vit-cls-seed1",
    "vit_noskip_early": "zoo:vit-cls-noskip-early",
    "vit_noskip_mid": "zoo:vit-cls-noskip-mid",
    "vit_frac30": "zoo:vit-cls-frac30",
    "vit_frac10": "zoo:vit-cls-frac10",
    "vit_frac03": "zoo:vit-cls-frac03",
    "vit_large": "zoo:vit-cls-large",
    "vit_large_frac10": "zoo:vit-cls-large-frac10",
    "vit_large_seed1": "zoo:vit-cls-large-seed1",
}
PAPER_MODELS = {
    "vit": "timm:vit_base_patch16_224.augreg_in21k?pretrained=1",
    "vit_gap": "timm:vit_base_patch16_224.augreg_in21k?pretrained=1&global_pool=avg&class_token=0",
    "resnet": "timm:resnetv2_50x1_bit.goog_in21k?pretrained=1",
    "mixer": "timm:mixer_b16_224.goog_in21k?pretrained=1",
}
PRESET_MODELS = {"zoo": ZOO_MODELS, "paper": PAPER_MODELS}
#: the block whose two skip connections the no-skip models lack (zoo recipes: the second and the middle block)
NOSKIP_BLOCKS = {"vit_noskip_early": 1, "vit_noskip_mid": 3}
PRESET_SETTINGS = {
    "zoo": StudySettings(data="fashion-mnist", n=5000, batch_size=500),
    "paper": StudySettings(data="imagefolder:~/imagenet/val", n=10240, batch_size=1024),
}


def random_init(spec: str) -> str:
    """The same architecture without trained weights: the baseline every finding is compared with."""
    body, _, query = spec.partition("?")
    options = [item for item in query.split("&") if item and not item.startswith(("pretrained=", "init="))]
    return f"{body}?{'&'.join([*options, 'init=random'])}"


def build_steps(models: dict[str, str]) -> list[StudyStep]:
    """The study's steps over the models named per role (PAPER.md: RQ1-RQ5).

    Sections find models by the names the study gives them: distinct short names over the specs its
    steps use (:func:`~seelike.models.model.unique_names`), so a draft of the steps says which those are.
    """
    draft = _steps(models, unique_names([*models.values(), *(random_init(spec) for spec in models.values())]))
    return _steps(models, unique_names([spec for step in draft for spec in step.models]))


def _steps(models: dict[str, str], by_spec: dict[str, str]) -> list[StudyStep]:
    vit, gap, cnn, mixer = models["vit"], models["vit_gap"], models["resnet"], models["mixer"]
    fractions = [models[role] for role in ("vit_frac30", "vit_frac10", "vit_frac03") if role in models]
    names = {role: by_spec[spec] for role, spec in models.items() if spec in by_spec}
    v, g, c = names["vit"], names["vit_gap"], names["resnet"]
    random_vit, random_cnn, random_mixer = random_init(vit), random_init(cnn), random_init(mixer)
    rv, rc = by_spec[random_vit], by_spec[random_cnn]
    seed = models.get("vit_seed1")
    steps = [
        StudyStep("rq1_layer_similarity", "RQ1", "Layer similarity within and across ViT and ResNet (Fig 1, 2)",
                  (vit, cnn, random_vit, random_cnn), cka_run(), rq1_section(v, c, rv, rc),
                  optional_models=True),
        StudyStep("rq2_attention_distance", "RQ2", "How far each head looks (Fig 3)", (vit, gap, random_vit),
                  per_model(attention_run), attention_section(v, rv), optional_models=True),
        StudyStep("rq2_receptive_fields", "RQ2", "Effective receptive fields (Fig 6)", (vit, cnn), per_model(receptive_field_run),
                  receptive_field_section(v, c), optional_models=True),
        StudyStep("rq2_skip_norms", "RQ2", "What the skip connections carry (Fig 7)", (vit, cnn, random_vit, random_cnn),
                  per_model(skips_run), skips_section(v, c, rv, rc), optional_models=True, required_models=(vit, cnn)),
        StudyStep("rq2_local_heads", "RQ2", "Local heads against lower ResNet layers (Fig 5)", (vit, cnn, random_vit),
                  head_similarity_run, head_similarity_section, optional_models=True, required_models=(vit, cnn)),
        StudyStep("rq3_localization", "RQ3", "Spatial localization: CLS vs GAP ViT vs ResNet (Fig 9, 10)", (vit, gap, cnn, random_vit),
                  per_model(localization_run), localization_section(v, g, c, rv), optional_models=True),
        StudyStep("rq3_probes", "RQ3", "Probes per token and per readout (Fig 11)", (vit, gap, cnn, random_vit),
                  per_model(probes_run), probes_section(v, g, c, rv), optional_models=True),
        StudyStep("rq5_mixer", "RQ5", "MLP-Mixer against ViT and ResNet (appendix H)", (mixer, vit, cnn, random_mixer),
                  cka_run(), rq5_section(names["mixer"], v, c, by_spec[random_mixer]), optional_models=True, required_models=(mixer, vit, cnn)),
    ]
    if "vit_noskip_early" in models or "vit_noskip_mid" in models:
        removed = {names[role]: NOSKIP_BLOCKS[role] for role in NOSKIP_BLOCKS if role in models}
        specs = tuple(models[role] for role in NOSKIP_BLOCKS if role in models)
        steps.insert(5, StudyStep("rq2_no_skip", "RQ2", "ViTs with the skips of one block removed (Fig 8)", (vit, *specs, *([seed] if seed else [])),
                                  cka_run(), noskip_section(v, removed, names.get("vit_seed1")), optional_models=True))
    fraction_names = [by_spec[f] for f in fractions]
    if fractions and seed:
        steps.append(StudyStep("rq4_data_scale", "RQ4", "Data scale: per-block CKA against the 100% model (Fig 12)",
                               (vit, *fractions[::-1], seed), data_scale_run, data_scale_section("data_scale"),
                               optional_models=True, required_models=(vit, seed)))
    if {"vit_large", "vit_large_frac10", "vit_large_seed1"} <= set(models):
        steps.append(StudyStep("rq4_data_scale_large", "RQ4", "Data scale of the larger ViT (Fig 12, second model size)",
                               (models["vit_large"], models["vit_large_frac10"], models["vit_large_seed1"]), data_scale_run,
                               data_scale_section("data_scale_large")))
    large_roles = [role for role in ("vit_large", "vit_large_frac10") if role in models]
    seeds = [role for role in ("vit_seed1", "vit_large_seed1") if role in models]
    if fractions:
        steps += [
            StudyStep("rq4_attention_distance", "RQ4", "Attention distance and training data (Fig 4)", (vit, *fractions, *([seed] if seed else [])),
                      per_model(attention_run), fraction_attention_section([v, *fraction_names], names.get("vit_seed1")), optional_models=True),
            StudyStep("rq4_probes", "RQ4", "Few-shot probes per layer and training data (Fig 13)",
                      (vit, *fractions, *(models[role] for role in large_roles), cnn, *(models[role] for role in seeds)),
                      per_model(few_shot_probes_run),
                      probe_comparison_section([[v, *fraction_names], [names[role] for role in large_roles]],
                                               [names.get("vit_seed1"), names.get("vit_large_seed1")], c),
                      optional_models=True, required_models=(vit,)),
        ]
    return steps
