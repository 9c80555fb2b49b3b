"""`seelike study`: caching keyed by what changes the numbers, resume after an interruption,
failures kept in their section (the report and the export: test_report.py)."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from seelike.cli import app
from seelike.results import Result, load_result
from seelike.study import engine
from seelike.study.analyses import ANALYSES
from seelike.study.engine import Section, StudySettings, StudyStep, run_study
from seelike.study.presets import build_steps, random_init
from seelike.study.verdicts import Finding, consistent

VIT = "seelike:vit?width=32&depth=5&heads=4"
LARGE = "seelike:vit?width=48&depth=6&heads=4"
TINY = {
    "vit": VIT,
    "vit_gap": f"{VIT}&classifier=gap",
    "resnet": "seelike:resnet?widths=[8,16]&units_per_stage=[1,1]",
    "mixer": "seelike:mixer?width=32&depth=2&token_hidden=16&channel_hidden=32",
    "vit_seed1": f"{VIT}&seed=1",
    "vit_noskip_early": f"{VIT}&no_attention_skip=[1]&no_mlp_skip=[1]",
    "vit_noskip_mid": f"{VIT}&no_attention_skip=[3]&no_mlp_skip=[3]",
    "vit_frac30": f"{VIT}&seed=2",
    "vit_frac10": f"{VIT}&seed=3",
    "vit_frac03": f"{VIT}&seed=4",
    "vit_large": LARGE,
    "vit_large_frac10": f"{LARGE}&seed=2",
    "vit_large_seed1": f"{LARGE}&seed=1",
}
SETTINGS = StudySettings(data="synthetic:n=256,size=28,channels=1,classes=4,seed=0", n=64, batch_size=32)
MODELS_ARGS = [arg for role, spec in TINY.items() for arg in ("--models", f"{role}={spec}")]


@pytest.fixture()
def counting(monkeypatch):
    """An analysis kind ``count`` that records its calls and can be told to fail."""
    calls: list[str] = []
    failures: dict[str, BaseException] = {}

    def run(models, dataset, settings, label: str = ""):
        calls.append(label)
        if label in failures:
            raise failures[label]
        return Result(arrays={"value": [float(len(dataset))]}, metadata={"step": label})

    monkeypatch.setitem(ANALYSES, "count", run)
    return calls, failures


def section(result, names, figures_dir):
    return Section(numbers={"value": float(result["value"][0])})


def counting_step(name: str, models: dict[str, str] | None = None, **options) -> StudyStep:
    return StudyStep(name, "RQ2", name, "count", models or {"vit": TINY["vit"]}, section, params={"label": name}, **options)


def test_rerun_uses_the_cache_and_a_changed_setting_does_not(tmp_path, counting):
    calls, _ = counting
    steps = [counting_step("a"), counting_step("b")]
    assert [o.status for o in run_study(steps, SETTINGS, tmp_path)] == ["ok", "ok"]
    assert [o.status for o in run_study(steps, SETTINGS, tmp_path)] == ["cached", "cached"]
    assert calls == ["a", "b"]
    changed = SETTINGS.__class__(**{**SETTINGS.__dict__, "seed": 1})
    assert [o.status for o in run_study(steps, changed, tmp_path)] == ["ok", "ok"]


def test_a_change_to_seelike_code_invalidates_the_cache(tmp_path, monkeypatch, counting):
    calls, _ = counting
    steps = [counting_step("a")]
    run_study(steps, SETTINGS, tmp_path)
    assert [o.status for o in run_study(steps, SETTINGS, tmp_path)] == ["cached"]
    monkeypatch.setattr(engine, "code_fingerprint", lambda: "edited")
    assert [o.status for o in run_study(steps, SETTINGS, tmp_path)] == ["ok"] and calls == ["a", "a"]


@pytest.mark.parametrize("damage", ["truncated npz", "garbage json", "missing npz", "empty json"])
def test_a_damaged_cache_entry_is_reported_in_one_line_and_recomputed(tmp_path, counting, caplog, damage):
    """Issue 15 item 8: a damaged entry must not fail the step on every rerun."""
    calls, _ = counting
    steps = [counting_step("a")]
    first = run_study(steps, SETTINGS, tmp_path)[0]
    npz, document = first.cache_dir / "result.npz", first.cache_dir / "result.json"
    if damage == "truncated npz":
        npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    elif damage == "garbage json":
        document.write_text("{not json")
    elif damage == "missing npz":
        npz.unlink()
    else:
        document.write_text("")
    outcome = run_study(steps, SETTINGS, tmp_path)[0]
    assert outcome.status == "ok" and calls == ["a", "a"]
    assert outcome.note.startswith("cache entry a-") and "recomputed" in outcome.note and "\n" not in outcome.note
    assert any("damaged" in record.getMessage() for record in caplog.records)
    saved = json.loads((tmp_path / "results.json").read_text())["steps"]["a"]
    assert saved["numbers"] == {"value": 256.0} and "recomputed" in saved["note"]
    assert [o.status for o in run_study(steps, SETTINGS, tmp_path)] == ["cached"]  # the recomputed entry is whole again


def test_an_interrupted_study_resumes_without_redoing_finished_steps(tmp_path, counting):
    calls, failures = counting
    failures["b"] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        run_study([counting_step("a"), counting_step("b")], SETTINGS, tmp_path)
    failures.clear()
    outcomes = run_study([counting_step("a"), counting_step("b")], SETTINGS, tmp_path)
    assert [o.status for o in outcomes] == ["cached", "ok"] and calls == ["a", "b", "b"]


def test_a_figure_that_fails_to_draw_fails_its_step_alone(tmp_path, counting, monkeypatch):
    """The study draws its figures after the last step (in parallel); one that fails makes its step an error, as a
    failing section does, and the other steps' figures are written."""
    from seelike import plots
    from seelike.study.common import save_png

    def plan(results, **options):
        def draw():
            if results[0].metadata["step"] == "a":
                raise RuntimeError("no ink for a")
            return plots.plt.figure()
        return {"figure": draw}

    monkeypatch.setitem(plots.FIGURE_KINDS, "result", plan)
    monkeypatch.setattr(engine.torch, "get_num_threads", lambda: 2)  # two drawing processes (the tests run torch on one thread)

    def drawing_section(result, names, figures_dir):
        paths = save_png(result, figures_dir, names={"figure": result.metadata["step"]})
        return Section(figures=[p for group in paths.values() for p in group], numbers={"value": float(result["value"][0])})

    steps = [dataclasses.replace(counting_step(name), section=drawing_section) for name in ("a", "b")]
    outcomes = run_study(steps, SETTINGS, tmp_path)
    assert [o.status for o in outcomes] == ["error", "ok"] and "no ink for a" in outcomes[0].error
    figures = tmp_path / "report" / "figures"
    assert (figures / "b.png").exists() and not (figures / "a.png").exists()
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["steps"]["a"]["status"] == "error" and document["steps"]["b"]["numbers"] == {"value": 256.0}


def test_a_failing_step_keeps_the_others_and_shows_its_error(tmp_path, counting):
    _, failures = counting
    failures["a"] = RuntimeError("boom in a")
    outcomes = run_study([counting_step("a"), counting_step("b")], SETTINGS, tmp_path)
    assert [o.status for o in outcomes] == ["error", "ok"]
    page = (tmp_path / "report" / "index.html").read_text()
    assert "boom in a" in page and "Steps that did not run: a" in re.sub("<[^>]+>", "", page)
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["steps"]["a"]["status"] == "error" and document["steps"]["b"]["numbers"] == {"value": 256.0}


def test_a_step_whose_models_are_missing_is_skipped_with_the_reason(tmp_path, counting):
    calls, _ = counting
    outcome = run_study([counting_step("missing", {"vit": "zoo:no-such-model"})], SETTINGS, tmp_path)[0]
    assert outcome.status == "skipped" and "no-such-model" in outcome.error and not calls


def test_optional_models_run_without_the_missing_ones_unless_they_are_required(tmp_path, counting):
    calls, _ = counting
    models = {"vit": TINY["vit"], "extra": "zoo:no-such-model"}
    outcome = run_study([counting_step("optional", models, required=("vit",))], SETTINGS, tmp_path)[0]
    assert outcome.status == "ok" and "no-such-model" in outcome.section.text and calls == ["optional"]
    outcome = run_study([counting_step("required", models)], SETTINGS, tmp_path)[0]
    assert outcome.status == "skipped" and "no-such-model" in outcome.error and calls == ["optional"]


def test_random_init_baseline_spec():
    assert random_init("zoo:vit-cls") == "zoo:vit-cls?init=random"
    assert random_init("timm:vit_base_patch16_224?pretrained=1&img_size=32") == "timm:vit_base_patch16_224?img_size=32&init=random"


def test_paper_preset_plans_without_loading_anything():
    outcome = CliRunner().invoke(app, ["study", "--preset", "paper", "--plan"])
    assert outcome.exit_code == 0, outcome.output
    assert "vit_base_patch16_224.augreg_in21k" in outcome.output and "resnetv2_50x1_bit" in outcome.output


@pytest.mark.parametrize("arguments, message", [
    (["--n", "20000"], "more than the 256 images"),
    (["--batch-size", "2"], "--batch-size must be at least 4"),
    (["--models", "vit=zoo:nope"], "no zoo model 'nope'"),
    (["--models", "resnet=seelike:nonet"], "unknown seelike architecture"),
    (["--models", "vit=zoo:nope", "--plan"], "no zoo model 'nope'"),
    (["--n", "8", "--batch-size", "16"], "larger than --n"),
])
def test_study_refuses_bad_settings_and_specs_before_any_step(tmp_path, arguments, message):
    """Issue 15 item 10: checked up front (with --plan too), exit status non-zero, no step run."""
    outcome = CliRunner().invoke(app, ["study", *MODELS_ARGS, "--data", SETTINGS.data, "--n", "64", "--batch-size", "32",
                                       "--out", str(tmp_path), *arguments])
    assert outcome.exit_code != 0 and message in " ".join(outcome.output.split()), outcome.output
    assert not (tmp_path / "cache").exists() and not (tmp_path / "results.json").exists()


def test_study_exits_non_zero_when_a_step_fails(tmp_path, monkeypatch, counting):
    _, failures = counting
    failures["broken"] = RuntimeError("boom")
    from seelike.study import presets

    monkeypatch.setattr(presets, "build_steps", lambda *args, **kwargs: [counting_step("fine"), counting_step("broken")])
    outcome = CliRunner().invoke(app, ["study", "--data", SETTINGS.data, "--n", "64", "--batch-size", "32", "--out", str(tmp_path)])
    assert outcome.exit_code == 1 and "1 step(s) failed" in outcome.output and "broken" in outcome.output


def test_plan_says_how_many_images_each_step_reads():
    outcome = CliRunner().invoke(app, ["study", *MODELS_ARGS, "--data", SETTINGS.data, "--n", "64", "--batch-size", "32", "--plan"])
    text = " ".join(outcome.output.split())
    assert outcome.exit_code == 0 and "at most n images" in text
    assert "rq2_receptive_fields 32 test images" in text and "rq3_probes 64 training + 64 test images" in text


def test_study_on_tiny_models_writes_every_step(study_dir):
    document = json.loads((study_dir / "results.json").read_text())
    steps = document["steps"]
    assert {step.name for step in build_steps(TINY)} == set(steps)
    failed = {name: step["error"] for name, step in steps.items() if step["status"] != "ok"}
    assert not failed
    assert document["environment"]["torch"] and document["settings"]["n"] == 64 and document["schema_version"] == 3


def test_every_step_reads_at_most_n_images(study_dir):
    """Issue 15 item 10: the probe step used to train on 10,000 images whatever --n said."""
    steps = json.loads((study_dir / "results.json").read_text())["steps"]
    for name in ("rq3_probes", "rq4_probes", "rq2_receptive_fields", "rq2_attention_distance"):
        for result in load_result(steps[name]["cache"]).unbundle().values():
            meta = result.metadata
            assert meta.get("n_train", 0) <= 64 and meta.get("n_test", meta.get("n")) <= 64, (name, dict(meta))


def test_summary_counts_every_verdict(study_dir):
    document = json.loads((study_dir / "results.json").read_text())
    findings = [f for step in document["steps"].values() for f in step["findings"]]
    assert set(document["summary"]) == {"held", "also at baseline", "not held", "not measured"}
    assert sum(document["summary"].values()) == len(findings) > 20
    for verdict, count in document["summary"].items():
        assert count == sum(f["verdict"] == verdict for f in findings)


def test_no_finding_lacks_its_baseline_and_every_verdict_follows_from_its_numbers(study_dir):
    """Issue 14 item 6: every step measures a baseline; each row carries it, and its verdict is consistent with its numbers."""
    steps = json.loads((study_dir / "results.json").read_text())["steps"]
    for name, step in steps.items():
        assert step["baselines"], name
        for raw in step["findings"]:
            fields = {key: value for key, value in raw.items() if key != "non_finite"}
            finding = Finding(**{**fields, **{key: float(text) for key, text in raw["non_finite"].items()}})  # null in JSON: NaN or ±inf
            assert finding.rule and finding.claim and finding.measured, (name, raw)
            if finding.verdict != "not measured":
                assert finding.baseline is not None and finding.baseline_kind, (name, finding.claim)
                assert finding.trained_se is not None and finding.margin is not None, (name, finding.claim)
            assert consistent(finding), (name, raw)


def test_fig13_is_judged_for_both_model_sizes_against_the_seed_difference(study_dir):
    findings = json.loads((study_dir / "results.json").read_text())["steps"]["rq4_probes"]["findings"]
    left = [f for f in findings if "Fig 13 left" in f["claim"]]
    assert len(left) == 2 and all(f["baseline_kind"] == "second seed" for f in left)
    assert "width=32" in left[0]["measured"] and "width=48" in left[1]["measured"]
    assert [f for f in findings if "Fig 13 right" in f["claim"] and f["baseline_kind"] == "random init"]


def test_skip_ratio_of_a_resnet_whose_branches_start_at_zero_is_infinite():
    import numpy as np

    from seelike.study.rq2 import cnn_skip_ratio

    draws = np.full((5, 3), np.inf)
    assert cnn_skip_ratio({"shortcut_over_branch": np.array([np.inf, np.inf, np.nan]), "shortcut_over_branch_bootstrap": draws}).value == np.inf
    finite = {"shortcut_over_branch": np.array([1.0, 3.0, np.nan]), "shortcut_over_branch_bootstrap": np.ones((5, 3))}
    assert cnn_skip_ratio(finite).value == 2.0


def _single_pass_steps() -> list[StudyStep]:
    vit, pair = {"vit": TINY["vit"]}, {"vit": TINY["vit"], "resnet": TINY["resnet"]}
    empty = lambda result, names, figures: Section()  # noqa: E731  (the numbers are compared, not the sections)
    return [StudyStep("cka", "RQ1", "cka", "cka", pair, empty),
            StudyStep("attention", "RQ2", "attention", "attention_distance", vit, empty),
            StudyStep("skips", "RQ2", "skips", "skip_norms", pair, empty),
            StudyStep("heads", "RQ2", "heads", "head_similarity", pair, empty),
            StudyStep("localize", "RQ3", "localize", "localization", vit, empty)]


def test_single_pass_steps_share_one_pass_and_give_the_numbers_of_separate_runs(tmp_path, monkeypatch):
    from seelike.study import analyses

    steps = _single_pass_steps()
    pool = engine.ModelPool("cpu")
    images = {spec: 0 for spec in (TINY["vit"], TINY["resnet"])}
    for spec in images:  # images forwarded in batches (the 1-image probe passes that read shapes are not counted)
        pool.get(spec).module.register_forward_hook(
            lambda module, inputs, output, spec=spec: images.__setitem__(spec, images[spec] + (len(inputs[0]) if len(inputs[0]) > 1 else 0)))
    shared = run_study(steps, SETTINGS, tmp_path / "shared", pool=pool)
    assert [o.status for o in shared] == ["ok"] * 5 and all("shared pass" in o.note for o in shared)
    assert images == {TINY["vit"]: SETTINGS.n, TINY["resnet"]: SETTINGS.n}  # every image once per model, for all five steps
    monkeypatch.setattr(analyses, "PLANNERS", {})  # each step alone, as before the shared pass
    alone = run_study(steps, SETTINGS, tmp_path / "alone")
    assert [o.status for o in alone] == ["ok"] * 5 and all("shared pass" not in o.note for o in alone)
    for together, separate in zip(shared, alone):
        a, b = load_result(together.cache_dir), load_result(separate.cache_dir)
        assert sorted(a.arrays) == sorted(b.arrays)
        for key in a.arrays:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{together.step.name}: {key}")


def test_an_interrupted_study_resumes_its_shared_pass_at_the_batch_it_reached(tmp_path, monkeypatch):
    from seelike.checkpoints import PassCheckpoint

    steps, settings = _single_pass_steps(), dataclasses.replace(SETTINGS, batch_size=16)  # four batches
    whole = run_study(steps, settings, tmp_path / "whole")
    monkeypatch.setattr(engine, "SHARED_PASS_SAVE_SECONDS", 0.0)  # saved after every batch
    save, saved = PassCheckpoint.save_if_due, []

    def save_then_interrupt(self, accumulators, batches, precision):
        save(self, accumulators, batches, precision)
        saved.append(batches)
        if batches == 2:
            raise KeyboardInterrupt  # Ctrl-C after the second batch

    monkeypatch.setattr(PassCheckpoint, "save_if_due", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_study(steps, settings, tmp_path / "resumed")
    checkpoint = tmp_path / "resumed" / "cache" / "shared-pass.pt"
    assert checkpoint.exists() and saved == [1, 2]
    resumed = run_study(steps, settings, tmp_path / "resumed")
    assert saved == [1, 2, 3, 4]  # the pass went on from the third batch
    assert [o.status for o in resumed] == ["ok"] * 5 and not checkpoint.exists()
    for uninterrupted, outcome in zip(whole, resumed):
        a, b = load_result(uninterrupted.cache_dir), load_result(outcome.cache_dir)
        assert sorted(a.arrays) == sorted(b.arrays)
        for key in a.arrays:
            np.testing.assert_array_equal(b[key], a[key], err_msg=f"{outcome.step.name}: {key}")


def test_shared_results_are_cached_before_a_step_that_runs_alone(tmp_path, monkeypatch, counting):
    """An interruption in a later step (ERF runs after the shared pass) loses none of the shared pass's results."""
    calls, failures = counting
    failures["after"] = KeyboardInterrupt()
    steps = [*_single_pass_steps()[:2], StudyStep("after", "RQ2", "after", "count", {"vit": TINY["vit"]}, section, params={"label": "after"}),
             *_single_pass_steps()[2:]]
    with pytest.raises(KeyboardInterrupt):
        run_study(steps, SETTINGS, tmp_path)
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "cache").iterdir() if p.is_dir()) == ["attention", "cka", "heads", "localize", "skips"]


def test_random_init_drops_every_weight_option_and_the_dry_run_seed_differs_from_the_baseline():
    from seelike.study.presets import dry_run_spec

    assert random_init("timm:vit_base_patch16_224?pretrained=1&file=/w.safetensors&seed=3") == "timm:vit_base_patch16_224?init=random"
    assert dry_run_spec("zoo:vit-cls") == "zoo:vit-cls?init=random&seed=1" != random_init(dry_run_spec("zoo:vit-cls"))


def test_probe_steps_score_in_the_shared_pass_and_give_the_numbers_of_probing_alone(tmp_path, monkeypatch):
    from seelike.study import analyses

    empty = lambda result, names, figures: Section()  # noqa: E731
    params = {"full_data": True, "readouts": "all", "shots": 2, "samples": 2}
    steps = [StudyStep("cka", "RQ1", "cka", "cka", {"vit": TINY["vit"], "resnet": TINY["resnet"]}, empty),
             StudyStep("probes", "RQ3", "probes", "probes", {"vit": TINY["vit"], "resnet": TINY["resnet"]}, empty, params=params)]

    def forwarded(planners: dict) -> tuple[list[engine.StepOutcome], dict[str, int]]:
        monkeypatch.setattr(analyses, "PLANNERS", planners)
        pool, images = engine.ModelPool("cpu"), {}
        for spec in (TINY["vit"], TINY["resnet"]):
            images[spec] = 0
            pool.get(spec).module.register_forward_hook(
                lambda module, inputs, output, spec=spec: images.__setitem__(spec, images[spec] + (len(inputs[0]) if len(inputs[0]) > 1 else 0)))
        return run_study(steps, SETTINGS, tmp_path / str(len(planners)), pool=pool), images

    planners = dict(analyses.PLANNERS)
    shared, shared_images = forwarded(planners)
    assert all("shared pass" in o.note for o in shared)
    alone, alone_images = forwarded({kind: plan for kind, plan in planners.items() if kind != "probes"})
    assert "shared pass" not in alone[1].note
    # scoring in the shared pass saves exactly the probes' own pass over the n test images, per model
    assert {spec: alone_images[spec] - shared_images[spec] for spec in shared_images} == {spec: SETTINGS.n for spec in shared_images}
    a, b = load_result(shared[1].cache_dir), load_result(alone[1].cache_dir)
    assert sorted(a.arrays) == sorted(b.arrays) and any(key.endswith("::token_accuracy") for key in a.arrays)
    for key in a.arrays:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
