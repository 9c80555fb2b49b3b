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
        if hasattr(command, "list_commands"):
            context = typer.Context(command)
            for name in command.list_commands(context):
                walk(command.get_command(context, name), f"{path} {name}".strip())
        else:
            found.append((path, command))

    walk(typer.main.get_command(app), "")
    return found


@pytest.mark.parametrize("name,command", commands(), ids=[name for name, _ in commands()])
def test_every_option_and_argument_has_help(name, command):
    assert command.help and "PAPER.md" not in command.help, name
    for parameter in command.params:
        text = getattr(parameter, "help", None)
        assert text, f"seelike {name}: {parameter.name} has no help text"
        assert "PAPER.md" not in text
        if parameter.param_type_name == "option" and parameter.is_flag:
            assert not parameter.secondary_opts, f"seelike {name}: {parameter.opts} shows --no-... for a one-sided flag"


def test_help_lists_commands_in_order_and_every_help_renders():
    listed = [name.split()[0] for name, _ in commands()]
    assert list(dict.fromkeys(listed)) == [c for c in COMMAND_ORDER if c in listed]
    output = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "100"}).output
    positions = [output.index(f" {c} ") for c in dict.fromkeys(listed)]
    assert positions == sorted(positions)
    for name, _ in commands():
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
