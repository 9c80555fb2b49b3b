"""Spatial localization (paper Fig 9, 10): token-vs-input-cell CKA and its scores."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import Tensor, nn
from typer.testing import CliRunner

from seelike import load_result
from seelike.analyses.localization import (
    Localization,
    LocalizationResult,
    default_positions,
    localization_scores,
    parse_positions,
    pixel_cells,
    spatial_localization,
)
from seelike.cli import app
from seelike.data import load_dataset
from seelike.driver import run
from seelike.errors import InvalidInputError
from seelike.models import load_model
from seelike.models.model import Layer, Model, Preprocessing, TokenLayout
from seelike.plots import figures

DATA = "synthetic:n=64,size=28,channels=1,classes=4,seed=0"
VIT = "seelike:vit?width=32&depth=3&heads=2"


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(DATA)


class PatchTokens(nn.Module):
    """Tokens = the pixels of their own 4×4 patch (or, ``mean``: every token the image's mean patch), after one prefix token."""

    def __init__(self, mean: bool = False) -> None:
        super().__init__()
        self.mean = mean
        self.block = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        patches = x.unfold(2, 4, 4).unfold(3, 4, 4).permute(0, 2, 3, 1, 4, 5).flatten(3).flatten(1, 2)  # [B, 49, 16]
        if self.mean:
            patches = patches.mean(dim=1, keepdim=True).expand_as(patches)
        prefix = torch.full_like(patches[:, :1], 7.0)  # a constant CLS-like token that must be skipped
        return self.block(torch.cat([prefix, patches], dim=1))


def patch_model(mean: bool = False) -> Model:
    layers = (Layer("block", "block", "tokens", 0),)
    return Model(PatchTokens(mean), "patches", "vit", layers, Preprocessing((1, 28, 28), (0.0,), (1.0,)), TokenLayout(1, (7, 7), 4))


def test_tokens_that_are_their_own_patch_localize_perfectly(dataset):
    result = spatial_localization(patch_model(), dataset, n=64, batch_size=32)
    assert result.layers == ["block"] and result.grid("block") == (7, 7) and result["cka"].shape == (1, 49, 49)
    assert result["share_first"][0] == 1.0
    np.testing.assert_allclose(np.diag(result["cka"][0]), 1.0, atol=1e-9)
    assert result["diagonal_gap"][0] > 0.3
    assert result.heatmap("block", (2, 3))[2, 3] == pytest.approx(1.0)


def test_tokens_that_are_the_mean_patch_do_not_localize(dataset):
    result = spatial_localization(patch_model(mean=True), dataset, n=64, batch_size=32)
    cka = result["cka"][0]
    np.testing.assert_allclose(cka, np.broadcast_to(cka[0], cka.shape))  # every token sees the same
    assert result["share_first"][0] <= 2 / 49
    assert abs(result["diagonal_gap"][0]) < 1e-9


def test_scores_and_helpers():
    assert localization_scores(np.eye(4)) == {"share_first": 1.0, "diagonal_gap": 1.0, "diagonal_mean": 1.0, "off_diagonal_mean": 0.0}
    grid = np.eye(3)
    grid[1, 1] = np.nan
    assert localization_scores(grid)["share_first"] == pytest.approx(2 / 3)
    assert default_positions((7, 7)) == [(1, 1), (1, 3), (3, 3)] and default_positions((1, 1)) == [(0, 0)]
    assert default_positions((3, 3)) == [(0, 0), (0, 1), (1, 1)]  # too small to step in from the border
    assert parse_positions(["0,0 1,2", "3,3;4,4"]) == [(0, 0), (1, 2), (3, 3), (4, 4)]
    with pytest.raises(InvalidInputError, match="ROW,COLUMN"):
        parse_positions(["0-0"])
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    cells = pixel_cells(image, (2, 2))
    assert len(cells) == 4 and cells[1].tolist() == [[2.0, 3.0, 6.0, 7.0]]


@pytest.mark.parametrize("spec, prefix", [(VIT, 1), (VIT + "&classifier=gap", 0)])
def test_vit_path_skips_prefix_tokens(spec, prefix, dataset, tmp_path):
    model = load_model(spec)
    result = spatial_localization(model, dataset, n=32, batch_size=16, positions=[(0, 0), (6, 6)])
    assert result.layers == ["blocks.1", "blocks.2"] and result.metadata["num_prefix_tokens"] == prefix
    assert result["cka"].shape == (2, 49, 49) and np.isfinite(result["cka"]).all()
    assert ((0 <= result["share_first"]) & (result["share_first"] <= 1)).all()
    loaded = load_result(result.save(tmp_path))
    assert isinstance(loaded, LocalizationResult) and loaded.positions("blocks.2") == [(0, 0), (6, 6)]
    np.testing.assert_array_equal(loaded.heatmap(1, (6, 6)), result.heatmap("blocks.2", (6, 6)))
    figure = figures(loaded)["localization"]
    assert len(figure.axes) == 2 * 2 + 1  # layers × positions + colour bar
    plt.close(figure)


def test_cnn_path_compares_feature_map_positions_with_cells_of_their_grid(dataset):
    model = load_model("seelike:resnet?widths=[8,16]&units_per_stage=[1,1]")
    result = spatial_localization(model, dataset, n=16, batch_size=16, layers="stages.1.0")
    assert result.metadata["grids"] == [[14, 14]] and result["cka"].shape == (1, 196, 196)
    assert result.heatmap("stages.1.0", (13, 0)).shape == (14, 14) and result.positions(0) == [(1, 1), (1, 7), (7, 7)]


def test_layers_of_different_grids_are_padded(dataset):
    model = load_model("seelike:resnet?widths=[4,8]&units_per_stage=[1,1]")
    accumulator = Localization(model)  # default: the last two units
    assert accumulator.grids == [(28, 28), (14, 14)]
    one_pass = run([accumulator], dataset, n=16, batch_size=8)[0]
    assert np.isfinite(one_pass["cka"][0]).all() and np.isfinite(one_pass["cka"][1, :196, :196]).all()
    assert np.isnan(one_pass["cka"][1, 196:]).all() and np.isnan(one_pass["cka"][1, :, 196:]).all()


def test_models_on_the_same_input_share_its_cells_and_give_their_own_numbers(dataset, monkeypatch):
    """Two models in one pass, on the same preprocessed input: the cells' Grams are computed once per batch
    (Batch.derive), and each model's result is the one it gets alone; another input gets its own cells."""
    import seelike.analyses.localization as localization

    vit, cnn = load_model(VIT), load_model("seelike:resnet?widths=[8,16]&units_per_stage=[1,1]")
    twin = load_model(f"{VIT}&seed=1")  # the same input as vit: its cells are shared
    twin.label = "twin"
    other = load_model(VIT)
    other.preprocessing = Preprocessing((1, 28, 28), (0.5,), (0.25,))  # another normalisation: other cells
    other.label = "other"
    models = (vit, twin, cnn, other)
    calls = []
    monkeypatch.setattr(localization, "pixel_cells", lambda inputs, grid, cut=localization.pixel_cells: calls.append(grid) or cut(inputs, grid))
    alone = [run([Localization(model, "blocks.2" if model is not cnn else "stages.1.0")], dataset, n=32, batch_size=16)[0]
             for model in models]
    calls.clear()
    together = run([Localization(model, "blocks.2" if model is not cnn else "stages.1.0") for model in models], dataset, n=32, batch_size=16)
    assert sorted(calls) == sorted([(7, 7), (14, 14), (7, 7)] * 2)  # per batch: vit's and twin's 7×7 cells once, the CNN's 14×14, other's own
    for one, shared in zip(alone, together):
        np.testing.assert_array_equal(one["cka"], shared["cka"])
    assert not np.array_equal(alone[0]["cka"], alone[1]["cka"]) and not np.array_equal(alone[0]["cka"], alone[3]["cka"])


def test_layers_without_a_grid_and_positions_outside_it_are_refused(dataset):
    vit = load_model(VIT)
    with pytest.raises(InvalidInputError, match=r"blocks.0.attn_probs .* has none. Layers that work include the block outputs blocks.0"):
        Localization(vit, "blocks.0.attn_probs")
    with pytest.raises(InvalidInputError, match="token_mixing"):
        Localization(load_model("seelike:mixer?width=16&depth=2"), "blocks.0.token_mixing")
    with pytest.raises(InvalidInputError, match="outside the 7×7 grid"):
        spatial_localization(vit, dataset, n=16, batch_size=16, positions=[(7, 0)])


def test_localize_command(tmp_path):
    out = tmp_path / "localize"
    outcome = CliRunner().invoke(app, ["localize", VIT, "--data", DATA, "--n", "16", "--batch-size", "16", "--layer", "blocks.2",
                                       "--positions", "0,0 3,3", "--out", str(out)])
    assert outcome.exit_code == 0, outcome.output
    assert "blocks.2 (7×7): own cell first" in outcome.output
    assert (out / "localization.png").exists() and (out / "localization.svg").exists()
    assert load_result(out).metadata["positions"] == [[0, 0], [3, 3]]
    refused = CliRunner().invoke(app, ["localize", VIT, "--data", DATA, "--n", "16", "--layer", "blocks.0.heads", "--out", str(out)])
    assert refused.exit_code == 2 and "spatial grid" in refused.output
