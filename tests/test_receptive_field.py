"""Effective receptive fields (PAPER.md §4): known supports, exact channel averaging, hooks, real models, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from seelike.analyses.receptive_field import (
    ReceptiveFieldResult,
    effective_receptive_fields,
    mass_radius,
)
from seelike.cli import app
from seelike.data import load_dataset
from seelike.errors import SeelikeError
from seelike.models import load_model
from seelike.models.model import Layer, Model, Preprocessing
from seelike.results import load_result


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic:n=64")


def wrap(module: nn.Module, module_path: str = "") -> Model:
    """A Model whose only layer is ``module``'s output: a feature map, block 0, role "output"."""
    layer = Layer("out", module_path, "feature_map", block=0, role="output")
    return Model(module.eval(), "test:" + type(module).__name__, "cnn", (layer,), Preprocessing((1, 28, 28), (0.0,), (1.0,)))


def conv3x3(stride: int = 1) -> nn.Conv2d:
    torch.manual_seed(0)
    return nn.Conv2d(1, 4, 3, stride=stride, padding=1)


def support(erf: np.ndarray) -> tuple[list[int], list[int]]:
    rows, columns = np.nonzero(erf)
    return sorted(set(rows.tolist())), sorted(set(columns.tolist()))


@pytest.mark.parametrize("channels", ["exact", "sum"])
def test_single_conv_has_exactly_its_3x3_support(channels, data):
    result = effective_receptive_fields(wrap(conv3x3()), data, n=8, batch_size=4, channels=channels)
    erf = result.maps[0]
    assert support(erf) == ([13, 14, 15], [13, 14, 15])
    assert np.count_nonzero(erf) == 9 and erf.max() == 1.0
    assert result.metadata["channel_average"] == channels
    assert result["centre"][0].tolist() == [14.0, 14.0]


def test_channel_averaging_is_exact_or_the_gradient_of_the_sum(data):
    """∂y_c(14, 14)/∂x[13 + u, 13 + v] = w[c, 0, u, v] (std 1), so the maps are known in closed form."""
    conv = conv3x3()
    weights = conv.weight.detach()[:, 0].double()  # [C, 3, 3]
    exact = effective_receptive_fields(wrap(conv), data, n=8, channels="exact").maps[0][13:16, 13:16]
    summed = effective_receptive_fields(wrap(conv), data, n=8, channels="sum").maps[0][13:16, 13:16]
    expected_exact = weights.abs().mean(0)
    expected_sum = weights.sum(0).abs()
    assert exact == pytest.approx((expected_exact / expected_exact.max()).numpy(), abs=1e-6)
    assert summed == pytest.approx((expected_sum / expected_sum.max()).numpy(), abs=1e-6)
    assert not np.allclose(exact, summed)  # the two averages differ: the result must say which one it used


def test_auto_picks_exact_when_small(data):
    assert effective_receptive_fields(wrap(conv3x3()), data, n=4).metadata["channel_average"] == "exact"
    assert effective_receptive_fields(wrap(conv3x3()), data, n=4, exact_limit=2).metadata["channel_average"] == "sum"


def test_strided_conv_centre_is_the_support_centre(data):
    """28 → 14 with stride 2: position (7, 7) sees input pixels 13..15, centred on 14 = 7 · stride."""
    result = effective_receptive_fields(wrap(conv3x3(stride=2)), data, n=4, channels="sum")
    assert support(result.maps[0]) == ([13, 14, 15], [13, 14, 15])
    assert result["centre"][0].tolist() == [14.0, 14.0]


def test_identity_sees_only_its_centre_pixel(data):
    result = effective_receptive_fields(wrap(nn.Identity()), data, n=4)
    erf = result.maps[0]
    assert np.count_nonzero(erf) == 1 and erf[14, 14] == 1.0
    assert result["radius_50"][0] == result["radius_90"][0] == 0.0


def test_mass_radius_known_values():
    square = np.zeros((9, 9))
    square[3:6, 3:6] = 1.0  # centre 1/9, four at distance 1, four at √2
    assert mass_radius(square, (4.0, 4.0), 0.5) == 1.0
    assert mass_radius(square, (4.0, 4.0), 0.9) == pytest.approx(np.sqrt(2))


def test_vit_maps_are_normalised_and_hooks_removed(data):
    vit = load_model("seelike:vit")
    with torch.inference_mode():  # gradients are still taken: the ERF leaves inference mode itself
        result = effective_receptive_fields(vit, data, n=8, batch_size=8, channels="sum")
    assert result.maps.shape == (6, 28, 28)
    assert result.maps.min() >= 0 and np.allclose(result.maps.max(axis=(1, 2)), 1.0)
    assert (result["radius_50"] <= result["radius_90"]).all()
    assert result["centre"][0].tolist() == [13.5, 13.5]  # grid centre patch (3, 3) of 4 px: pixels 12..15
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in vit.module.modules())
    pre = effective_receptive_fields(vit, data, n=4, blocks=[0, 5], pre_residual=True, channels="sum")
    assert pre.metadata["roles"] == ["mlp", "mlp"] and pre.metadata["layers"] == ["blocks.0.mlp", "blocks.5.mlp"]


def test_a_failing_layer_leaves_no_hook(data):
    conv = conv3x3()
    good = Layer("out", "", "feature_map", block=0, role="output")
    bad = Layer("gone", "missing", "feature_map", block=1, role="output")
    model = Model(conv, "test:conv", "cnn", (good, bad), Preprocessing((1, 28, 28), (0.0,), (1.0,)))
    with pytest.raises(SeelikeError, match="does not exist"):
        effective_receptive_fields(model, data, n=4)
    assert not conv._forward_hooks


def test_save_load_roundtrip(data, tmp_path):
    result = effective_receptive_fields(wrap(conv3x3()), data, n=4)
    loaded = load_result(result.save(tmp_path))
    assert isinstance(loaded, ReceptiveFieldResult) and loaded.kind == "receptive_field"
    assert np.array_equal(loaded.maps, result.maps) and loaded.metadata["channel_average"] == "exact"


def test_cli_writes_result_and_figures(tmp_path):
    for model, extra in (("seelike:vit", []), ("seelike:resnet", ["--pre-residual", "--blocks", "0,1"])):
        out = tmp_path / model.split(":")[1]
        run = CliRunner().invoke(app, ["erf", model, "--data", "synthetic:n=64", "--n", "4", "--channels", "sum", "--out", str(out), *extra])
        assert run.exit_code == 0, run.output
        figure = "receptive_field_pre_residual" if extra else "receptive_field"
        assert (out / "result.json").exists() and (out / f"{figure}.png").exists() and (out / f"{figure}.svg").exists()
        assert load_result(out).kind == "receptive_field"
    assert "0 everywhere" in run.output  # the random-init ResNet's zero-initialised branches: warned, not hidden
