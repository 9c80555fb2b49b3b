"""RQ5: what follows for other architectures (MLP-Mixer)? (appendix H)

Baseline: a random-init Mixer compared with the same trained ViT and ResNet. Uncertainty: normal draws
of every CKA cell from its delta-method SE.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from seelike.cka_statistics import best_match_cka, uniformity
from seelike.plots import cka_heatmaps
from seelike.similarity import CKAResult
from seelike.study.common import CKADraws, baseline_heatmaps, rounded, save_png, split_saved
from seelike.study.engine import Section, StudyStep
from seelike.study.verdicts import judge


def section(result: CKAResult, names: Mapping[str, str], figures_dir: Path | None) -> Section:
    mixer, vit, cnn, random = (names.get(role) for role in ("mixer", "vit", "resnet", "random_mixer"))
    mixers = {name for name in (mixer, random) if name}
    shown = [name for name, pair in cka_heatmaps(result).items() if mixers & set(pair)]
    saved = {} if figures_dir is None else save_png(result, figures_dir / "rq5", names=shown)
    figures, baseline_figures = split_saved(saved, baseline_heatmaps(result, names))
    numbers: dict[str, Any] = {}
    findings = []
    if {mixer, vit, cnn} <= set(result.models):
        draws = CKADraws(result, "rq5")

        def closer_to_vit(model: str):
            return draws.quantity(lambda r, m: best_match_cka(r, m, model, vit) - best_match_cka(r, m, model, cnn))

        to_vit, to_cnn = best_match_cka(result, result.matrix, mixer, vit), best_match_cka(result, result.matrix, mixer, cnn)
        numbers.update({"mixer_best_cka_vs_vit": rounded(to_vit), "mixer_best_cka_vs_resnet": rounded(to_cnn),
                        f"uniformity[{mixer}]": rounded(uniformity(result, result.matrix, mixer))})
        has_random = random in result.models
        if has_random:
            numbers.update({"random_mixer_best_cka_vs_vit": rounded(best_match_cka(result, result.matrix, random, vit)),
                            "random_mixer_best_cka_vs_resnet": rounded(best_match_cka(result, result.matrix, random, cnn))})
        findings.append(judge(
            "MLP-Mixer representations resemble ViT more than ResNet (appendix H)",
            "mean over Mixer blocks of the best CKA against any ViT block minus against any ResNet unit > 2 SE",
            f"{to_vit:.3f} (vs ViT) vs {to_cnn:.3f} (vs ResNet)", closer_to_vit(mixer), closer_to_vit(random) if has_random else None,
            baseline_measured=(f"random-init Mixer: {numbers['random_mixer_best_cka_vs_vit']:.3f} vs {numbers['random_mixer_best_cka_vs_resnet']:.3f}"
                               if has_random else "")))
    return Section(figures=figures, baseline_figures=baseline_figures, numbers=numbers, findings=findings,
                   text="Mixer, ViT and ResNet in one pass of the CKA engine (one forward pass per model per batch).")


def steps(models: Mapping[str, str], random_init: Callable[[str], str]) -> list[StudyStep]:
    return [StudyStep("rq5_mixer", "RQ5", "MLP-Mixer against ViT and ResNet (appendix H)", "cka",
                      {"mixer": models["mixer"], "vit": models["vit"], "resnet": models["resnet"], "random_mixer": random_init(models["mixer"])},
                      section, baselines={"random_mixer": "random init of mixer"}, required=("mixer", "vit", "resnet"))]
