"""Skip-connection norm ratios (paper Fig 7) and the neighbour CKA of the no-skip comparison (Fig 8)."""

from __future__ import annotations

import copy
import dataclasses
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from seelike import load_result
from seelike.analyses.skip_norms import (
    SkipNormResult,
    SkipNorms,
    neighbour_cka,
    skip_norm_ratios,
)
from seelike.capture import Capture
from seelike.cli import app
from seelike.data import iterate_batches, load_dataset
from seelike.errors import InvalidInputError, ModelLoadError
from seelike.models import load_model
from seelike.models.adapters import describe
from seelike.models.model import Layer, Model, Preprocessing
from seelike.similarity import CKAResult

DATA = "synthetic:n=64,size=28,channels=1,classes=4,seed=0"
VIT = "seelike:vit?width=32&depth=3&heads=2"


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(DATA)


@pytest.fixture(scope="module")
def vit():
    return load_model(VIT)


def test_ratio_is_the_mean_of_per_image_token_ratios(dataset, vit):
    result = skip_norm_ratios(vit, dataset, n=32, batch_size=32)
    batch = next(iter(iterate_batches(dataset, 32, n=32, shuffle=True, seed=0)))[0]
    with Capture(vit, [vit.role(1, "input"), vit.role(1, "attn"), vit.role(1, "attn_residual"), vit.role(1, "mlp")]) as capture:
        z, a, z2, m = (capture(batch)[f"blocks.1.{role}"] for role in ("input", "attn", "attn_residual", "mlp"))
    np.testing.assert_allclose(result["attention_per_token"][1], (z.norm(dim=-1) / a.norm(dim=-1)).mean(0).double().numpy(), rtol=1e-5)
    np.testing.assert_allclose(result["mlp_per_token"][1], (z2.norm(dim=-1) / m.norm(dim=-1)).mean(0).double().numpy(), rtol=1e-5)


def test_scaling_a_branch_by_c_scales_its_ratio_by_one_over_c(dataset, vit):
    before = skip_norm_ratios(vit, dataset, n=32, batch_size=16)
    scaled = copy.deepcopy(vit)
    with torch.no_grad():
        scaled.module.blocks[1].attn.proj.weight.mul_(4.0)
        scaled.module.blocks[1].attn.proj.bias.mul_(4.0)
    after = skip_norm_ratios(scaled, dataset, n=32, batch_size=16)
    np.testing.assert_allclose(after["attention_per_token"][:2], before["attention_per_token"][:2] / np.array([[1.0], [4.0]]), rtol=1e-5)


def test_cls_and_spatial_lines_are_kept_apart(dataset):
    model = load_model(VIT)
    with torch.no_grad():  # z_CLS = v in block 0; LN makes the attention branch blind to |v|
        model.module.pos_embed[:, 0] = 0
        model.module.cls_token.copy_(torch.randn(1, 1, 32))
    before = skip_norm_ratios(model, dataset, n=32, batch_size=16)
    with torch.no_grad():
        model.module.cls_token.mul_(10.0)
    after = skip_norm_ratios(model, dataset, n=32, batch_size=16)
    assert after["attention_cls"][0] == pytest.approx(10 * before["attention_cls"][0], rel=1e-3)
    assert after["attention_spatial"][0] == pytest.approx(before["attention_spatial"][0], rel=1e-3)
    np.testing.assert_allclose(after["attention_cls"], after["attention_per_token"][:, 0])
    np.testing.assert_allclose(after["mlp_spatial"], after["mlp_per_token"][:, 1:].mean(axis=1))
    assert list(after.lines()) == ["attention, CLS", "attention, spatial", "MLP, CLS", "MLP, spatial"]
    gap = skip_norm_ratios(load_model(VIT + "&classifier=gap"), dataset, n=16, batch_size=16)
    assert "attention_cls" not in gap.arrays and not gap.metadata["has_cls"]
    np.testing.assert_allclose(gap["attention_spatial"], gap["attention_per_token"].mean(axis=1))



def test_removed_skips_are_nan_and_named(dataset):
    model = load_model(VIT + "&no_attention_skip=[1]&no_mlp_skip=[2]")
    with pytest.warns(RuntimeWarning, match="no skip connection"):
        result = skip_norm_ratios(model, dataset, n=16, batch_size=16)
    assert result.metadata["no_skip"] == {"attention": [1], "mlp": [2]}
    assert np.isnan(result["attention_spatial"][1]) and np.isnan(result["mlp_cls"][2])
    assert np.isfinite(result["mlp_spatial"][1]) and np.isfinite(result["attention_cls"][2])
    # found numerically too, where the model declares nothing (a block that drops its attention skip)
    plain = load_model(VIT)
    block = plain.module.blocks[0]
    block.forward = lambda x: (lambda y: y + block.mlp(block.norm2(y)))(block.attn(block.norm1(x)))
    with pytest.warns(RuntimeWarning, match="no skip connection"):
        assert skip_norm_ratios(plain, dataset, n=16, batch_size=16).metadata["no_skip"]["attention"] == [0]


def test_a_model_without_skips_is_refused_with_what_works():
    with pytest.raises(InvalidInputError, match="keeps at least one skip"):
        SkipNorms(load_model(VIT + "&no_attention_skip=[0,1,2]&no_mlp_skip=[0,1,2]"))
    plain_cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    preprocessing = Preprocessing((1, 28, 28), (0.0,), (1.0,))
    with pytest.raises(ModelLoadError, match="residual units"):
        describe(plain_cnn, "plain-cnn", preprocessing)
    layers = (Layer("0", "0", "feature_map", 0), Layer("2", "2", "feature_map", 1))
    with pytest.raises(InvalidInputError, match="pre-norm blocks .* residual units"):
        SkipNorms(Model(plain_cnn, "plain-cnn", "cnn", layers, preprocessing))


def test_resnet_ratio_is_shortcut_over_branch(dataset):
    model = load_model("seelike:resnet?widths=[8,16]&units_per_stage=[1,1]")
    with pytest.warns(RuntimeWarning, match="exactly zero"):  # zero-initialised last BN: branch 0, ratio inf
        assert np.isinf(skip_norm_ratios(model, dataset, n=16, batch_size=16)["shortcut_over_branch"]).all()
    for stage in model.module.stages:
        torch.nn.init.ones_(stage[0].bn2.weight)
    result = skip_norm_ratios(model, dataset, n=16, batch_size=16)
    images = next(iter(iterate_batches(dataset, 16, n=16, shuffle=True, seed=0)))[0]
    with Capture(model, [model.role(1, "shortcut"), model.role(1, "branch")]) as capture:
        captured = capture(images)
    shortcut, branch = captured["stages.1.0.shortcut"], captured["stages.1.0.branch"]
    expected = (shortcut.flatten(1).norm(dim=1) / branch.flatten(1).norm(dim=1)).mean().item()
    assert result.structure == "residual" and result.blocks == [0, 1]
    assert result["shortcut_over_branch"][1] == pytest.approx(expected, rel=1e-5)
    assert list(result.lines()) == ["shortcut / branch"]


@pytest.mark.parametrize("spec", ["timm:vit_tiny_patch16_224?img_size=32", "timm:resnet18", "seelike:mixer?width=16&depth=2"])
def test_timm_models_and_mixer_run(spec, dataset, tmp_path):
    model = load_model(spec)
    if model.family == "resnet":  # small inputs keep the test fast
        model.preprocessing = dataclasses.replace(model.preprocessing, input_size=(3, 32, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # timm zero-initialises the last BN of each unit
        result = skip_norm_ratios(model, dataset, n=8, batch_size=8)
    assert len(result.blocks) == (12 if "vit" in spec else 8 if "resnet" in spec else 2)
    for values in result.lines().values():
        assert not np.isnan(values).any() and (values > 0).all()
    loaded = load_result(result.save(tmp_path))
    assert isinstance(loaded, SkipNormResult) and loaded.lines().keys() == result.lines().keys()


def test_neighbour_cka_reads_blocks_either_side():
    names = ["m/blocks.0", "m/blocks.1", "m/blocks.1.attn", "m/blocks.2", "m/blocks.3", "other/blocks.0"]
    matrix = np.arange(36, dtype=float).reshape(6, 6) / 36
    result = CKAResult(arrays={"cka": matrix}, metadata={"names": names})
    assert neighbour_cka(result, "m", 1) == matrix[0, 3]  # blocks.0 vs blocks.2; the sub-layer is skipped
    assert neighbour_cka(result, "m", 2) == matrix[1, 4]
    with pytest.raises(InvalidInputError, match="1..2"):
        neighbour_cka(result, "m", 3)


def test_skips_command(tmp_path):
    out = tmp_path / "skips"
    outcome = CliRunner().invoke(app, ["skips", VIT, "--data", DATA, "--n", "16", "--batch-size", "16", "--out", str(out)])
    assert outcome.exit_code == 0, outcome.output
    assert "attention, CLS" in outcome.output and (out / "skip_norms.png").exists() and (out / "skip_norms.svg").exists()
    assert load_result(out).kind == "skip_norms"
    refused = CliRunner().invoke(app, ["skips", VIT + "&no_attention_skip=[0,1,2]&no_mlp_skip=[0,1,2]", "--data", DATA, "--n", "16", "--out", str(out)])
    assert refused.exit_code == 2 and "at least one skip" in refused.output


def test_skips_command_draws_a_vit_beside_a_resnet(tmp_path):
    out = tmp_path / "skips"
    resnet = "seelike:resnet?widths=[8,16]&units_per_stage=[2,2]"
    outcome = CliRunner().invoke(app, ["skips", VIT, resnet, "--data", DATA, "--n", "16", "--batch-size", "16", "--out", str(out)])
    assert outcome.exit_code == 0, outcome.output
    assert "attention, CLS" in outcome.output and "shortcut / branch" in outcome.output
    assert load_result(out / "vit").kind == load_result(out / "resnet").kind == "skip_norms"
    assert (out / "skip_norms.png").exists()
