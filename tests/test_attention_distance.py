"""Mean attention distance (PAPER.md §2): known answers, an independent loop, streaming, real ViTs, CLI."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from typer.testing import CliRunner

from seelike.analyses.attention_distance import (
    AttentionDistance,
    AttentionDistanceResult,
    attention_distances,
    mean_attention_distance,
    patch_distances,
    prefix_attention_mass,
    uniform_attention_distance,
)
from seelike.capture import Capture
from seelike.cli import app
from seelike.data import load_dataset
from seelike.driver import feed
from seelike.errors import InvalidInputError
from seelike.models import load_model
from seelike.results import load_result

GRID, PATCH = (7, 7), 4
P = GRID[0] * GRID[1]


@pytest.fixture(scope="module")
def vit():
    return load_model("seelike:vit")


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic:n=64")


def mean_pairwise_distance(grid: tuple[int, int], patch: int) -> float:
    """Independent: mean over all ordered pairs of patch positions of patch · Euclidean distance."""
    cells = list(itertools.product(range(grid[0]), range(grid[1])))
    return sum(patch * math.dist(a, b) for a, b in itertools.product(cells, cells)) / len(cells) ** 2


def empty_attention(batch: int = 2, heads: int = 3, prefix: int = 1) -> torch.Tensor:
    return torch.zeros(batch, heads, prefix + P, prefix + P, dtype=torch.float64)


def test_attention_on_self_gives_zero():
    attn = empty_attention()
    attn[..., range(1 + P), range(1 + P)] = 1.0
    assert torch.equal(mean_attention_distance(attn, GRID, PATCH), torch.zeros(3, dtype=torch.float64))


def test_uniform_attention_gives_mean_pairwise_distance():
    expected = mean_pairwise_distance(GRID, PATCH)
    assert expected == pytest.approx(14.4, abs=0.05)  # PAPER.md §2 reference
    attn = empty_attention()
    attn[:, :, :, 1:] = 1.0 / P  # every query uniform over the patch grid, nothing on CLS
    distance = mean_attention_distance(attn, GRID, PATCH)
    assert torch.allclose(distance, torch.full((3,), expected, dtype=torch.float64), atol=1e-9)
    assert uniform_attention_distance(GRID, PATCH) == pytest.approx(expected, abs=1e-9)
    assert uniform_attention_distance((14, 14), 16) == pytest.approx(116.5, abs=0.05)


def test_attention_on_horizontal_neighbour_gives_one_patch():
    attn = empty_attention()
    for row, column in itertools.product(range(GRID[0]), range(GRID[1])):
        neighbour = column + 1 if column + 1 < GRID[1] else column - 1
        attn[:, :, 1 + row * GRID[1] + column, 1 + row * GRID[1] + neighbour] = 1.0
    assert torch.allclose(mean_attention_distance(attn, GRID, PATCH), torch.full((3,), float(PATCH), dtype=torch.float64))
    assert torch.allclose(mean_attention_distance(attn, GRID, PATCH, renormalise=True), torch.full((3,), float(PATCH), dtype=torch.float64))


def test_prefix_tokens_never_count():
    """Mass moved from self (0 px) to CLS changes nothing unrenormalised; prefix_mass reports it."""
    on_self, on_cls = empty_attention(), empty_attention()
    for query in range(1, 1 + P):
        neighbour = query + 1 if (query - 1) % GRID[1] + 1 < GRID[1] else query - 1
        on_self[:, :, query, neighbour] = on_cls[:, :, query, neighbour] = 0.5
        on_self[:, :, query, query] = 0.5
        on_cls[:, :, query, 0] = 0.5
    on_cls[:, :, 0] = torch.softmax(torch.randn(2, 3, 1 + P, dtype=torch.float64), dim=-1)  # CLS query: ignored
    half = torch.full((3,), PATCH / 2, dtype=torch.float64)
    assert torch.allclose(mean_attention_distance(on_self, GRID, PATCH), half)
    assert torch.allclose(mean_attention_distance(on_cls, GRID, PATCH), half)
    assert torch.allclose(mean_attention_distance(on_cls, GRID, PATCH, renormalise=True), 2 * half)
    assert torch.allclose(prefix_attention_mass(on_self, GRID), torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(prefix_attention_mass(on_cls, GRID), torch.full((3,), 0.5, dtype=torch.float64))


def test_random_attention_matches_an_independent_loop():
    """Non-square grid and 2 prefix tokens, so a transposed grid or a wrong prefix would show."""
    grid, patch, prefix = (3, 4), 5, 2
    attn = torch.softmax(torch.randn(2, 3, prefix + 12, prefix + 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64), dim=-1)
    cells = list(itertools.product(range(grid[0]), range(grid[1])))
    expected, renormalised, mass = [], [], []
    for head in range(3):
        total = total_renormalised = total_mass = 0.0
        for image in range(2):
            for i, a in enumerate(cells):
                row = attn[image, head, prefix + i].tolist()
                weighted = sum(row[prefix + j] * patch * math.dist(a, b) for j, b in enumerate(cells))
                total += weighted
                total_renormalised += weighted / sum(row[prefix:])
                total_mass += sum(row[:prefix])
        expected.append(total / 24), renormalised.append(total_renormalised / 24), mass.append(total_mass / 24)
    assert mean_attention_distance(attn, grid, patch, prefix).tolist() == pytest.approx(expected, abs=1e-6)
    assert mean_attention_distance(attn, grid, patch, prefix, renormalise=True).tolist() == pytest.approx(renormalised, abs=1e-6)
    assert prefix_attention_mass(attn, grid, prefix).tolist() == pytest.approx(mass, abs=1e-6)
    assert patch_distances(grid, patch)[0, 5].item() == pytest.approx(patch * math.dist((0, 0), (1, 1)))


def test_wrong_token_count_is_refused():
    with pytest.raises(InvalidInputError, match="prefix tokens"):
        mean_attention_distance(torch.rand(1, 2, 49, 49), GRID, PATCH, num_prefix_tokens=1)


def test_accumulator_over_batches_equals_one_shot(vit, data):
    images = data.images(range(24))
    streamed = AttentionDistance(vit)
    feed([streamed], [(images[i : i + 8], torch.zeros(8), torch.arange(i, i + 8)) for i in range(0, 24, 8)], progress=False)
    streamed = streamed.result()
    with Capture(vit, vit.attention_layers()) as capture:
        parts = [capture(images[i : i + 8]) for i in range(0, 24, 8)]
    layout = vit.token_layout
    for row, layer in enumerate(vit.attention_layers()):
        attn = torch.cat([part[layer.name] for part in parts])
        one_shot = mean_attention_distance(attn, layout.grid, layout.patch_size, layout.num_prefix_tokens)
        assert streamed.distance[row] == pytest.approx(one_shot.tolist(), abs=1e-5)
        renormalised = mean_attention_distance(attn, layout.grid, layout.patch_size, layout.num_prefix_tokens, renormalise=True)
        assert streamed["renormalised"][row] == pytest.approx(renormalised.tolist(), abs=1e-5)
    assert streamed.metadata["n"] == 24


@pytest.mark.parametrize(
    ("spec", "blocks", "heads", "prefix"),
    [
        ("seelike:vit", 6, 4, 1),
        ("timm:vit_tiny_patch16_224?img_size=64", 12, 3, 1),
        ("timm:deit_tiny_distilled_patch16_224?img_size=64", 12, 3, 2),
        ("timm:vit_tiny_patch16_224?img_size=64&reg_tokens=4", 12, 3, 5),
    ],
)
def test_real_vits_run_end_to_end(spec, blocks, heads, prefix, data, tmp_path):
    model = load_model(spec)
    result = attention_distances(model, data, n=8, batch_size=4, seed=1)
    assert result.distance.shape == result["renormalised"].shape == result["prefix_mass"].shape == (blocks, heads)
    layout = model.token_layout
    farthest = layout.patch_size * math.dist((0, 0), (layout.grid[0] - 1, layout.grid[1] - 1))
    assert ((result.distance > 0) & (result.distance < farthest)).all()
    assert ((result["prefix_mass"] > 0) & (result["prefix_mass"] < 1)).all()
    assert (result["renormalised"] >= result.distance).all()
    assert result.metadata["num_prefix_tokens"] == prefix and result.metadata["n"] == 8 and result.metadata["seed"] == 1
    loaded = load_result(result.save(tmp_path))
    assert isinstance(loaded, AttentionDistanceResult) and loaded.kind == "attention_distance"
    assert loaded.distance.tolist() == result.distance.tolist() and loaded.metadata["grid"] == list(layout.grid)


def test_a_cnn_is_refused_with_what_to_do():
    with pytest.raises(InvalidInputError, match="no attention layers; attention distance needs a ViT"):
        AttentionDistance(load_model("seelike:resnet"))


def test_cli_writes_result_and_figures(tmp_path):
    out = tmp_path / "attention"
    run = CliRunner().invoke(app, ["attention", "seelike:vit", "--data", "synthetic:n=64", "--n", "16", "--batch-size", "8", "--out", str(out)])
    assert run.exit_code == 0, run.output
    assert (out / "result.json").exists()
    for name in ("attention_distance_heads", "attention_distance_depth"):
        assert (out / f"{name}.png").exists() and (out / f"{name}.svg").exists()
    assert load_result(out).kind == "attention_distance"
    assert "uniform attention gives" in run.output
    refused = CliRunner().invoke(app, ["attention", "seelike:resnet", "--data", "synthetic:n=64", "--n", "8", "--out", str(tmp_path / "x")])
    assert refused.exit_code == 2 and "no attention layers" in refused.output
