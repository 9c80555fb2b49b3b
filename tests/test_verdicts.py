"""Issue 14: every rule of the study, judged on constructed results in four situations.

For each rule: the claim holds beyond noise and the baseline does not (held); both meet it (also at
baseline); the trained value is inside its noise (not held); the quantity is degenerate or NaN (not
measured). Results are built by hand with small, known uncertainties, and passed through the same
section functions the study uses (without drawing figures).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from seelike.analyses.attention_distance import AttentionDistanceResult
from seelike.analyses.data_scale import DataScaleResult
from seelike.analyses.head_similarity import HeadSimilarityResult
from seelike.analyses.localization import LocalizationResult
from seelike.analyses.probes import ProbeResult
from seelike.analyses.receptive_field import ReceptiveFieldResult
from seelike.analyses.skip_norms import SkipNormResult
from seelike.results import ResultBundle
from seelike.similarity import CKAResult
from seelike.study import rq1, rq2, rq3, rq4, rq5
from seelike.study.verdicts import Finding, Quantity, consistent, judge

DRAWS = 200
SCENARIOS = ("held", "also at baseline", "not held", "not measured")
NAN = float("nan")


def noisy(values, scale: float = 1e-3, seed: int = 0) -> np.ndarray:
    """Bootstrap-like draws [DRAWS, ...] around ``values`` with a small spread."""
    values = np.asarray(values, dtype=float)
    return values[None] + np.random.default_rng(seed).normal(size=(DRAWS, *values.shape)) * scale


def names(*roles: str) -> dict[str, str]:
    return {role: role for role in roles}


# -- constructed results -----------------------------------------------------------------------------------
def cka(blocks: dict[tuple[str, str], float | np.ndarray], layers: int = 6, se: float = 1e-3) -> CKAResult:
    """A CKA result over models with ``layers`` block outputs each; ``blocks[(a, b)]`` fills the a-rows × b-columns block."""
    models = list(dict.fromkeys(m for pair in blocks for m in pair))
    labels = [f"{m}/blocks.{i}" for m in models for i in range(layers)]
    matrix = np.full((len(labels), len(labels)), 0.3)
    for (a, b), value in blocks.items():
        rows = [i for i, label in enumerate(labels) if label.startswith(f"{a}/")]
        columns = [i for i, label in enumerate(labels) if label.startswith(f"{b}/")]
        matrix[np.ix_(rows, columns)] = value
        matrix[np.ix_(columns, rows)] = np.asarray(value).T if np.ndim(value) else value
    np.fill_diagonal(matrix, 1.0)
    return CKAResult(arrays={"cka": matrix, "standard_error": np.full_like(matrix, se)}, metadata={"names": labels, "n": 1000, "batch_size": 100})


def attention(first: list[float], last: list[float], prefix: float = 0.05) -> AttentionDistanceResult:
    distance = np.array([first, *[[12.0] * len(first)] * 4, last])
    arrays = {"distance": distance, "renormalised": distance.copy(), "prefix_mass": np.full_like(distance, prefix),
              "blocks": np.arange(len(distance))}
    for key in ("distance", "renormalised", "prefix_mass"):
        arrays[f"{key}_bootstrap"] = noisy(arrays[key], 0.01)
        arrays[f"{key}_se"] = np.full_like(distance, 0.01)
    return AttentionDistanceResult(arrays=arrays, metadata={"uniform_distance": 14.4, "image_width": 28, "model": "m"})


def erf(radius_50, radius_90, outside) -> ReceptiveFieldResult:
    arrays = {}
    for key, values in (("radius_50", radius_50), ("radius_90", radius_90), ("outside_patch", outside)):
        arrays[key] = np.asarray(values, dtype=float)
        arrays[f"{key}_bootstrap"], arrays[f"{key}_se"] = noisy(values, 0.01), np.full(len(values), 0.01)
    return ReceptiveFieldResult(arrays=arrays, metadata={"embedding": True, "layers": [f"l{i}" for i in range(len(radius_50))], "patch_size": 4})


def skips_vit(spatial: float, cls_early: float = 1.0, cls_late: float = 1.0) -> SkipNormResult:
    k = 6
    arrays = {"blocks": np.arange(k), "attention_spatial": np.full(k, spatial), "mlp_spatial": np.full(k, spatial),
              "attention_cls": np.full(k, spatial), "mlp_cls": np.array([cls_early] * 3 + [cls_late] * 3) * spatial}
    for key in list(arrays)[1:]:
        arrays[f"{key}_bootstrap"] = noisy(arrays[key], 1e-3 * max(1.0, abs(spatial)) if np.isfinite(spatial) else 0)
    return SkipNormResult(arrays=arrays, metadata={"structure": "prenorm", "model": "vit"})


def skips_cnn(ratio: float) -> SkipNormResult:
    values = np.full(4, ratio)
    return SkipNormResult(arrays={"blocks": np.arange(4), "shortcut_over_branch": values, "shortcut_over_branch_bootstrap": noisy(values)},
                          metadata={"structure": "residual", "model": "cnn"})


def localization(gap: float) -> LocalizationResult:
    grid = np.full((9, 9), 0.1) + np.eye(9) * gap
    return LocalizationResult(arrays={"cka": grid[None], "standard_error": np.full((1, 9, 9), 1e-3), "share_first": np.array([1.0]),
                                      "diagonal_gap": np.array([gap])}, metadata={"grids": [[3, 3]], "layers": ["blocks.4"]})


def probes(cls=None, gap=None, first=None, tokens=None, few_shot=None, n_test: int = 10_000) -> ProbeResult:
    readouts = {"cls": cls, "gap": gap, "first": first}
    present = [r for r, curve in readouts.items() if curve is not None]
    arrays = {"blocks": np.arange(6)}
    if present:
        arrays["accuracy"] = np.array([readouts[r] for r in present], dtype=float)
    if tokens is not None:
        present.append("tokens")
        arrays["token_accuracy"] = np.array(tokens, dtype=float)[:, None].repeat(4, axis=1)
    few = []
    if few_shot is not None:
        few = ["gap"]
        arrays["few_shot_accuracy"], arrays["few_shot_std"] = np.array([few_shot], dtype=float), np.zeros((1, 6))
    if "accuracy" in arrays and "tokens" in present:
        arrays["accuracy"] = np.vstack([arrays["accuracy"], np.array(tokens, dtype=float)[None]])
    return ProbeResult(arrays=arrays, metadata={"model": "m", "readouts": present, "few_shot_readouts": few, "n_test": n_test, "samples": 5,
                                                "n_train": 1000})


def bundle(**results) -> ResultBundle:
    return ResultBundle.of(results)


# -- rules, each in the four situations ----------------------------------------------------------------------
def rq1_uniformity(case: str):
    trained, random = {"held": (0.9, 0.5), "also at baseline": (0.9, 0.9), "not held": (0.5, 0.5), "not measured": (NAN, 0.5)}[case]
    result = cka({("vit", "vit"): trained, ("resnet", "resnet"): 0.5, ("random_vit", "random_vit"): random, ("random_resnet", "random_resnet"): 0.5})
    return rq1.section(result, names("vit", "resnet", "random_vit", "random_resnet"), None).findings[0]


def diagonal_cross(strength: float) -> np.ndarray:
    depth = np.arange(6) / 5
    return 0.5 - strength * 0.3 * np.abs(depth[:, None] - depth[None, :])


def rq1_lower_half(case: str):
    trained, random = {"held": (1.0, 0.0), "also at baseline": (1.0, 1.0), "not held": (0.0, 0.0), "not measured": (NAN, 0.0)}[case]
    result = cka({("vit", "resnet"): diagonal_cross(trained), ("random_vit", "random_resnet"): diagonal_cross(random)}, se=1e-4)
    return rq1.section(result, names("vit", "resnet", "random_vit", "random_resnet"), None).findings[1]


def top_weak(strength: float) -> np.ndarray:
    cross = np.full((6, 6), 0.8)
    cross[4:] -= 0.3 * strength
    return cross


def rq1_top_third(case: str):
    trained, random = {"held": (1.0, 0.0), "also at baseline": (1.0, 1.0), "not held": (0.0, 0.0), "not measured": (NAN, 0.0)}[case]
    result = cka({("vit", "resnet"): top_weak(trained), ("random_vit", "random_resnet"): top_weak(random)})
    return rq1.section(result, names("vit", "resnet", "random_vit", "random_resnet"), None).findings[2]


def rq5_mixer(case: str):
    trained, random = {"held": (0.3, 0.0), "also at baseline": (0.3, 0.3), "not held": (0.0, 0.0), "not measured": (NAN, 0.0)}[case]
    result = cka({("mixer", "vit"): 0.5 + trained, ("mixer", "resnet"): 0.5, ("random_mixer", "vit"): 0.5 + random, ("random_mixer", "resnet"): 0.5,
                  ("vit", "resnet"): 0.4})
    return rq5.section(result, names("mixer", "vit", "resnet", "random_mixer"), None).findings[0]


def rq2_globality(case: str):
    trained, random = {"held": (2.0, 0.0), "also at baseline": (2.0, 2.0), "not held": (0.0, 0.0), "not measured": (NAN, 0.0)}[case]
    results = {"vit": attention([10.0] * 4, [10.0 + trained] * 4), "random_vit": attention([10.0] * 4, [10.0 + random] * 4)}
    return rq2.attention_section(bundle(**results), names("vit", "random_vit"), None).findings[0]


def rq2_local_heads(case: str):
    local = [3.0, 12.0, 12.0, 12.0]
    trained, random = {"held": (local, [12.0] * 4), "also at baseline": (local, local), "not held": ([12.0] * 4, [12.0] * 4),
                       "not measured": ([NAN] * 4, [12.0] * 4)}[case]
    results = {"vit": attention(trained, [12.0] * 4), "random_vit": attention(random, [12.0] * 4)}
    return rq2.attention_section(bundle(**results), names("vit", "random_vit"), None).findings[1]


def test_a_head_that_sits_on_the_cls_token_is_not_local():
    on_cls = attention([3.0, 12.0, 12.0, 12.0], [12.0] * 4, prefix=0.9)
    assert on_cls.local_share()[0] == 0.0 and attention([3.0, 12.0, 12.0, 12.0], [12.0] * 4).local_share()[0] == 0.25


def rq2_erf_radius(case: str):
    vit = {"held": [2.0, 10.0], "also at baseline": [8.0, 10.0], "not held": [2.0, 4.0], "not measured": [2.0, NAN]}[case]
    results = {"vit": erf([1.0, 5.0], vit, [0.0, 0.5]), "resnet": erf([1.0, 2.0, 3.0], [3.0, 4.0, 5.0], [0.1, 0.2, 0.3])}
    return rq2.receptive_field_section(bundle(**results), names("vit", "resnet"), None).findings[0]


def rq2_erf_outside(case: str):
    trained, random = {"held": (0.5, 0.1), "also at baseline": (0.5, 0.5), "not held": (0.2, 0.1), "not measured": (NAN, 0.1)}[case]
    results = {"vit": erf([1.0, 5.0], [2.0, 10.0], [0.0, trained]), "resnet": erf([1.0, 2.0, 3.0], [3.0, 4.0, 5.0], [0.1, 0.2, 0.3]),
               "random_vit": erf([1.0, 5.0], [2.0, 10.0], [0.0, random]), "random_resnet": erf([1.0, 2.0, 3.0], [3.0, 4.0, 5.0], [0.1, 0.2, 0.3])}
    return rq2.receptive_field_section(bundle(**results), names(*results), None).findings[1]


def rq2_resnet_growth(case: str):
    grows, flat = [0.5, 1.0, 2.0, 3.0, 4.0], [0.5, 2.0, 2.0, 2.0, 2.0]
    trained, random = {"held": (grows, flat), "also at baseline": (grows, grows), "not held": (flat, flat),
                       "not measured": ([0.5, 1.0, NAN, 3.0, 4.0], flat)}[case]
    results = {"vit": erf([1.0, 5.0], [2.0, 10.0], [0.0, 0.5]), "resnet": erf(trained, [1.0] * 5, [0.1] * 5),
               "random_resnet": erf(random, [1.0] * 5, [0.1] * 5)}
    return rq2.receptive_field_section(bundle(**results), names(*results), None).findings[-1]


def rq2_skip_dominance(case: str):
    trained, random = {"held": (10.0, 1.0), "also at baseline": (10.0, 10.0), "not held": (2.0, 1.0), "not measured": (NAN, 1.0)}[case]
    results = {"vit": skips_vit(trained), "resnet": skips_cnn(2.0), "random_vit": skips_vit(random), "random_resnet": skips_cnn(2.0)}
    return rq2.skips_section(bundle(**results), names(*results), None).findings[0]


def rq2_phase_change(case: str):
    trained, random = {"held": (10.0, 1.0), "also at baseline": (10.0, 10.0), "not held": (1.0, 1.0), "not measured": (NAN, 1.0)}[case]
    results = {"vit": skips_vit(2.0, cls_early=trained), "resnet": skips_cnn(1.0), "random_vit": skips_vit(2.0, cls_early=random),
               "random_resnet": skips_cnn(1.0)}
    return rq2.skips_section(bundle(**results), names(*results), None).findings[1]


def heads(spearman: float, count: int = 8, span: float = 10.0) -> HeadSimilarityResult:
    distance = np.linspace(2.0, 2.0 + span, count)
    return HeadSimilarityResult(arrays={"spearman": np.full(3, spearman), "spearman_single_heads": np.full(3, spearman), "head_distance": distance,
                                       "window_distance": distance[: count - 1], "cka": np.zeros((count - 1, 3))},
                                metadata={"grid": [7, 7], "patch_size": 4, "units": ["a", "b", "c"]})


def rq2_fig5(case: str):
    trained, random, count = {"held": (-0.9, 0.0, 8), "also at baseline": (-0.9, -0.9, 8), "not held": (0.0, 0.0, 8),
                              "not measured": (-0.9, 0.0, 4)}[case]
    results = {"vit": heads(trained, count), "random_vit": heads(random, count)}
    return rq2.head_similarity_section(bundle(**results), names("vit", "random_vit"), None).findings[0]


def test_fig5_is_not_measured_when_the_heads_span_too_little():
    results = {"vit": heads(-0.9, 8, span=0.5), "random_vit": heads(0.0, 8, span=0.5)}
    finding = rq2.head_similarity_section(bundle(**results), names("vit", "random_vit"), None).findings[0]
    assert finding.verdict == "not measured" and "span" in finding.why


def neighbours(without: float, seed: float) -> CKAResult:
    def within(neighbour: float) -> np.ndarray:
        block = np.full((6, 6), 0.8)
        block[0, 2] = block[2, 0] = neighbour
        return block

    return cka({("vit", "vit"): within(0.9), ("vit_noskip_early", "vit_noskip_early"): within(without), ("vit_seed1", "vit_seed1"): within(seed)})


def rq2_noskip_split(case: str):
    without, seed = {"held": (0.3, 0.89), "also at baseline": (0.3, 0.2), "not held": (0.9, 0.9), "not measured": (NAN, 0.9)}[case]
    return rq2.noskip_section(neighbours(without, seed), names("vit", "vit_noskip_early", "vit_seed1"), None).findings[0]


def rq2_noskip_accuracy(case: str):
    without, seed = {"held": (0.85, 0.899), "also at baseline": (0.85, 0.84), "not held": (0.9, 0.9), "not measured": (NAN, 0.9)}[case]
    shipped = {"ref": {"test_accuracy": 0.9}, "noskip": {"test_accuracy": without}, "seed": {"test_accuracy": seed}}
    return rq2.accuracy_cost(shipped, "ref", "noskip", "seed", 3)


ROLES3 = ("vit", "vit_gap", "resnet", "random_vit", "random_vit_gap", "random_resnet")


def rq3_localization(index: int, case: str):
    trained, random = {"held": (0.5, 0.1), "also at baseline": (0.5, 0.5), "not held": (0.1, 0.1), "not measured": (NAN, 0.1)}[case]
    gaps = {"vit": trained, "vit_gap": 0.1, "resnet": 0.1, "random_vit": random, "random_vit_gap": 0.1, "random_resnet": 0.1}
    return rq3.localization_section(bundle(**{role: localization(g) for role, g in gaps.items()}), names(*ROLES3), None).findings[index]


def rq3_cls_vs_gap(case: str):
    return rq3_localization(0, case)


def rq3_resnet_vs_cls(case: str):
    return rq3_localization(1, case)


def rq3_tokens(case: str):
    trained, random = {"held": (0.8, 0.3), "also at baseline": (0.8, 0.8), "not held": (0.3, 0.3), "not measured": (NAN, 0.3)}[case]
    curve = [0.3] * 5
    results = {"vit": probes(cls=[0.5] * 6, gap=[0.5] * 6, tokens=[*curve, 0.3]), "vit_gap": probes(gap=[0.5] * 6, first=[0.5] * 6, tokens=[*curve, trained]),
               "random_vit": probes(cls=[0.5] * 6, gap=[0.5] * 6, tokens=[*curve, 0.3]),
               "random_vit_gap": probes(gap=[0.5] * 6, first=[0.5] * 6, tokens=[*curve, random])}
    return rq3.probes_section(bundle(**results), names(*results), None).findings[0]


def rq3_cls_readout(case: str):
    trained, random = {"held": (0.9, 0.5), "also at baseline": (0.9, 0.9), "not held": (0.5, 0.5), "not measured": (NAN, 0.5)}[case]
    results = {"vit": probes(cls=[0.5] * 5 + [trained], gap=[0.5] * 6), "random_vit": probes(cls=[0.5] * 5 + [random], gap=[0.5] * 6)}
    return rq3.probes_section(bundle(**results), names(*results), None).findings[0]


def rq3_first_token(case: str):
    lagging, level = [0.4, 0.4, 0.4, 0.6, 0.7, 0.8], [0.8] * 6
    trained, random = {"held": (lagging, level), "also at baseline": (lagging, lagging), "not held": (level, level),
                       "not measured": ([NAN] * 6, level)}[case]
    results = {"vit_gap": probes(gap=[0.8] * 6, first=trained), "random_vit_gap": probes(gap=[0.8] * 6, first=random)}
    return rq3.probes_section(bundle(**results), names(*results), None).findings[0]


def data_scale(row: list[float], seed: list[float]) -> DataScaleResult:
    return DataScaleResult(arrays={"per_block_cka": np.array([row]), "standard_error": np.full((1, 6), 1e-3), "baseline": np.array(seed),
                                   "baseline_standard_error": np.full(6, 1e-3), "changed": np.zeros((1, 6), dtype=bool)},
                           metadata={"models": ["vit_frac03"]})


def rq4_data_scale(case: str):
    falls, flat = [0.95, 0.9, 0.8, 0.7, 0.6, 0.5], [0.95] * 6
    trained, seed = {"held": (falls, flat), "also at baseline": (falls, falls), "not held": (flat, flat), "not measured": ([NAN] * 6, flat)}[case]
    return rq4.data_scale_section("data_scale")(data_scale(trained, seed), names("vit", "vit_frac03", "vit_seed1"), None).findings[0]


def rq4_fig4(case: str):
    local, none = [3.0, 12.0, 12.0, 12.0], [12.0] * 4
    full, least, seed = {"held": (local, none, local), "also at baseline": (local, none, none), "not held": (local, local, local),
                         "not measured": (none, none, none)}[case]
    results = {"vit": attention(full, none), "vit_frac03": attention(least, none), "vit_seed1": attention(seed, none)}
    return rq4.fraction_attention_section(bundle(**results), names(*results), None).findings[0]


def rq4_more_data(case: str):
    full, least, seed = {"held": (0.8, 0.6, 0.79), "also at baseline": (0.8, 0.6, 0.5), "not held": (0.6, 0.6, 0.6),
                         "not measured": (NAN, 0.6, 0.6)}[case]
    results = {"vit": probes(few_shot=[full] * 6), "vit_frac03": probes(few_shot=[least] * 6), "vit_seed1": probes(few_shot=[seed] * 6)}
    return rq4.probe_comparison_section(bundle(**results), names(*results), None).findings[0]


def rq4_vit_vs_resnet(case: str):
    trained, random = {"held": (0.8, 0.5), "also at baseline": (0.8, 0.8), "not held": (0.5, 0.5), "not measured": (NAN, 0.5)}[case]
    results = {"vit_large": probes(few_shot=[trained] * 6), "resnet": probes(few_shot=[0.5] * 6),
               "random_vit_large": probes(few_shot=[random] * 6), "random_resnet": probes(few_shot=[0.5] * 6)}
    return rq4.probe_comparison_section(bundle(**results), names(*results), None).findings[-1]


RULES = [rq1_uniformity, rq1_lower_half, rq1_top_third, rq5_mixer, rq2_globality, rq2_local_heads, rq2_erf_radius, rq2_erf_outside,
         rq2_resnet_growth, rq2_skip_dominance, rq2_phase_change, rq2_fig5, rq2_noskip_split, rq2_noskip_accuracy, rq3_cls_vs_gap,
         rq3_resnet_vs_cls, rq3_tokens, rq3_cls_readout, rq3_first_token, rq4_data_scale, rq4_fig4, rq4_more_data, rq4_vit_vs_resnet]


@pytest.mark.parametrize("case", SCENARIOS)
@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.__name__)
def test_every_rule_gives_each_verdict_from_its_numbers(rule, case):
    finding = rule(case)
    assert finding.verdict == case, (finding.verdict, finding.measured, finding.trained, finding.trained_se, finding.baseline, finding.why)
    assert consistent(finding), finding
    if case != "not measured" or finding.baseline is not None:
        assert finding.baseline is not None and finding.baseline_kind, "every rule of the study carries its baseline"
    if case in ("also at baseline", "not measured"):
        assert finding.why


def test_a_difference_inside_two_standard_errors_does_not_hold():
    noise = np.random.default_rng(0).normal(size=DRAWS)
    inside = Quantity(0.015, 0.01 * noise)  # 1.5 SE
    beyond = Quantity(0.025, 0.01 * noise)  # 2.5 SE
    assert judge("c", "r", "m", inside).verdict == "not held"
    assert judge("c", "r", "m", beyond).verdict == "held"
    assert judge("c", "r", "m", beyond, Quantity(0.025, 0.01 * noise)).verdict == "also at baseline"
    assert judge("c", "r", "m", beyond, Quantity(0.015, 0.01 * noise)).verdict == "held"  # the baseline stays inside its noise


def test_seed_baselines_are_thresholds_not_claims():
    noise = np.random.default_rng(0).normal(size=DRAWS) * 1e-3
    finding = judge("c", "r", "m", Quantity(0.05, noise), Quantity(-0.08, noise), baseline_kind="second seed")
    assert finding.verdict == "also at baseline" and math.isclose(finding.threshold, 0.08) and "two seeds" in finding.why
    assert judge("c", "r", "m", Quantity(0.05, noise), Quantity(0.01, noise), baseline_kind="second seed").verdict == "held"


def test_infinite_statistics_are_beyond_noise_and_nan_is_not_measured():
    assert judge("c", "r", "m", Quantity(-np.inf, np.full(DRAWS, -np.inf))).verdict == "not held"
    assert judge("c", "r", "m", Quantity(np.inf, np.full(DRAWS, np.inf))).verdict == "held"
    assert judge("c", "r", "m", Quantity(NAN, np.zeros(DRAWS))).verdict == "not measured"
    assert judge("c", "r", "m", Quantity(0.5, np.full(DRAWS, NAN))).verdict == "not measured"


def test_an_infinite_baseline_meets_the_claim():
    noise = np.random.default_rng(0).normal(size=DRAWS) * 1e-3
    finding = judge("c", "r", "m", Quantity(1.0, noise), Quantity(np.inf, np.full(DRAWS, np.inf)))
    assert finding.verdict == "also at baseline" and consistent(finding)


def test_a_finding_refuses_an_unknown_verdict():
    with pytest.raises(ValueError, match="verdict must be one of"):
        Finding("c", "r", "m", "sort of")
