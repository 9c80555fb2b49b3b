"""Shared test set-up."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The tests run small models and matrices: one thread is fastest there, and on a busy
    2-core machine torch's OpenMP barriers otherwise cost more than a second thread gains."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def study_dir(tmp_path_factory):
    """A whole `seelike study` on the tiny random-init models of ``test_study.TINY``, run once for the study and report tests."""
    from typer.testing import CliRunner

    from seelike.cli import app
    from test_study import MODELS_ARGS, SETTINGS

    out = tmp_path_factory.mktemp("study")
    outcome = CliRunner().invoke(app, ["study", *MODELS_ARGS, "--data", SETTINGS.data, "--n", "64", "--batch-size", "32", "--out", str(out)])
    assert outcome.exit_code == 0, outcome.output
    return out
