"""The command line as a user meets it: --help, names, one-line warnings, progress in logs, summaries, 80 columns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from seelike import load_result
from seelike.cli import COMMAND_ORDER, app
from seelike.console import LineFormatter, one_line_messages, show_warning
from seelike.models.model import unique_names

SRC = Path(__file__).resolve().parents[1] / "src"
VIT = "seelike:vit?image_size=16&patch_size=4&width=16&depth=3&heads=2&num_classes=4&in_channels=1"
DATA = "synthetic:n=64,size=16,channels=1,classes=4"


def commands() -> list[tuple[str, Any]]:
    """Every command and sub-command (typer's own click types), by its full name (``zoo train``)."""
    found = []

    def walk(command: Any, path: str) -> None:
        found.append((path, command))  # groups too: the options before the command (--threads, ...) need help
        if hasattr(command, "list_commands"):
            context = typer.Context(command)
            for name in command.list_commands(context):
                walk(command.get_command(context, name), f"{path} {name}".strip())

    walk(typer.main.get_command(app), "")
    return found


@pytest.mark.parametrize("name,command", commands(), ids=[name or "seelike" for name, _ in commands()])
def test_every_option_and_argument_has_help(name, command):
    assert command.help and "PAPER.md" not in command.help, name
    for parameter in command.params:
        text = getattr(parameter, "help", None)
        assert text, f"seelike {name}: {parameter.name} has no help text"
        assert "PAPER.md" not in text
        if parameter.param_type_name == "option" and parameter.is_flag:
            assert not parameter.secondary_opts, f"seelike {name}: {parameter.opts} shows --no-... for a one-sided flag"


def test_help_lists_commands_in_order_and_every_help_renders():
    listed = [name.split()[0] for name, _ in commands() if name]
    assert list(dict.fromkeys(listed)) == [c for c in COMMAND_ORDER if c in listed]
    output = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "100"}).output
    positions = [output.index(f" {c} ") for c in dict.fromkeys(listed)]
    assert positions == sorted(positions)
    for name, _ in commands()[1:]:
        result = CliRunner().invoke(app, [*name.split(), "--help"], env={"COLUMNS": "80"})
        assert result.exit_code == 0 and "Usage" in result.output, name


def test_train_augment_is_a_choice():
    output = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    assert "none|flip|crop-flip" in output
    result = CliRunner().invoke(app, ["train", "vit", "--out", "x", "--augment", "rotate"])
    assert result.exit_code == 2 and "rotate" in result.output


def test_names_say_where_models_come_from():
    names = unique_names(["timm:resnet18", "torchvision:resnet18", "timm:vit_tiny_patch16_224?img_size=64", "timm:vit_tiny_patch16_224"])
    assert names["timm:resnet18"] == "resnet18 (timm)" and names["torchvision:resnet18"] == "resnet18 (torchvision)"
    assert names["timm:vit_tiny_patch16_224?img_size=64"] == "vit_tiny_patch16_224[img_size=64]"
    assert names["timm:vit_tiny_patch16_224"] == "vit_tiny_patch16_224"
    # only the query items that differ, and the study's zoo names unchanged
    assert unique_names([VIT, VIT + "&seed=1"]) == {VIT: "vit", VIT + "&seed=1": "vit[seed=1]"}
    assert unique_names(["zoo:vit-cls", "zoo:vit-cls?init=random", "zoo:resnet"]) == {
        "zoo:vit-cls": "vit-cls", "zoo:vit-cls?init=random": "vit-cls-random", "zoo:resnet": "resnet"}
    assert unique_names(["runs/a/model.safetensors", "runs/b/model.safetensors"]) == {
        "runs/a/model.safetensors": "model (a)", "runs/b/model.safetensors": "model (b)"}


def test_warnings_and_log_records_are_one_line(capsys):
    import logging

    with one_line_messages():
        warnings.warn_explicit("mean of empty\nslice", RuntimeWarning, "/some/where/module.py", 12)
        logging.getLogger("seelike.anything").warning("could not\nrecord")
        logging.getLogger("seelike.progress").info("images 10/20, 5 img/s, 2 s left")
    err = capsys.readouterr().err
    assert err.splitlines() == ["warning: mean of empty slice", "warning: could not record", "images 10/20, 5 img/s, 2 s left"]
    assert warnings.showwarning is not show_warning  # restored after the command
    record = logging.LogRecord("x", logging.ERROR, "p", 1, "a\n b", None, None)
    assert LineFormatter().format(record) == "error: a b"


def test_a_command_in_a_log_shows_progress_and_one_line_warnings(tmp_path):
    """stderr redirected to a file (no TTY): plain progress lines and no raw warning with a source path."""
    log = tmp_path / "log.txt"
    code = ("import warnings, seelike.capture as c, seelike.analyses.skip_norms as s\n"
            "c.ThroughputMeter._last_line = -1e9\n"  # the first batch logs at once (the interval is 10 s)
            "from seelike.cli import app\n"
            "app(prog_name='seelike')\n")
    environment = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "COLUMNS": "80"}
    with open(log, "w") as stderr:
        done = subprocess.run([sys.executable, "-c", code, "skips", "seelike:resnet?widths=[8,16]&units_per_stage=[1,1]&in_channels=1",
                               "--data", DATA, "--n", "32", "--batch-size", "16", "--out", str(tmp_path / "out")],
                              stderr=stderr, stdout=subprocess.PIPE, text=True, env=environment, timeout=300)
    assert done.returncode == 0, log.read_text()
    text = log.read_text()
    assert "skip norms: images 16/32" in text and "img/s" in text, text
    assert "Warning:" not in text and ".py:" not in text, text
    assert all(line.startswith(("warning: ", "skip norms: images")) for line in text.splitlines()), text


def test_cka_prints_and_saves_its_summary(tmp_path):
    """Per pair best-match CKA and per model across-block CKA: printed numbers are the saved ones, computed from the matrix."""
    out = tmp_path / "cka"
    result = CliRunner().invoke(app, ["cka", VIT, VIT + "&seed=1", "--data", DATA, "--n", "32", "--batch-size", "16", "--out", str(out)],
                                env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    saved = load_result(out)
    summary = saved.metadata["summary"]
    assert summary == json.loads((out / "result.json").read_text())["metadata"]["summary"]
    matrix, _, _ = saved.block("vit", "vit[seed=1]")
    pair = next(p for p in summary["pairs"] if (p["model"], p["other"]) == ("vit", "vit[seed=1]"))
    assert pair["best_match_cka"] == pytest.approx(matrix.max(axis=1).mean(), abs=1e-6)
    assert pair["best_match_top_third"] == pytest.approx(matrix[-1].max(), abs=1e-6)  # 3 blocks: the top third is the last
    assert pair["best_match_rest"] == pytest.approx(matrix[:-1].max(axis=1).mean(), abs=1e-6)
    within, _, _ = saved.block("vit")
    assert summary["models"]["vit"]["cka_across_block"] == {"1": pytest.approx(within[0, 2], abs=1e-6)}
    for value in (pair["best_match_cka"], within[0, 2], summary["models"]["vit[seed=1]"]["mean_cka_between_layers"]):
        assert f"{value:.3f}" in result.output
    assert "…" not in result.output and "vit[seed=1]" in result.output


def test_attention_prints_and_saves_its_entropy(tmp_path):
    import numpy as np

    out = tmp_path / "attention"
    result = CliRunner().invoke(app, ["attention", VIT, "--data", DATA, "--n", "32", "--batch-size", "16", "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = load_result(out)
    entropy = saved["entropy"]
    assert entropy.shape == saved.distance.shape and np.all((entropy > 0) & (entropy <= 1 + 1e-9))
    summary = saved.metadata["summary"]
    assert summary["entropy_fraction_of_uniform_min"] == pytest.approx(entropy.min(), abs=1e-6)
    assert f"{entropy.min():.2f}–{entropy.max():.2f}" in result.output


def test_attention_entropy_is_one_for_uniform_attention_and_zero_for_one_token():
    import torch

    from seelike.analyses.attention_distance import attention_entropy

    uniform = torch.full((2, 3, 5, 5), 1 / 5)
    assert torch.allclose(attention_entropy(uniform, 1), torch.ones(2, 3, 4), atol=1e-6)
    peaked = torch.zeros(1, 1, 5, 5)
    peaked[..., 0] = 1
    assert torch.allclose(attention_entropy(peaked, 1), torch.zeros(1, 1, 4), atol=1e-6)


def test_probe_prints_and_saves_middle_block_means(tmp_path):
    from seelike.analyses.probes import middle_blocks

    out = tmp_path / "probes"
    result = CliRunner().invoke(app, ["probe", VIT, "--data", DATA, "--n-train", "32", "--n-test", "32", "--shots", "2",
                                      "--samples", "2", "--batch-size", "16", "--out", str(out)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    saved = load_result(out)
    summary = saved.metadata["summary"]
    assert summary["middle_blocks"] == [1] and middle_blocks(3) == slice(0, 2) or summary["middle_blocks"] == saved.blocks[middle_blocks(3)]
    for regime, label in (("full", "gap n=32"), ("few_shot", "gap 2-shot")):
        expected = saved.curve("gap", regime)[0][middle_blocks(len(saved.blocks))].mean()
        assert summary["middle_block_accuracy"][label] == pytest.approx(expected, abs=1e-6)
        assert f"{100 * expected:.1f}" in result.output and label in result.output


def test_zoo_train_publishes_outside_the_package_and_prints_each_epoch(tmp_path, monkeypatch):
    import seelike.zoo_training as zoo_training
    from seelike.models.zoo import zoo_dir
    from seelike.recipes import TrainConfig

    recipe = TrainConfig("vit", {"patch_size": 4, "width": 16, "depth": 1, "heads": 2}, data=DATA, epochs=2, batch_size=16)
    monkeypatch.setitem(zoo_training.RECIPES, "tiny", (recipe, None, "a tiny test recipe"))
    shipped = sorted(p.name for p in zoo_dir().iterdir())
    runs, out = tmp_path / "runs", tmp_path / "published"
    result = CliRunner().invoke(app, ["zoo", "train", "tiny", "--runs", str(runs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "tiny.safetensors").exists() and json.loads((out / "tiny.json").read_text())["name"] == "tiny"
    assert sorted(p.name for p in zoo_dir().iterdir()) == shipped  # nothing written into the installed zoo
    epochs = [line for line in result.output.splitlines() if line.startswith("epoch") and " step " in line]
    assert len(epochs) == 2 and all("/2" in line and "train accuracy" in line and "left" in line for line in epochs), result.output
    default = CliRunner().invoke(app, ["zoo", "train", "tiny", "--runs", str(runs)])  # resumes, publishes into RUNS/published
    assert default.exit_code == 0 and (runs / "published" / "tiny.safetensors").exists(), default.output


def test_zoo_list_fits_80_columns_in_a_log():
    """Non-TTY output at 80 columns: every zoo name whole (two names must never both read 'vit-cls-nos…')."""
    from seelike.recipes import RECIPES

    done = subprocess.run([sys.executable, "-m", "seelike", "zoo", "list"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(map(len, lines)) <= 80 and "…" not in done.stdout
    for name in RECIPES:
        assert any(line.startswith(f"{name} ") for line in lines), name


def test_skips_prints_and_saves_the_median_ratio(tmp_path):
    import numpy as np

    out = tmp_path / "skips"
    result = CliRunner().invoke(app, ["skips", VIT, "--data", DATA, "--n", "32", "--batch-size", "16", "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = load_result(out)
    median = np.median(np.concatenate([saved["attention_spatial"], saved["mlp_spatial"]]))
    assert saved.metadata["summary"]["median_spatial_ratio"] == pytest.approx(median, rel=1e-5)
    assert f"{median:.3g}" in result.output
