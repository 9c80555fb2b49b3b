"""`seelike study`: caching keyed by what changes the numbers, resume after an interruption,
failures kept in their section, and the HTML report rendered in headless Chromium."""

from __future__ import annotations

import html
import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seelike.cli import app
from seelike.presets import build_steps, random_init
from seelike.results import Result
from seelike import study
from seelike.study import Section, StudySettings, StudyStep, run_study, verdict

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


def counting_step(name: str, calls: list[str], fail: BaseException | None = None) -> StudyStep:
    def run(models, dataset, settings):
        calls.append(name)
        if fail is not None:
            raise fail
        return Result(arrays={"value": [float(len(dataset))]}, metadata={"step": name})

    def section(result, figures_dir):
        return Section(numbers={"value": float(result["value"][0])})

    return StudyStep(name, "RQ2", name, (TINY["vit"],), run, section)


def test_rerun_uses_the_cache_and_a_changed_setting_does_not(tmp_path):
    calls: list[str] = []
    steps = [counting_step("a", calls), counting_step("b", calls)]
    assert [o.status for o in run_study(steps, SETTINGS, tmp_path)] == ["ok", "ok"]
    assert [o.status for o in run_study(steps, SETTINGS, tmp_path)] == ["cached", "cached"]
    assert calls == ["a", "b"]
    changed = SETTINGS.__class__(**{**SETTINGS.__dict__, "seed": 1})
    assert [o.status for o in run_study(steps, changed, tmp_path)] == ["ok", "ok"]


def test_a_change_to_seelike_code_invalidates_the_cache(tmp_path, monkeypatch):
    calls: list[str] = []
    steps = [counting_step("a", calls)]
    run_study(steps, SETTINGS, tmp_path)
    assert [o.status for o in run_study(steps, SETTINGS, tmp_path)] == ["cached"]
    monkeypatch.setattr(study, "code_fingerprint", lambda: "edited")
    assert [o.status for o in run_study(steps, SETTINGS, tmp_path)] == ["ok"] and calls == ["a", "a"]


def test_a_nan_measurement_is_not_measured_rather_than_not_held():
    assert verdict(True, 0.3, [0.1, 0.2]) == "held" and verdict(False, 0.3) == "not held"
    assert verdict(float("nan") > 0.5, float("nan"), 0.5) == "not measured"
    assert verdict(False, [0.1, float("inf")]) == "not measured" and verdict(None) == "not measured"


def test_an_interrupted_study_resumes_without_redoing_finished_steps(tmp_path):
    calls: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run_study([counting_step("a", calls), counting_step("b", calls, fail=KeyboardInterrupt())], SETTINGS, tmp_path)
    outcomes = run_study([counting_step("a", calls), counting_step("b", calls)], SETTINGS, tmp_path)
    assert [o.status for o in outcomes] == ["cached", "ok"] and calls == ["a", "b", "b"]


def test_a_failing_step_keeps_the_others_and_shows_its_error(tmp_path):
    calls: list[str] = []
    steps = [counting_step("a", calls, fail=RuntimeError("boom in a")), counting_step("b", calls)]
    outcomes = run_study(steps, SETTINGS, tmp_path)
    assert [o.status for o in outcomes] == ["error", "ok"]
    page = (tmp_path / "report" / "index.html").read_text()
    assert "boom in a" in page
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["steps"]["a"]["status"] == "error" and document["steps"]["b"]["numbers"] == {"value": 256.0}


def test_a_step_whose_models_are_missing_is_skipped_with_the_reason(tmp_path):
    calls: list[str] = []
    step = counting_step("a", calls)
    step = StudyStep("missing", "RQ1", "missing", ("zoo:no-such-model",), step.run, step.section)
    outcome = run_study([step], SETTINGS, tmp_path)[0]
    assert outcome.status == "skipped" and "no-such-model" in outcome.error and not calls


def test_optional_models_run_without_the_missing_ones_unless_they_are_required(tmp_path):
    calls: list[str] = []
    base = counting_step("a", calls)
    models = (TINY["vit"], "zoo:no-such-model")
    optional = StudyStep("optional", "RQ4", "optional", models, base.run, base.section, optional_models=True)
    outcome = run_study([optional], SETTINGS, tmp_path)[0]
    assert outcome.status == "ok" and "no-such-model" in outcome.section.text and calls == ["a"]
    required = StudyStep("required", "RQ4", "required", models, base.run, base.section, optional_models=True,
                         required_models=("zoo:no-such-model",))
    outcome = run_study([required], SETTINGS, tmp_path)[0]
    assert outcome.status == "skipped" and "no-such-model" in outcome.error and calls == ["a"]


def test_random_init_baseline_spec():
    assert random_init("zoo:vit-cls") == "zoo:vit-cls?init=random"
    assert random_init("timm:vit_base_patch16_224?pretrained=1&img_size=32") == "timm:vit_base_patch16_224?img_size=32&init=random"


def test_paper_preset_plans_without_loading_anything():
    outcome = CliRunner().invoke(app, ["study", "--preset", "paper", "--plan"])
    assert outcome.exit_code == 0, outcome.output
    assert "vit_base_patch16_224.augreg_in21k" in outcome.output and "resnetv2_50x1_bit" in outcome.output


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study")
    outcome = CliRunner().invoke(app, ["study", *MODELS_ARGS, "--data", SETTINGS.data, "--n", "64", "--batch-size", "32", "--out", str(out)])
    assert outcome.exit_code == 0, outcome.output
    return out


def test_study_on_tiny_models_writes_every_step(study_dir):
    document = json.loads((study_dir / "results.json").read_text())
    steps = document["steps"]
    assert {step.name for step in build_steps(TINY)} == set(steps)
    failed = {name: step["error"] for name, step in steps.items() if step["status"] != "ok"}
    assert not failed
    assert document["environment"]["torch"] and document["settings"]["n"] == 64


def test_fig13_is_judged_for_both_model_sizes(study_dir):
    findings = json.loads((study_dir / "results.json").read_text())["steps"]["rq4_probes"]["findings"]
    left = [f for f in findings if "Fig 13 left" in f["claim"]]
    assert len(left) == 2
    assert left[0]["measured"].endswith("&heads=4&seed=4])") and "width=32" in left[0]["measured"]
    assert left[1]["measured"].endswith("&heads=4&seed=2])") and "width=48" in left[1]["measured"]
    assert all(f["baseline"].startswith("second seed of") for f in left)
    assert [f for f in findings if "Fig 13 right" in f["claim"]]


def test_findings_carry_their_baseline(study_dir):
    """Issue 8: each finding row has its random-init or seed baseline beside it, where one exists."""
    steps = json.loads((study_dir / "results.json").read_text())["steps"]
    no_baseline = ("first-token readout catches up", "Fig 13 right", "costs accuracy", "lower half of ResNet layers", "top ViT layers",
                   "receptive fields", "Lowest blocks mix")
    for name in ("rq1_layer_similarity", "rq2_attention_distance", "rq2_skip_norms", "rq2_no_skip", "rq2_local_heads", "rq3_localization",
                 "rq3_probes", "rq4_data_scale", "rq4_attention_distance", "rq4_probes", "rq5_mixer"):
        for finding in steps[name]["findings"]:
            if not any(text in finding["claim"] for text in no_baseline):
                assert finding["baseline"], (name, finding["claim"])


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def test_report_renders_in_headless_chromium(study_dir):
    found = _chromium()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium and chromium-driver (see .ci/run)")
        pytest.skip("chromium / chromedriver not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1200,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(found[1]), options=options)
    try:
        driver.get((study_dir / "report" / "index.html").resolve().as_uri())
        images = driver.execute_script("return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])")
        assert images and all(ok for _, ok in images), [src for src, ok in images if not ok]
        ids = driver.execute_script("return Array.from(document.querySelectorAll('h2')).map(h => h.id)")
        assert {"findings", "RQ1", "RQ2", "RQ3", "RQ4", "RQ5", "environment"} <= set(ids)
        verdicts = driver.execute_script("return Array.from(document.querySelectorAll('table.findings td:last-child')).map(td => td.textContent)")
        assert verdicts and set(verdicts) <= {"held", "not held", "not measured"}
        if os.environ.get("SEELIKE_SCREENSHOT"):
            driver.save_screenshot(os.environ["SEELIKE_SCREENSHOT"])
    finally:
        driver.quit()


def test_report_numbers_match_results_json(study_dir):
    document = json.loads((study_dir / "results.json").read_text())
    page = (study_dir / "report" / "index.html").read_text()
    for step in document["steps"].values():
        for value in step["numbers"].values():
            assert html.escape(str(value)) in page
        for finding in step["findings"]:
            assert html.escape(finding["measured"]) in page


def test_skip_ratio_of_a_resnet_whose_branches_start_at_zero_is_infinite():
    import numpy as np

    from seelike.presets import cnn_skip_ratio

    assert cnn_skip_ratio({"shortcut_over_branch": np.array([np.inf, np.inf, np.nan])}) == np.inf
    assert cnn_skip_ratio({"shortcut_over_branch": np.array([1.0, 3.0, np.nan])}) == 2.0
