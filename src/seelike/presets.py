"""The studies ``seelike study`` runs: the steps of each preset and how each becomes a report section.

Every finding is computed from the step's saved result by a rule written next to the claim,
and is reported as held / not held at this scale, with the random-init value beside it where
the step measures one. Nothing here is asserted in advance.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from seelike.models.model import Model, short_name
from seelike.plots import heatmap_figures
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


def rq1_section(vit: str, cnn: str) -> Callable[[CKAResult, Path], Section]:
    def section(result: CKAResult, figures_dir: Path) -> Section:
        figures = [paths[0] for paths in heatmap_figures(result, figures_dir / "rq1").values()]
        numbers: dict[str, Any] = {f"uniformity[{m}]": round(uniformity(result, m), 4) for m in result.models}
        models = result.models
        findings = []
        random_vit, random_cnn = f"{vit}-random", f"{cnn}-random"
        if vit in models and cnn in models:
            u_vit, u_cnn = uniformity(result, vit), uniformity(result, cnn)
            baseline = ""
            if random_vit in models and random_cnn in models:
                baseline = f"random init: {uniformity(result, random_vit):.3f} vs {uniformity(result, random_cnn):.3f}"
            findings.append(Finding(
                "ViT layers are more uniformly similar to each other than ResNet layers (Fig 1); rule: mean off-diagonal CKA of the ViT > the ResNet's",
                f"{u_vit:.3f} (ViT) vs {u_cnn:.3f} (ResNet)", verdict(u_vit > u_cnn), baseline))
            cross = result.block(vit, cnn)[0]
            depth = best_match_depth(cross)
            half = cross.shape[1] // 2
            lower, upper = float(depth[:half].mean()), float(depth[half:].mean())
            numbers.update({"best_match_vit_depth[lower half of resnet]": round(lower, 3),
                            "best_match_vit_depth[upper half of resnet]": round(upper, 3)})
            findings.append(Finding(
                "The lower half of ResNet layers is most similar to the lowest ViT layers (Fig 2); rule: their best-matching ViT layers lie in the lower half of the ViT (mean relative depth < 0.5) and below those of the upper half",
                f"mean relative depth of best ViT match: {lower:.2f} (lower ResNet half), {upper:.2f} (upper half)",
                verdict(lower < 0.5 and lower < upper)))
            top = max(1, cross.shape[0] // 3)
            top_best, rest_best = float(cross[-top:].max(axis=1).mean()), float(cross[:-top].max(axis=1).mean())
            numbers.update({"top_third_vit_best_cka": round(top_best, 4), "lower_vit_best_cka": round(rest_best, 4)})
            findings.append(Finding(
                "The top ViT layers match no ResNet layer well (Fig 2); rule: mean best CKA of the top third of ViT layers against any ResNet layer < that of the other ViT layers",
                f"{top_best:.3f} (top third) vs {rest_best:.3f} (rest)", verdict(top_best < rest_best)))
        return Section(figures=figures, numbers=numbers, findings=findings,
                       text=f"Minibatch CKA (unbiased HSIC) between block outputs, n={result.metadata.get('n')}, batch {result.metadata.get('batch_size')}.")

    return section


# -- RQ5: MLP-Mixer against ViT and ResNet (appendix H) -------------------------------------------------
def rq5_section(mixer: str, vit: str, cnn: str) -> Callable[[CKAResult, Path], Section]:
    def section(result: CKAResult, figures_dir: Path) -> Section:
        figures = [paths[0] for key, paths in heatmap_figures(result, figures_dir / "rq5").items() if mixer in key]
        numbers: dict[str, Any] = {}
        findings = []
        if {mixer, vit, cnn} <= set(result.models):
            to_vit = float(result.block(mixer, vit)[0].max(axis=1).mean())
            to_cnn = float(result.block(mixer, cnn)[0].max(axis=1).mean())
            numbers.update({"mixer_best_cka_vs_vit": round(to_vit, 4), "mixer_best_cka_vs_resnet": round(to_cnn, 4),
                            f"uniformity[{mixer}]": round(uniformity(result, mixer), 4)})
            findings.append(Finding(
                "MLP-Mixer representations resemble ViT more than ResNet (appendix H); rule: mean over Mixer blocks of the best CKA against any ViT block > against any ResNet unit",
                f"{to_vit:.3f} (vs ViT) vs {to_cnn:.3f} (vs ResNet)", verdict(to_vit > to_cnn)))
        return Section(figures=figures, numbers=numbers, findings=findings,
                       text="Mixer, ViT and ResNet in one pass of the CKA engine (one forward pass per model per batch).")

    return section


# -- presets ----------------------------------------------------------------------------------------------
#: Each preset names a model per role; ``seelike study --models ROLE=SPEC`` replaces any of them.
ZOO_MODELS = {
    "vit": "zoo:vit-cls",
    "vit_gap": "zoo:vit-gap",
    "resnet": "zoo:resnet",
    "mixer": "zoo:mixer",
}
PAPER_MODELS = {
    "vit": "timm:vit_base_patch16_224.augreg_in21k?pretrained=1",
    "vit_gap": "timm:vit_base_patch16_224.augreg_in21k?pretrained=1&global_pool=avg&class_token=0",
    "resnet": "timm:resnetv2_50x1_bit.goog_in21k?pretrained=1",
    "mixer": "timm:mixer_b16_224.goog_in21k?pretrained=1",
}
PRESET_MODELS = {"zoo": ZOO_MODELS, "paper": PAPER_MODELS}
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
    """The study's steps over the models named per role."""
    vit, cnn, mixer = models["vit"], models["resnet"], models["mixer"]
    return [
        StudyStep("rq1_layer_similarity", "RQ1", "Layer similarity within and across ViT and ResNet (Fig 1, 2)",
                  (vit, cnn, random_init(vit), random_init(cnn)), cka_run(), rq1_section(short_name(vit), short_name(cnn)),
                  optional_models=True),
        StudyStep("rq5_mixer", "RQ5", "MLP-Mixer against ViT and ResNet (appendix H)", (mixer, vit, cnn), cka_run(),
                  rq5_section(short_name(mixer), short_name(vit), short_name(cnn))),
    ]
