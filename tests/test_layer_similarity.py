"""Layer-similarity runs and the `seelike cka` command: the honest-number checks of issue 4."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from seelike import load_result
from seelike.analyses.layer_similarity import layer_similarity
from seelike.cli import app
from seelike.data import iterate_batches, load_dataset
from seelike.errors import InvalidInputError
from seelike.models import load_model
from seelike.models.adapters import describe
from seelike.models.model import Preprocessing
from seelike.models.resnet import BasicUnit
from seelike.similarity import MinibatchCKA

DATA = "synthetic:n=64,size=28,channels=1,classes=4,seed=0"


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(DATA)


@pytest.fixture(scope="module")
def vit():
    return load_model("seelike:vit?width=32&depth=3&heads=2")


@pytest.fixture(scope="module")
def resnet():
    return load_model("seelike:resnet?widths=[8,16]&units_per_stage=[1,1]")


def test_one_pass_gives_within_and_cross_blocks(dataset, vit, resnet):
    result = layer_similarity([vit, resnet], dataset, n=64, batch_size=16)
    assert result.models == ["vit", "resnet"]
    assert result.layer_names("vit") == vit.layer_names() and result.layer_names("resnet") == resnet.layer_names()
    within, rows, columns = result.block("vit")
    assert within.shape == (3, 3) and np.allclose(np.diag(within), 1)
    cross, rows, columns = result.block("vit", "resnet")
    assert cross.shape == (3, 2) and rows == vit.layer_names()
    assert result.metadata["n"] == 64 and result.metadata["num_batches"] == 4
    # the within-model block equals a run with that model alone (same batches)
    alone = layer_similarity([vit], dataset, n=64, batch_size=16)
    np.testing.assert_allclose(alone.block("vit")[0], within, atol=1e-10)


def test_every_batch_counts_including_a_short_last_one(dataset, vit):
    result = layer_similarity([vit], dataset, n=54, batch_size=16)  # 16 + 16 + 22 (remainder 6 >= 4 kept: 16,16,16,6)
    assert result.metadata["n"] == 54 and sum(result.metadata["batch_sizes"]) == 54


def test_layers_are_labelled_in_the_order_they_run():
    class Reversed(nn.Module):  # registers `late` before `early`, runs `early` first
        def __init__(self) -> None:
            super().__init__()
            self.late = BasicUnit(4, 4, 1)
            self.early = BasicUnit(1, 4, 1)

        def forward(self, x):
            return self.late(self.early(x))

    from seelike.models import _finish

    model = _finish(describe(Reversed(), "reversed", Preprocessing((1, 28, 28), (0.5,), (0.5,))))
    assert model.layer_names() == ["early", "late"]
    result = layer_similarity([model], load_dataset(DATA), n=16, batch_size=8)
    assert result.layer_names("reversed") == ["early", "late"]


def test_two_models_with_the_same_name_are_never_merged(dataset):
    first, second = load_model("seelike:vit?width=32&depth=2&heads=2&seed=0"), load_model("seelike:vit?width=32&depth=2&heads=2&seed=1")
    with pytest.raises(InvalidInputError, match="distinct"):
        layer_similarity([first, second], dataset, n=16, batch_size=8)
    second.label = "vit-seed1"
    result = layer_similarity([first, second], dataset, n=32, batch_size=16)
    cross = result.block("vit", "vit-seed1")[0]
    assert not np.allclose(cross, 1)  # different weights give different representations


def test_negative_estimates_are_reported_not_clamped():
    estimates = []
    for seed in range(30):  # independent data: the unbiased estimate is negative about half the time
        generator = torch.Generator().manual_seed(seed)
        accumulator = MinibatchCKA()
        accumulator.update({"a/x": torch.randn(8, 40, generator=generator), "b/y": torch.randn(8, 40, generator=generator)})
        estimates.append(accumulator.result().matrix[0, 1])
    assert min(estimates) < 0


def test_repeats_average_reshuffled_passes(dataset, vit):
    result = layer_similarity([vit], dataset, n=48, batch_size=16, repeats=3)
    assert result["cka_per_repeat"].shape == (3, 3, 3)
    np.testing.assert_allclose(result.matrix, result["cka_per_repeat"].mean(axis=0))
    single = layer_similarity([vit], dataset, n=48, batch_size=16)
    assert result["standard_error"].mean() == pytest.approx(single["standard_error"].mean(), rel=0.5)  # delta method, not the spread
    assert np.isfinite(result["standard_error"][0, 1])


def test_reshuffles_keep_the_same_images_in_another_order(dataset):
    first = iterate_batches(dataset, 16, n=40, shuffle=True, seed=3)
    again = iterate_batches(dataset, 16, n=40, shuffle=True, seed=3, reshuffle=2)
    assert sorted(first.order.tolist()) == sorted(again.order.tolist()) and first.order.tolist() != again.order.tolist()


def test_cka_command_writes_result_and_figures(tmp_path):
    out = tmp_path / "cka"
    runner = CliRunner()
    outcome = runner.invoke(app, ["cka", "seelike:vit?width=32&depth=2&heads=2", "seelike:resnet?widths=[8,16]&units_per_stage=[1,1]",
                                  "--data", DATA, "--n", "32", "--batch-size", "16", "--out", str(out)])
    assert outcome.exit_code == 0, outcome.output
    result = load_result(out)
    assert result.models == ["vit", "resnet"] and result.metadata["data"].startswith("synthetic")
    assert result.metadata["models"] == {"vit": "seelike:vit?width=32&depth=2&heads=2", "resnet": "seelike:resnet?widths=[8,16]&units_per_stage=[1,1]"}
    for name in ("cka_vit.png", "cka_resnet.png", "cka_vit_vs_resnet.png", "cka_vit_vs_resnet.svg"):
        assert (out / name).stat().st_size > 1000
    assert "mean CKA between distinct layers" in outcome.output and "best-match CKA" in outcome.output


def test_cka_command_reports_a_bad_layer_with_close_names(tmp_path):
    outcome = CliRunner().invoke(app, ["cka", "seelike:vit?width=32&depth=2&heads=2", "--data", DATA, "--layers", "blocks.0.atn", "--out", str(tmp_path)])
    assert outcome.exit_code == 2
    assert "blocks.0.attn" in outcome.output and "Closest" in outcome.output


def test_load_result_types_every_kind_in_a_fresh_process(tmp_path, dataset, vit):
    """load_result must give the typed result even when the caller never imported its module."""
    import subprocess
    import sys

    layer_similarity([vit], dataset, n=16, batch_size=8).save(tmp_path)
    code = f"from seelike import load_result; r = load_result({str(tmp_path)!r}); print(type(r).__name__, r.block('vit')[0].shape)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.split() == ["CKAResult", "(3,", "3)"]


def test_every_result_kind_has_its_module_registered():
    import importlib
    import pkgutil

    import seelike.analyses
    from seelike.results import _KIND_MODULES, _RESULT_KINDS

    for module in pkgutil.iter_modules(seelike.analyses.__path__):
        importlib.import_module(f"seelike.analyses.{module.name}")
    importlib.import_module("seelike.similarity")
    assert set(_RESULT_KINDS) - {"result", "bundle"} == set(_KIND_MODULES)


def test_global_run_options_reach_the_analysis(tmp_path):
    base = ["cka", "seelike:vit?width=32&depth=2&heads=2", "--data", DATA, "--n", "32", "--batch-size", "16"]
    full = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "fp32")])
    half = CliRunner().invoke(app, ["--precision", "bf16", "--threads", "1", *base, "--out", str(tmp_path / "bf16")])
    assert full.exit_code == 0 and half.exit_code == 0, half.output
    difference = abs(load_result(tmp_path / "bf16").matrix - load_result(tmp_path / "fp32").matrix).max()
    assert 0 < difference < 0.02  # bf16 reached the forward pass
    wrong = CliRunner().invoke(app, ["--precision", "int8", *base, "--out", str(tmp_path / "x")])
    assert wrong.exit_code == 2 and "precision must be one of fp32, bf16, fp16" in wrong.output


def test_cka_analyses_of_one_pass_share_each_layers_gram(monkeypatch):
    """Two CKA analyses reading the same layers in one pass compute each layer's Gram once and give what each gives alone."""
    from seelike.analyses.layer_similarity import LayerSimilarity
    from seelike.driver import run

    vit, cnn, dataset = load_model("seelike:vit?width=16&depth=2&heads=2"), load_model("seelike:resnet?widths=[8,16]&units_per_stage=[1,1]"), load_dataset(DATA)
    alone = [run([LayerSimilarity(models)], dataset, n=32, batch_size=16)[0] for models in ([vit], [vit, cnn])]
    grams = []
    original = MinibatchCKA.centred_row
    monkeypatch.setattr(MinibatchCKA, "centred_row", lambda self, x, name="x": grams.append(name) or original(self, x, name))
    together = run([LayerSimilarity([vit]), LayerSimilarity([vit, cnn])], dataset, n=32, batch_size=16)
    assert len(grams) == len(set(grams)) * 2  # every layer once per batch (two batches), though the ViT's are read twice
    for a, b in zip(together, alone):
        np.testing.assert_array_equal(a.matrix, b.matrix)
