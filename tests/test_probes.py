"""Ridge probes (paper Fig 11, 13; PAPER.md §7): the closed form, streaming, sampling, readouts and `seelike probe`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from seelike import load_result
from seelike.analyses.probes import (
    RidgeProbe,
    few_shot_indices,
    probe_layers,
    readout_features,
    resolve_readouts,
)
from seelike.cli import app
from seelike.data import load_dataset
from seelike.errors import InvalidInputError
from seelike.models import load_model

VIT = "seelike:vit?width=32&depth=3&heads=2"
VIT_GAP = "seelike:vit?width=32&depth=3&heads=2&classifier=gap"
RESNET = "seelike:resnet?widths=[8,16]&units_per_stage=[1,1]"
DATA = "synthetic:n=96,size=28,channels=1,classes=4,seed=0"


def gaussian_features(n: int, d: int, classes: int, separation: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    centres = torch.randn(classes, d, generator=generator, dtype=torch.float64) * separation
    features = centres[labels] + torch.randn(n, d, generator=generator, dtype=torch.float64) * 0.5 + 3.0  # an offset to remove
    return features, labels


def direct_ridge(x: torch.Tensor, labels: torch.Tensor, classes: int, lam: float) -> torch.Tensor:
    """Reference: standardise, append a bias column, solve (Z̃ᵀZ̃/n + λI) W = Z̃ᵀY/n on the stacked features."""
    n = len(x)
    z = (x - x.mean(dim=0)) / x.std(dim=0, unbiased=False)
    z = torch.cat([z, torch.ones(n, 1, dtype=x.dtype)], dim=1)
    y = torch.nn.functional.one_hot(labels, classes).double() * 2 - 1
    return torch.linalg.solve(z.T @ z / n + lam * torch.eye(z.shape[1], dtype=x.dtype), z.T @ y / n)


def test_separable_features_are_learnt_perfectly():
    x, labels = gaussian_features(400, 16, 5, separation=4.0, seed=0)
    probe = RidgeProbe(5)
    probe.update(x[:200], labels[:200])
    assert probe.fit(1e-3).accuracy(x[200:], labels[200:]).item() == 1.0
    assert probe.predict(x[200:]).shape == (200,)


def test_pure_noise_stays_near_chance():
    generator = torch.Generator().manual_seed(1)
    classes, n_test = 4, 2000
    x = torch.randn(400 + n_test, 6, generator=generator)
    labels = torch.randint(0, classes, (400 + n_test,), generator=generator)
    probe = RidgeProbe(classes)
    probe.update(x[:400], labels[:400])
    accuracy = probe.fit([0.01, 1.0, 100.0]).accuracy(x[400:], labels[400:])
    sigma = np.sqrt(0.25 * 0.75 / n_test)
    assert accuracy.shape == (3,) and torch.all((accuracy - 0.25).abs() < 3 * sigma)


@pytest.mark.parametrize("lam", [1e-3, 1.0, 100.0])
def test_sufficient_statistics_equal_a_direct_solve(lam):
    x, labels = gaussian_features(150, 12, 3, separation=1.0, seed=2)
    probe = RidgeProbe(3)
    for start in range(0, 150, 40):  # streamed in uneven batches
        probe.update(x[start : start + 40], labels[start : start + 40])
    weights, bias = probe.fit([0.5, lam]).weights()
    expected = direct_ridge(x, labels, 3, lam)
    torch.testing.assert_close(weights[1, 0], expected[:-1], atol=1e-8, rtol=0)
    torch.testing.assert_close(bias[1], expected[-1], atol=1e-8, rtol=0)
    z = (x - x.mean(0)) / x.std(0, unbiased=False)
    torch.testing.assert_close(probe.scores(x)[1, :, 0], z @ expected[:-1] + expected[-1], atol=1e-8, rtol=0)


def test_scoring_in_chunks_of_lambdas_gives_the_outputs_of_the_standardised_weights(monkeypatch):
    """Scores fold the standardisation into the weights and take λ in chunks: the same outputs as (x − μ)/σ · W + b."""
    import seelike.analyses.probes as probes

    x, labels = gaussian_features(90, 7, 3, separation=1.0, seed=5)
    grouped = torch.stack([x, x * 3 - 2, x.flip(1)], dim=1)  # [n, G=3, d]
    probe = RidgeProbe(3)
    probe.update(grouped, labels)
    lambdas = [1e-3, 0.1, 1.0, 10.0, 1e3]
    weights, bias = probe.fit(lambdas).weights()  # [L, G, d, C], [L, C]
    s = probe._solution
    z = (grouped - s.mean) / s.scale
    expected = torch.einsum("ngd,lgdc->lngc", z, weights) + bias[:, None, None, :]
    torch.testing.assert_close(probe.scores(grouped), expected, atol=1e-10, rtol=0)
    whole = probe.correct(grouped, labels)
    monkeypatch.setattr(probes, "OUTPUT_BYTES", 1)  # one λ at a time
    torch.testing.assert_close(probe.scores(grouped), expected, atol=1e-10, rtol=0)
    assert torch.equal(probe.correct(grouped, labels), whole) and whole.shape == (5, 3)
    assert torch.equal(whole, (expected.argmax(dim=-1) == labels[None, :, None]).sum(dim=1).double())


def test_kept_weights_follow_every_refit_and_give_the_numbers_of_weights_formed_anew(monkeypatch):
    """A fitted probe keeps its raw weights between scoring batches; another λ grid or more data must not reuse them."""
    import seelike.analyses.probes as probes

    x, labels = gaussian_features(150, 6, 3, separation=0.7, seed=8)
    probe, fresh = RidgeProbe(3), RidgeProbe(3)
    probe.update(x[:60], labels[:60])
    first = probe.fit([0.01, 1.0]).scores(x[100:])
    assert probe._kept_weights  # kept for the next batch
    torch.testing.assert_close(probe.scores(x[100:]), first, atol=0, rtol=0)
    probe.fit([10.0, 100.0])  # the same sums, other λ
    fresh.update(x[:60], labels[:60])
    torch.testing.assert_close(probe.scores(x[100:]), fresh.fit([10.0, 100.0]).scores(x[100:]), atol=0, rtol=0)
    probe.update(x[60:100], labels[60:100])  # more data, the same λ
    fresh.update(x[60:100], labels[60:100])
    monkeypatch.setattr(probes, "KEPT_WEIGHTS_BYTES", 0)  # nothing kept: formed anew each time
    expected = fresh.fit([10.0, 100.0]).scores(x[100:])
    assert not fresh._kept_weights
    torch.testing.assert_close(probe.fit([10.0, 100.0]).scores(x[100:]), expected, atol=0, rtol=0)
    assert not torch.equal(expected, first)


def test_grouped_probes_equal_separate_probes_and_merge_of_halves_equals_one():
    x, labels = gaussian_features(120, 10, 3, separation=1.0, seed=3)
    grouped = torch.stack([x, x.flip(1) * 2 + 1], dim=1)  # [n, G=2, d]
    whole, first, second = RidgeProbe(3), RidgeProbe(3), RidgeProbe(3)
    whole.update(grouped, labels)
    first.update(grouped[:50], labels[:50])
    second.update(grouped[50:], labels[50:])
    first.merge(second)
    assert first.n == whole.n == 120
    for a, b in zip(first.fit([0.1, 1.0]).weights(), whole.fit([0.1, 1.0]).weights()):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    single = RidgeProbe(3)
    single.update(grouped[:, 1], labels)
    torch.testing.assert_close(single.fit([0.1, 1.0]).weights()[0][:, 0], whole.weights()[0][:, 1], atol=1e-10, rtol=0)
    assert whole.predict(grouped).shape == (2, 120, 2)  # [L, n, G]


def test_few_shot_sampling_is_deterministic_and_checks_the_counts():
    labels = torch.arange(60) % 3
    first, again, other = (few_shot_indices(labels, 3, shots=4, samples=3, seed=s) for s in (7, 7, 8))
    for (a_train, a_val), (b_train, b_val) in zip(first, again):
        assert torch.equal(a_train, b_train) and torch.equal(a_val, b_val)
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(first, other))
    train, validation = first[0]
    assert torch.bincount(labels[train]).tolist() == [4, 4, 4] and torch.bincount(labels[validation]).tolist() == [4, 4, 4]
    assert not set(train.tolist()) & set(validation.tolist())
    with pytest.raises(InvalidInputError, match=r"class 2 has 3 training images.*need 8"):
        few_shot_indices(torch.tensor([0] * 10 + [1] * 10 + [2] * 3), 3, shots=4, samples=1)


def test_readouts_and_their_errors():
    vit, gap, resnet = load_model(VIT), load_model(VIT_GAP), load_model(RESNET)
    assert resolve_readouts(vit, "all") == ["cls", "gap", "mean", "tokens"]
    assert resolve_readouts(gap, "all") == ["first", "gap", "tokens"]
    assert resolve_readouts(resnet, "all") == ["gap", "tokens"]
    with pytest.raises(InvalidInputError, match="readouts that work: gap"):
        resolve_readouts(resnet, ["cls"])
    with pytest.raises(InvalidInputError, match="no CLS token.*first"):
        resolve_readouts(gap, "cls")
    with pytest.raises(InvalidInputError, match="unknown readout"):
        resolve_readouts(vit, "pooled")
    tokens = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    torch.testing.assert_close(readout_features(tokens, "gap", 1), tokens[:, 1:].mean(1))  # CLS excluded
    assert readout_features(tokens, "tokens", 1).shape == (2, 4, 3)
    assert readout_features(torch.ones(2, 8, 3, 3), "tokens").shape == (2, 9, 8)


def test_probe_layers_full_and_few_shot():
    train_set, test_set = load_dataset(DATA, split="train"), load_dataset(DATA, split="test")
    result = probe_layers(load_model(VIT), train_set, test_set, n_train=60, n_test=40, batch_size=32,
                          readouts="all", shots=3, samples=2, seed=0)
    assert result.arrays["accuracy"].shape == (4, 3) and result.arrays["token_accuracy"].shape == (3, 49)
    assert result.few_shot_readouts == ["cls", "gap", "mean"] and result.arrays["few_shot_std"].shape == (3, 3)
    assert result.metadata["n_validation"] == 12 and np.all((result.arrays["accuracy"] >= 0) & (result.arrays["accuracy"] <= 1))
    with pytest.raises(InvalidInputError, match="nothing to probe"):
        probe_layers(load_model(VIT), train_set, test_set, n_train=0, n_test=10)


def test_probe_command_on_a_vit_and_a_resnet(tmp_path):
    out = tmp_path / "probes"
    invocation = CliRunner().invoke(app, ["probe", VIT, RESNET, "--data", DATA, "--out", str(out), "--n-train", "48",
                                          "--n-test", "32", "--shots", "2", "--samples", "2", "--batch-size", "32"])
    assert invocation.exit_code == 0, invocation.output
    for name, blocks in (("vit", 3), ("resnet", 2)):
        result = load_result(out / name)
        assert result.kind == "probes" and result.arrays["accuracy"].shape == (1, blocks)
        assert (out / name / "probes.png").exists() and (out / name / "probes.svg").exists()
    assert (out / "probe_comparison.png").exists() and "gap 2-shot" in invocation.output


def test_a_lambda_at_the_edge_of_the_grid_widens_it():
    """Issue 14 item 5: a λ chosen at an edge is not a choice; the grid grows a decade there (at most MAX_WIDENINGS times)."""
    import torch

    from seelike.analyses.probes import MAX_WIDENINGS, _choose_lambda, widen_lambdas

    assert widen_lambdas([1e-3, 1e-2, 1e-1], 0) == [1e-4, 1e-3, 1e-2, 1e-1]
    assert widen_lambdas([1e-3, 1e-2, 1e-1], 2) == [1e-3, 1e-2, 1e-1, 1.0]
    assert widen_lambdas([1e-3, 1e-2, 1e-1], 1) is None
    peak = 1e-5  # validation accuracy peaks two decades below the grid
    grid, best = _choose_lambda(lambda g: torch.tensor([-abs(np.log10(v) - np.log10(peak)) for v in g]), [1e-3, 1e-2, 1e-1])
    assert grid[best] == pytest.approx(peak) and 0 < best < len(grid) - 1
    grid, best = _choose_lambda(lambda g: torch.tensor([-v for v in g]), [1e-3, 1e-2, 1e-1])  # always "smaller is better"
    assert len(grid) == 3 + MAX_WIDENINGS and best == 0


def test_widening_the_grid_streams_no_image_again():
    """Every λ the widening can reach is scored in the one held-out pass: each training and test image is forwarded once."""
    from seelike.analyses.probes import reachable_lambdas, widen_lambdas

    assert reachable_lambdas([1e-3, 1e-2], 2) == widen_lambdas(widen_lambdas(widen_lambdas(widen_lambdas([1e-3, 1e-2], 0), 0), 3), 4)
    train_set, test_set = load_dataset(DATA, split="train"), load_dataset(DATA, split="test")
    model, forwarded = load_model(VIT), []
    model.module.register_forward_hook(lambda module, inputs, output: forwarded.append(len(inputs[0])) if len(inputs[0]) > 1 else None)
    result = probe_layers(model, train_set, test_set, n_train=40, n_test=30, batch_size=16, lambdas=(1e-3, 1e-2), widenings=2)
    assert sum(forwarded) == 40 + 30
    assert not set(result.arrays["lambda"].ravel()) <= {1e-3, 1e-2}  # a two-value grid always has its choice at an edge: it widened


def test_few_shot_probes_sharing_drawn_features_forward_each_drawn_image_once_and_fit_the_same():
    """A study's RQ3 and RQ4 probe steps draw the same shots for some of the same models: within
    sharing_drawn_features the second forwards nothing and fits the probes it would have fitted alone."""
    from seelike.analyses.probes import fit_probes, sharing_drawn_features

    train_set = load_dataset(DATA, split="train")
    model, other, forwarded = load_model(VIT), load_model(VIT_GAP), []
    for m in (model, other):
        m.module.register_forward_hook(lambda module, inputs, output: forwarded.append(len(inputs[0])) if len(inputs[0]) > 1 else None)

    def few_shot(m, readouts, seed=0):
        fitted = fit_probes(m, train_set, n_train=0, batch_size=32, readouts=readouts, shots=3, samples=2, seed=seed)
        return {key: probe.weights()[0] for key, probe in fitted.few_shot.items()}

    alone = few_shot(model, "gap")
    drawn = len(forwarded)
    assert drawn and sum(forwarded) <= 4 * 3 * 2 * 2  # classes × (shots fitted + held out) × samples, repeats once
    forwarded.clear()
    with sharing_drawn_features():
        every = few_shot(model, "all")  # cls, gap, mean: the drawn images forwarded once, as for gap alone
        assert len(forwarded) == drawn
        forwarded.clear()
        shared = few_shot(model, "gap")
        assert forwarded == []  # the gap features of the same images were kept
        few_shot(other, "gap")
        few_shot(model, "gap", seed=1)
        assert len(forwarded) == 2 * drawn  # another model, other draws: forwarded
    assert shared.keys() == alone.keys()
    for key, weights in alone.items():
        assert torch.equal(shared[key], weights) and torch.equal(every[key], weights)
    forwarded.clear()
    few_shot(model, "gap")
    assert len(forwarded) == drawn  # outside the block nothing is kept
