"""Local heads vs lower CNN units (PAPER.md §3): ranks, windows, exactness of the one-pass CKA, CLI."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from seelike.analyses.head_similarity import (
    HeadSimilarityResult,
    head_similarity,
    head_windows,
    rank,
    spearman_correlation,
)
from seelike.capture import capture_batches
from seelike.cli import app
from seelike.data import iterate_batches, load_dataset
from seelike.errors import InvalidInputError
from seelike.models import load_model
from seelike.results import load_result
from seelike.similarity import MinibatchCKA


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic:n=64")


@pytest.fixture(scope="module")
def models():
    return load_model("seelike:vit?heads=8"), load_model("seelike:resnet")


def test_rank_and_spearman_hand_cases():
    assert rank([10, 20, 20, 30]).tolist() == [1, 2.5, 2.5, 4]
    assert spearman_correlation([1, 2, 3, 4], [10, 20, 40, 30]) == pytest.approx(0.8)  # 1 − 6·2/(4·15)
    assert spearman_correlation([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(3 / np.sqrt(10))  # ties: Pearson of mean ranks
    assert spearman_correlation([3.0, 1.0, 2.0], [0.1, 0.9, 0.5]) == pytest.approx(-1.0)
    with pytest.warns(RuntimeWarning, match="undefined"):
        assert np.isnan(spearman_correlation([1, 1, 1], [1, 2, 3]))


def test_windows_slide_by_one_then_single_heads():
    assert head_windows([3, 1, 0, 2], 2) == [[3, 1], [1, 0], [0, 2], [3], [1], [0], [2]]
    assert head_windows([3, 1, 0, 2], 1) == [[3], [1], [0], [2]]
    with pytest.raises(InvalidInputError, match="window size"):
        head_windows([0, 1], 3)


def test_runs_with_the_right_windows_and_matches_concatenated_windows(models, data):
    vit, cnn = models
    result = head_similarity(vit, cnn, data, n=32, batch_size=16, seed=3)
    heads, k = 8, 2  # default k = max(1, 8 // 4)
    assert result.metadata["window"] == k and result.metadata["num_heads"] == heads
    assert len(result["window_size"]) == (heads - k + 1) + heads
    assert result.units == ["stages.0.0", "stages.0.1", "stages.1.0"]  # first half of 6 units
    assert result.cka.shape == (15, 3) and result["spearman"].shape == (3,)
    order = result["head_order"]
    assert np.all(np.diff(result["head_distance"][order]) >= 0)
    windows = [[h for h in row if h >= 0] for row in result["window_heads"]]
    assert windows[0] == order[:2].tolist()
    assert result["window_distance"] == pytest.approx([result["head_distance"][w].mean() for w in windows])

    # independent: minibatch CKA of each window's concatenated head outputs on the same batches
    reference = MinibatchCKA()
    layers = [[vit.role(0, "heads")], [cnn.role(b, "output") for b in range(3)]]
    for activations, _, _ in capture_batches([vit, cnn], layers, iterate_batches(data, 16, n=32, shuffle=True, seed=3)):
        per_head = activations.pop(f"{vit.name}/blocks.0.heads").unflatten(-1, (heads, -1))
        windowed = {f"window.{i}": per_head[:, :, w].flatten(1) for i, w in enumerate(windows)}
        reference.update({**windowed, **activations})
    matrix = reference.result().matrix
    expected = matrix[: len(windows), len(windows) :]
    assert result.cka == pytest.approx(expected, abs=2e-5)  # equal up to float32 rounding of the Grams
    assert result["spearman"][0] == pytest.approx(spearman_correlation(result["window_distance"][:7], expected[:7, 0]))


def test_save_load_and_refusals(models, data, tmp_path):
    vit, cnn = models
    result = head_similarity(vit, cnn, data, n=8, batch_size=8, window=4, cnn_blocks=[2, 0])
    assert result.units == ["stages.1.0", "stages.0.0"] and result.cka.shape == (5 + 8, 2)
    loaded = load_result(result.save(tmp_path))
    assert isinstance(loaded, HeadSimilarityResult) and loaded.kind == "head_similarity"
    assert np.array_equal(loaded.cka, result.cka)
    with pytest.raises(InvalidInputError, match="no attention layers"):
        head_similarity(cnn, vit, data, n=8, batch_size=8)
    with pytest.raises(InvalidInputError, match="window size"):
        head_similarity(vit, cnn, data, n=8, batch_size=8, window=9)


def test_cli_writes_result_and_figure(tmp_path):
    out = tmp_path / "heads"
    run = CliRunner().invoke(app, ["heads", "seelike:vit", "seelike:resnet", "--data", "synthetic:n=64", "--n", "16",
                                   "--batch-size", "8", "--out", str(out)])
    assert run.exit_code == 0, run.output
    assert (out / "result.json").exists() and (out / "head_similarity.png").exists() and (out / "head_similarity.svg").exists()
    assert load_result(out).kind == "head_similarity"
    assert "Spearman" in run.output
