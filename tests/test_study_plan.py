"""The study's plan: which comparisons a swapped model enters (cohorts of twins), steps a preset cannot run,
the paper preset's GAP model, and `--init random` (a dry run at the preset's scale, said so everywhere)."""

from __future__ import annotations

import html
import json
import re

import pytest
from typer.testing import CliRunner

from seelike.cli import app
from seelike.study import presets
from seelike.study.engine import Section, StudySettings, StudyStep, run_study
from seelike.study.presets import PAPER_MODELS, ZOO_MODELS, plan_study
from seelike.study.roles import ROLES
from seelike.study.verdicts import Quantity, judge

OTHER_VIT = "timm:vit_tiny_patch16_224?img_size=28&patch_size=4&in_chans=1"
TWINS_OF_VIT = {"rq2_no_skip", "rq3_localization", "rq3_probes", "rq4_data_scale", "rq4_attention_distance", "rq4_probes"}


def skipped(steps: list[StudyStep]) -> dict[str, str]:
    return {step.name: step.skip for step in steps if step.skip}


def test_help_lists_every_role_the_study_accepts():
    text = " ".join(CliRunner().invoke(app, ["study", "--help"], env={"COLUMNS": "300"}).output.split())
    assert set(ROLES) >= set(ZOO_MODELS) | set(PAPER_MODELS)
    for role in ROLES:
        assert f"{role}:" in text, role


def test_the_zoo_preset_as_shipped_runs_every_step():
    assert skipped(plan_study("zoo")) == {}


def test_a_swapped_vit_leaves_the_comparisons_with_its_zoo_twins_and_says_why():
    reasons = skipped(plan_study("zoo", {"vit": OTHER_VIT}))
    assert set(reasons) == TWINS_OF_VIT
    assert "vit was replaced by" in reasons["rq4_data_scale"] and "vit_frac10 (zoo:vit-cls-frac10) is no longer its 10%-data twin" in reasons["rq4_data_scale"]
    assert "vit_noskip_mid (zoo:vit-cls-noskip-mid) is no longer its skip-removed twin" in reasons["rq2_no_skip"]
    assert "vit_seed1" in reasons["rq2_no_skip"] and "pass --models" in reasons["rq2_no_skip"]
    assert "GAP-classifier twin" in reasons["rq3_localization"]


def test_a_swapped_twin_alone_is_not_compared_with_the_preset_reference():
    reasons = skipped(plan_study("zoo", {"vit_seed1": OTHER_VIT}))
    assert set(reasons) == {"rq2_no_skip", "rq4_data_scale", "rq4_attention_distance", "rq4_probes"}
    assert "vit is still the zoo preset's (zoo:vit-cls)" in reasons["rq4_data_scale"] and "second-seed twin" in reasons["rq4_data_scale"]


def test_a_cohort_swapped_together_runs_and_the_preset_spec_given_again_is_no_swap():
    given = {role: f"{OTHER_VIT}&seed={i}" for i, role in enumerate(["vit", "vit_gap", "vit_seed1", "vit_noskip_early", "vit_noskip_mid",
                                                                    "vit_frac30", "vit_frac10", "vit_frac03"])}
    assert skipped(plan_study("zoo", given)) == {}
    assert skipped(plan_study("zoo", {"vit": ZOO_MODELS["vit"]})) == {}


def test_unknown_roles_are_refused_naming_the_known_ones():
    outcome = CliRunner().invoke(app, ["study", "--models", "vit_huge=zoo:vit-cls", "--plan"])
    assert outcome.exit_code != 0 and "unknown role(s) vit_huge" in outcome.output and "vit_frac10" in outcome.output


def test_the_paper_preset_skips_the_models_the_paper_trained_itself():
    reasons = skipped(plan_study("paper"))
    assert set(reasons) == {"rq2_no_skip", "rq4_data_scale", "rq4_data_scale_large", "rq4_attention_distance", "rq4_probes"}
    assert all("the paper trained these itself" in reason for reason in reasons.values())
    assert "vit_seed1=SPEC" in reasons["rq4_data_scale"]


def test_the_paper_gap_model_was_trained_with_global_average_pooling_and_its_steps_say_how_it_differs():
    from seelike.models import load_model

    body = PAPER_MODELS["vit_gap"].split(":", 1)[1].split("?")[0]
    model = load_model(f"timm:{body.split('.')[0]}?init=random&depth=1&embed_dim=64&num_heads=2")  # the same architecture, small
    assert model.token_layout.num_prefix_tokens == 0 and model.module.global_pool == "avg"
    for step in plan_study("paper"):
        if "vit_gap" in step.models and not step.skip:
            assert any("ImageNet-1k" in note and "post-norm" in note for note in step.notes), step.name


def test_post_norm_blocks_have_the_roles_skip_norms_read():
    """timm's ResPostBlock: x + norm1(attn(x)), then + norm2(mlp(x)); the roles must add up as the block does."""
    import torch

    from seelike.capture import Capture
    from seelike.models import load_model

    model = load_model("timm:vit_base_patch16_rpn_224?init=random&depth=2&embed_dim=32&num_heads=2&img_size=32")
    with Capture(model, model.layers) as capture:
        out = capture(torch.rand(2, 3, 32, 32))
    for b in range(2):
        x, attn, mid, mlp = (out[f"blocks.{b}.{role}"] for role in ("input", "attn", "attn_residual", "mlp"))
        assert torch.allclose(x + attn, mid, atol=1e-5) and torch.allclose(mid + mlp, out[f"blocks.{b}"], atol=1e-5)
    assert len(model.attention_layers()) == 2


def test_init_random_replaces_every_model_by_a_random_init_twin_and_the_plan_says_so():
    steps = plan_study("paper", init="random")
    for step in steps:
        for role, spec in step.models.items():
            assert "init=random" in spec and "pretrained" not in spec, (step.name, role, spec)
        for role in step.baselines:
            if role.startswith("random_"):
                assert step.models[role] != step.models[role.removeprefix("random_")]
    outcome = CliRunner().invoke(app, ["study", "--preset", "paper", "--init", "random", "--data", "synthetic:n=32,size=224,channels=3",
                                       "--n", "16", "--batch-size", "16", "--plan"], env={"COLUMNS": "300"})
    text = " ".join(outcome.output.split())
    assert outcome.exit_code == 0, outcome.output
    assert "random-init dry run" in text and "rq4_data_scale skipped: needs" in text and "vit_base_patch16_rpn_224.sw_in1k?init=random&seed=1" in text


def finding_section(result, names, figures_dir) -> Section:
    return Section(findings=[judge("a claim", "a rule", "measured", Quantity.exact(1.0), None)])


def test_a_planned_skip_is_reported_without_failing_and_a_dry_run_marks_every_finding(tmp_path, monkeypatch):
    from seelike.results import Result
    from seelike.study.analyses import ANALYSES

    monkeypatch.setitem(ANALYSES, "constant", lambda models, dataset, settings: Result(arrays={"v": [1.0]}, metadata={}))
    vit = "seelike:vit?width=16&depth=2&heads=2"
    steps = [StudyStep("runs", "RQ1", "runs", "constant", {"vit": vit}, finding_section),
             StudyStep("planned_out", "RQ4", "planned out", "constant", {"vit": vit}, finding_section, skip="needs vit_seed1")]
    monkeypatch.setattr(presets, "build_steps", lambda *args, **kwargs: steps)
    outcome = CliRunner().invoke(app, ["study", "--init", "random", "--data", "synthetic:n=64,size=28,channels=1", "--n", "16",
                                       "--batch-size", "16", "--out", str(tmp_path)])
    assert outcome.exit_code == 0, outcome.output
    assert "1 step(s) not planned to run" in " ".join(outcome.output.split())
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["settings"]["init"] == "random" and document["dry_run"].startswith("random-init dry run")
    planned = document["steps"]["planned_out"]
    assert planned["status"] == "skipped" and planned["planned_skip"] and planned["error"] == "needs vit_seed1"
    (finding,) = document["steps"]["runs"]["findings"]
    assert finding["why"].startswith("random-init dry run")
    page = re.sub("<[^>]+>", "", (tmp_path / "report" / "index.html").read_text())
    assert "Steps the plan left out (their models are not in this study): planned_out." in page
    assert "did not run" not in page and "Not run" not in page  # not shown as a failure
    trained = run_study(steps[:1], StudySettings(data="synthetic:n=64,size=28,channels=1", n=16, batch_size=16), tmp_path / "trained")
    assert "dry run" not in trained[0].section.findings[0].why


@pytest.mark.parametrize("preset", ["zoo", "paper"])
def test_every_role_a_step_reads_is_a_known_role_or_a_baseline(preset):
    for step in plan_study(preset):
        for role in step.models:
            assert role in ROLES or role.startswith("random_"), (step.name, role)


def test_the_report_of_a_dry_run_says_so_at_the_top(tmp_path):
    from seelike.report import write_report
    from seelike.study.engine import DRY_RUN, results_document

    settings = StudySettings(data="synthetic:n=64,size=28,channels=1", n=16, batch_size=16, init="random")
    page = write_report(results_document([], settings, {}), tmp_path).read_text()
    assert page.index(html.escape(DRY_RUN)) < page.index("Findings at a glance")
    trained = write_report(results_document([], StudySettings(), {}), tmp_path / "trained").read_text()
    assert "dry run" not in trained
