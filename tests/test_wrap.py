"""`seelike.models.wrap`: a researcher's own nn.Module in every analysis, and images of another shape converted with a notice."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from seelike.analyses.attention_distance import attention_distances
from seelike.analyses.layer_similarity import layer_similarity
from seelike.analyses.localization import spatial_localization
from seelike.analyses.probes import probe_layers
from seelike.analyses.receptive_field import effective_receptive_fields
from seelike.analyses.skip_norms import skip_norm_ratios
from seelike.data import load_dataset
from seelike.errors import InvalidInputError
from seelike.models import Preprocessing, wrap

DATA = "synthetic:n=64,size=28,channels=1,classes=4,seed=0"


class Unit(nn.Module):
    """A residual unit: relu(x + branch(x))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.branch(x))


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 4)  # defined first, runs last: wrap follows the forward pass, not the definition order
        self.stem = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.unit1 = Unit(8)
        self.unit2 = Unit(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.unit2(self.unit1(self.stem(x)))
        return self.head(x.mean(dim=(2, 3)))


class Block(nn.Module):
    """A pre-norm transformer block written by hand (no timm): x + attn(norm1(x)), then + mlp(norm2(x))."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.mixer = nn.MultiheadAttention(width, 2, batch_first=True)
        self.attn_out = nn.Identity()
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attn_out(self.mixer(y, y, y, need_weights=False)[0])
        return x + self.mlp(self.norm2(x))


class TokenModel(nn.Module):
    """4-px patches of a 28-px image (a 7 × 7 grid), a class token, two blocks."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Conv2d(1, width, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, width))
        self.blocks = nn.ModuleList([Block(width), Block(width)])
        self.head = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.head(x[:, 0])


def skip_roles(blocks: int) -> dict[str, tuple[str, ...] | str]:
    """The roles skip norms read, named on the hand-written blocks."""
    roles: dict[str, tuple[str, ...] | str] = {}
    for b in range(blocks):
        roles |= {f"blocks.{b}": ("input", "output"), f"blocks.{b}.attn_out": "attn", f"blocks.{b}.norm2": "attn_residual@input",
                  f"blocks.{b}.mlp": "mlp"}
    return roles


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(DATA)


def test_a_custom_cnn_defaults_to_its_children_in_forward_order_and_runs_cka(dataset):
    torch.manual_seed(0)
    model = wrap(SmallCNN(), {"input_size": (1, 28, 28)}, name="mycnn")
    assert model.name == "mycnn" and model.layer_names() == ["stem", "unit1", "unit2", "head"]
    assert [layer.kind for layer in model.block_layers()] == ["feature_map", "feature_map", "feature_map", "other"]
    result = layer_similarity([model], dataset, n=64, batch_size=32)
    assert result.matrix.shape == (4, 4) and np.allclose(np.diag(result.matrix), 1, atol=1e-6)


def test_a_custom_cnn_with_named_roles_gives_skip_ratios_that_match_its_tensors(dataset):
    torch.manual_seed(0)
    module = SmallCNN()
    roles = {"stem": "output"} | {f"unit{i}": ("output", "shortcut@input") for i in (1, 2)} | {f"unit{i}.branch": "branch" for i in (1, 2)}
    model = wrap(module, {"input_size": (1, 28, 28)}, layers=roles)
    result = skip_norm_ratios(model, dataset, n=64, batch_size=32)
    assert result.blocks == [1, 2]
    images = dataset.images(torch.arange(64))
    x = module.stem(images)
    expected = (x.flatten(1).norm(dim=1) / module.unit1.branch(x).flatten(1).norm(dim=1)).mean().item()
    assert result["shortcut_over_branch"][0] == pytest.approx(expected, rel=1e-4)


def test_a_custom_token_model_runs_cka_skips_localization_and_probes(dataset):
    model = wrap(TokenModel(), Preprocessing((1, 28, 28), (0.5,), (0.5,)), layers=skip_roles(2), name="mytokens")
    assert model.token_layout is not None and (model.token_layout.num_prefix_tokens, model.token_layout.grid, model.token_layout.patch_size) == (1, (7, 7), 4)
    cka = layer_similarity([model], dataset, n=64, batch_size=32)
    assert cka.matrix.shape == (2, 2)
    skips = skip_norm_ratios(model, dataset, n=64, batch_size=32)
    assert skips["attention_spatial"].shape == (2,) and np.all(np.isfinite(skips["attention_spatial"])) and "attention_cls" in skips.arrays
    local = spatial_localization(model, dataset, n=64, batch_size=32)
    assert np.isfinite(local["diagonal_gap"]).all()
    train = load_dataset(DATA, split="train")
    probes = probe_layers(model, train, dataset, n_train=64, n_test=64, batch_size=32, readouts=("cls", "gap"))
    assert set(probes.readouts) == {"cls", "gap"}
    erf = effective_receptive_fields(model, dataset, n=4, batch_size=4, channels="exact")
    assert len(erf.layer_names) == 2


def test_a_module_built_from_timm_blocks_gets_every_role_and_attention_maps(dataset):
    from timm.models.vision_transformer import Block as TimmBlock

    class TimmBlocks(TokenModel):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList([TimmBlock(16, num_heads=2), TimmBlock(16, num_heads=2)])

    model = wrap(TimmBlocks(), {"input_size": (1, 28, 28)})
    assert model.family == "custom vit" and len(model.attention_layers()) == 2 and model.token_layout.num_prefix_tokens == 1
    result = attention_distances(model, dataset, n=32, batch_size=32)
    assert result.distance.shape == (2, 2) and np.isfinite(result.distance).all()


def test_wrap_says_what_is_wrong_in_one_line():
    with pytest.raises(InvalidInputError, match="input_size"):
        wrap(SmallCNN(), {"mean": (0.5,)})
    with pytest.raises(InvalidInputError, match="no submodule 'unit9'"):
        wrap(SmallCNN(), {"input_size": (1, 28, 28)}, layers=["stem", "unit9"])
    with pytest.raises(InvalidInputError, match="lies in no block"):
        wrap(SmallCNN(), {"input_size": (1, 28, 28)}, layers={"stem": "output", "unit1.branch": "branch"})
    with pytest.raises(InvalidInputError, match="failed on a blank"):
        wrap(SmallCNN(), {"input_size": (3, 28, 28)})


def test_images_of_another_shape_are_converted_with_a_notice_logged_once(dataset, caplog):
    torch.manual_seed(0)
    model = wrap(SmallCNN().__class__(), {"input_size": (1, 28, 28)})
    model.module.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    model.preprocessing = Preprocessing((3, 32, 32), (0.0,) * 3, (1.0,) * 3)
    with caplog.at_level(logging.WARNING, logger="seelike.models.model"):
        layer_similarity([model], dataset, n=64, batch_size=32)
    notices = [r.getMessage() for r in caplog.records if "converting" in r.getMessage()]
    assert len(notices) == 1 and "3×32×32" in notices[0] and "1×28×28" in notices[0]
    assert "grey channel repeated" in notices[0] and "resized to 32×32" in notices[0]
