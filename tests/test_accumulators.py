"""The common checks every analysis passes (scikit-learn's ``parametrize_with_checks`` in spirit).

One factory per registered accumulator kind builds it on tiny random-init models; a kind without a
factory fails ``test_every_accumulator_has_a_factory``, so no analysis escapes these checks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from seelike.analyses.attention_distance import AttentionDistance
from seelike.analyses.base import ACCUMULATORS, RUN_INFO_KEYS, Accumulator, Batch
from seelike.analyses.head_similarity import HeadSimilarity
from seelike.analyses.layer_similarity import LayerSimilarity
from seelike.analyses.localization import Localization
from seelike.analyses.probes import ProbeFeatures, ProbeScores, ProbeStatistics
from seelike.analyses.receptive_field import ReceptiveField
from seelike.analyses.skip_norms import SkipNorms
from seelike.data import load_dataset
from seelike.driver import feed, run
from seelike.errors import InvalidInputError
from seelike.models import load_model

VIT = "seelike:vit?width=32&depth=2&heads=4"
RESNET = "seelike:resnet?widths=[8,16]&units_per_stage=[1,1]"
DATA = load_dataset("synthetic:n=64,size=28,channels=1,classes=10,seed=0")


@pytest.fixture(scope="module")
def models():
    return load_model(VIT), load_model(RESNET)


def _fitted_probes(vit) -> ProbeScores:
    statistics = ProbeStatistics(vit, ["gap", "tokens"], DATA.num_classes)
    run([statistics], DATA, n=32, batch_size=16)
    probes = {}
    for (readout, block), probe in statistics.probes.items():
        probes[readout, block, -1] = probe.fit(1.0)
    return ProbeScores(vit, probes)


FACTORIES: dict[str, Callable[..., Accumulator]] = {
    "cka": lambda vit, cnn: LayerSimilarity([vit, cnn]),
    "attention_distance": lambda vit, cnn: AttentionDistance(vit),
    "head_similarity": lambda vit, cnn: HeadSimilarity(vit, cnn, window=2),
    "skip_norms": lambda vit, cnn: SkipNorms(vit),
    "localization": lambda vit, cnn: Localization(cnn),
    "receptive_field": lambda vit, cnn: ReceptiveField(vit, channels="sum"),
    "probe_statistics": lambda vit, cnn: ProbeStatistics(vit, ["gap", "tokens"], DATA.num_classes),
    "probe_features": lambda vit, cnn: ProbeFeatures(vit, ["gap", "cls"]),
    "probe_scores": lambda vit, cnn: _fitted_probes(vit),
}
#: kinds whose state keeps rows in batch order (with their image indices), so batch order matters by design
ORDERED = {"probe_features"}
KINDS = sorted(FACTORIES)


def _batches(indices: list[int], size: int = 8) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    order = torch.tensor(indices)
    return [(DATA.images(order[i:i + size]), torch.as_tensor(DATA.labels)[order[i:i + size]], order[i:i + size])
            for i in range(0, len(order), size)]


def _arrays(accumulator: Accumulator) -> dict[str, np.ndarray]:
    return {key: np.asarray(value) for key, value in accumulator.compute().arrays.items()}


def _assert_states_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rtol: float) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        torch.testing.assert_close(a[name].double(), b[name].double(), rtol=rtol, atol=1e-12, equal_nan=True, msg=name)  # NaN: pairs not computed (localization)


def test_every_accumulator_has_a_factory():
    assert sorted(ACCUMULATORS) == KINDS


@pytest.mark.parametrize("kind", KINDS)
def test_merge_of_two_halves_equals_one_pass(kind, models):
    whole, first, second = (FACTORIES[kind](*models) for _ in range(3))
    batches = _batches(list(range(32)))
    feed([whole], batches, progress=False)
    feed([first], batches[:2], progress=False)
    feed([second], batches[2:], progress=False)
    first.merge(second)
    _assert_states_close(first.state_dict(), whole.state_dict(), rtol=1e-12)
    assert first.num_images == whole.num_images == 32


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trip_and_reset(kind, models):
    fed, fresh = FACTORIES[kind](*models), FACTORIES[kind](*models)
    feed([fed], _batches(list(range(16))), progress=False)
    fresh.load_state_dict(fed.state_dict())
    expected, restored = _arrays(fed), _arrays(fresh)
    for key in expected:
        np.testing.assert_array_equal(restored[key], expected[key], err_msg=key)
    fed.reset()
    assert fed.num_images == 0
    with pytest.raises(InvalidInputError, match="at least one batch"):
        fed.result()


@pytest.mark.parametrize("kind", sorted(set(KINDS) - ORDERED))
def test_batch_order_does_not_change_the_result(kind, models):
    forward, backward = FACTORIES[kind](*models), FACTORIES[kind](*models)
    batches = _batches(list(range(32)))
    feed([forward], batches, progress=False)
    feed([backward], batches[::-1], progress=False)
    expected, reordered = _arrays(forward), _arrays(backward)
    for key in expected:
        np.testing.assert_allclose(reordered[key], expected[key], rtol=1e-9, atol=1e-10, err_msg=key)  # SEs: sums of squares cancel


@pytest.mark.parametrize("kind", KINDS)
def test_an_update_without_its_layers_is_refused(kind, models):
    accumulator = FACTORIES[kind](*models)
    images, labels, indices = _batches(list(range(8)))[0]
    batch = Batch(images, labels, indices, inputs={model.name: model.preprocess(images) for model in models})
    with pytest.raises(InvalidInputError, match="the activations hold no"):
        accumulator.update({}, batch)


@pytest.mark.parametrize("kind", KINDS)
def test_result_metadata_follows_run_info(kind, models):
    accumulator = FACTORIES[kind](*models)
    (result,) = run([accumulator], DATA, n=16, batch_size=8, seed=3)
    assert set(RUN_INFO_KEYS) <= set(result.metadata)
    assert result.metadata["models"] == {model.name: model.spec for model in accumulator.models}
    assert set(result.metadata["model_fingerprints"]) == set(result.metadata["models"])
    assert (result.metadata["n"], result.metadata["batch_size"], result.metadata["seed"]) == (16, 8, 3)
    assert result.metadata["data"] == DATA.spec and result.metadata["split"] == DATA.split


def test_one_pass_serves_several_analyses_of_the_same_model(models):
    vit, cnn = models
    together = [LayerSimilarity([vit, cnn]), AttentionDistance(vit), SkipNorms(vit), Localization(cnn)]
    calls = {"vit": 0, "cnn": 0}
    handles = [vit.module.register_forward_hook(lambda *_: calls.__setitem__("vit", calls["vit"] + 1)),
               cnn.module.register_forward_hook(lambda *_: calls.__setitem__("cnn", calls["cnn"] + 1))]
    try:
        results = run(together, DATA, n=32, batch_size=8)
    finally:
        for handle in handles:
            handle.remove()
    assert calls == {"vit": 4, "cnn": 4}  # 32 images in 4 batches: each model once per batch, for all four analyses
    alone = run([AttentionDistance(vit)], DATA, n=32, batch_size=8)[0]
    np.testing.assert_array_equal(results[1]["distance"], alone["distance"])


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_forwards_change_cka_little_and_keep_full_precision_sums(precision, models):
    full = run([LayerSimilarity(list(models))], DATA, n=32, batch_size=16)[0]
    half = run([LayerSimilarity(list(models))], DATA, n=32, batch_size=16, precision=precision)[0]
    assert half["hsic"].dtype == np.float64
    difference = np.abs(half.matrix - full.matrix).max()
    assert 0 < difference < 0.02  # the forward really ran in half precision, and CKA barely moved


def test_an_unknown_precision_is_refused(models):
    with pytest.raises(InvalidInputError, match="precision must be one of fp32, bf16, fp16"):
        run([AttentionDistance(models[0])], DATA, n=8, batch_size=8, precision="int8")


def test_dataloader_workers_give_the_same_result(models):
    alone = run([AttentionDistance(models[0])], DATA, n=32, batch_size=8)[0]
    workers = run([AttentionDistance(models[0])], DATA, n=32, batch_size=8, workers=2)[0]
    np.testing.assert_array_equal(workers["distance"], alone["distance"])
