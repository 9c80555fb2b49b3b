"""Data-scale CKA against the 100% model with a seed baseline (paper Fig 12; PAPER.md §7) and `seelike datascale`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from seelike import load_result
from seelike.analyses.data_scale import compare_to_reference, data_scale
from seelike.cli import app
from seelike.data import load_dataset
from seelike.errors import InvalidInputError
from seelike.models import load_model
from seelike.similarity import CKAResult

VIT = "seelike:vit?width=32&depth=3&heads=2"
DATA = "synthetic:n=64,size=28,channels=1,classes=4,seed=0"


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(DATA)


def hand_made(cka_model: list[float], se_model: list[float], cka_seed: list[float], se_seed: list[float]) -> CKAResult:
    """A CKAResult over ref/b0..b1, data/b0..b1, seed/b0..b1 with the given reference-diagonal values."""
    names = [f"{model}/b{i}" for model in ("ref", "data", "seed") for i in range(2)]
    cka, se = np.eye(6), np.zeros((6, 6))
    for offset, values, errors in ((2, cka_model, se_model), (4, cka_seed, se_seed)):
        for i in range(2):
            cka[i, offset + i] = cka[offset + i, i] = values[i]
            se[i, offset + i] = se[offset + i, i] = errors[i]
    return CKAResult(arrays={"cka": cka, "standard_error": se, "hsic": cka}, metadata={"names": names, "n": 100})


def test_the_changed_rule_uses_the_combined_standard_error():
    combined = math.sqrt(0.03**2 + 0.04**2)  # 0.05
    below, above = 0.9 - 2 * combined - 1e-6, 0.9 - 2 * combined + 1e-6
    arrays = compare_to_reference(hand_made([below, above], [0.03, 0.03], [0.9, 0.9], [0.04, 0.04]), "ref", ["data"], "seed")
    assert arrays["changed"].tolist() == [[True, False]]
    np.testing.assert_allclose(arrays["threshold"], [[0.8, 0.8]], atol=1e-12)
    # the same CKA gap is no change when the standard errors are large, and a change when they are tiny
    gap = hand_made([0.7, 0.7], [0.2, 0.001], [0.9, 0.9], [0.1, 0.001])
    assert compare_to_reference(gap, "ref", ["data"], "seed")["changed"].tolist() == [[False, True]]


def test_mismatched_block_counts_are_an_error(dataset):
    with pytest.raises(InvalidInputError, match="has 2 blocks but the reference vit has 3"):
        shallow = load_model("seelike:vit?width=32&depth=2&heads=2")
        shallow.label = "shallow"
        data_scale(load_model(VIT), [shallow], load_model(VIT), dataset)
    result = hand_made([0.5, 0.5], [0.0, 0.0], [0.9, 0.9], [0.0, 0.0])
    short = CKAResult(arrays=result.arrays, metadata={**result.metadata, "names": ["ref/b0", "ref/b1", "data/b0", "data/b1", "data/b2", "seed/b0"]})
    with pytest.raises(InvalidInputError, match="data has 3 blocks but the reference ref has 2"):
        compare_to_reference(short, "ref", ["data"], "seed")


def test_a_model_against_itself_is_one_everywhere_and_nothing_changes(dataset):
    vit = load_model(VIT)
    result = data_scale(vit, [vit], vit, dataset, n=64, batch_size=16)
    np.testing.assert_allclose(result["per_block_cka"], 1.0, atol=1e-6)
    np.testing.assert_allclose(result["baseline"], 1.0, atol=1e-6)
    assert not result["changed"].any() and result.changed_blocks("vit") == []


def test_a_random_model_differs_from_a_trained_like_one(dataset):
    trained = load_model(VIT + "&seed=3")
    trained.label = "trained-like"
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # large block weights: blocks that transform the tokens, as training makes them
        for parameter in trained.module.blocks.parameters():
            if parameter.ndim == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 2 / math.sqrt(parameter.shape[1]))
    random = load_model(VIT)
    result = data_scale(trained, [random], trained, dataset, n=64, batch_size=16)
    assert np.all(result["per_block_cka"] < 0.6) and result.changed_blocks("vit") == [0, 1, 2]


def test_datascale_command(tmp_path):
    out = tmp_path / "datascale"
    invocation = CliRunner().invoke(app, ["datascale", VIT, VIT + "&seed=1", VIT + "&seed=2", "--baseline", VIT + "&seed=3",
                                          "--data", DATA, "--out", str(out), "--n", "64", "--batch-size", "16"])
    assert invocation.exit_code == 0, invocation.output
    result = load_result(out)
    assert result.kind == "data_scale" and result["per_block_cka"].shape == (2, 3) and result["changed"].dtype == bool
    assert result.metadata["models"] == ["vit[seed=1]", "vit[seed=2]"] and result.metadata["baseline"] == "vit[seed=3]"
    assert (out / "data_scale.png").exists() and (out / "data_scale.svg").exists()
    assert "CKA with vit" in invocation.output
