"""Every analysis command on random-init timm architectures (issues 6, 8: "runs on timm architectures").

Small timm models at low resolution keep this quick; the known-answer tests live beside each
analysis, these check that adapters, roles and token layouts of timm models carry each command
end to end: exit code 0, a result that reloads as its kind, and a figure.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from seelike import load_result
from seelike.cli import app

VIT = "timm:vit_tiny_patch16_224?img_size=48&depth=3"
RESNET = "timm:resnet10t?pretrained=0"
DATA = "synthetic:n=96,size=48,channels=3,classes=4,seed=0"
SMALL = ["--data", DATA, "--batch-size", "16"]

COMMANDS = {
    "cka": (["cka", VIT, RESNET, "--n", "32"], "cka"),
    "attention-vit": (["attention", VIT, "--n", "16"], "attention_distance"),
    "localize-vit": (["localize", VIT, "--n", "32"], "localization"),
    "localize-resnet": (["localize", RESNET, "--n", "32"], "localization"),
    "erf-vit": (["erf", VIT, "--n", "4"], "receptive_field"),
    "erf-resnet": (["erf", RESNET, "--n", "4", "--pre-residual"], "receptive_field"),
    "skips-vit": (["skips", VIT, "--n", "16"], "skip_norms"),
    "skips-resnet": (["skips", RESNET, "--n", "16"], "skip_norms"),
    "heads": (["heads", VIT, RESNET, "--n", "32"], "head_similarity"),
    "datascale": (["datascale", VIT, f"{VIT}&seed=1", "--baseline", f"{VIT}&seed=2", "--n", "32"], "data_scale"),
    "probe-vit": (["probe", VIT, "--n-train", "48", "--n-test", "32", "--shots", "4", "--samples", "2", "--readouts", "all"], "probes"),
    "probe-resnet": (["probe", RESNET, "--n-train", "48", "--n-test", "32", "--shots", "4", "--samples", "2"], "probes"),
}


@pytest.mark.parametrize("case", sorted(COMMANDS))
def test_command_runs_on_a_random_init_timm_model(case, tmp_path):
    arguments, kind = COMMANDS[case]
    out = tmp_path / case
    run = CliRunner().invoke(app, [*arguments, *SMALL, "--out", str(out)])
    assert run.exit_code == 0, run.output
    assert load_result(out).kind == kind
    assert list(out.glob("*.png")), f"no figure in {out}"
