"""The analyses give the numbers they gave before the accumulator contract (issue: one contract, one driver).

``tests/data/pre_accumulator_reference.npz`` was written by :func:`compute` with seelike at commit aac626b
(each analysis with its own batch loop); the same batches through the driver must give the same arrays.
The probes are scored on all 96 test images (their ``probes::`` entries rewritten at aac626b with n_test=96): the
probes' test images are now the seeded n every analysis reads, no longer a draw after the training draw, so only
the whole test set is the same set of images before and after.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from seelike.analyses.attention_distance import attention_distances
from seelike.analyses.head_similarity import head_similarity
from seelike.analyses.layer_similarity import layer_similarity
from seelike.analyses.localization import spatial_localization
from seelike.analyses.probes import probe_layers
from seelike.analyses.receptive_field import effective_receptive_fields
from seelike.analyses.skip_norms import skip_norm_ratios
from seelike.data import load_dataset
from seelike.models import load_model

REFERENCE = Path(__file__).parent / "data" / "pre_accumulator_reference.npz"
VIT = "seelike:vit?width=32&depth=2&heads=4"
RESNET = "seelike:resnet?widths=[8,16]&units_per_stage=[1,1]"
SYNTHETIC = "synthetic:n=96,size=28,channels=1,classes=10,seed=0"


def compute() -> dict[str, np.ndarray]:
    data, train = load_dataset(SYNTHETIC), load_dataset(SYNTHETIC, split="train")
    vit, cnn = load_model(VIT), load_model(RESNET)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = {
            "cka": layer_similarity([vit, cnn], data, n=64, batch_size=16, layers="all", seed=1),
            "cka_repeats": layer_similarity([vit, cnn], data, n=48, batch_size=16, repeats=2, seed=2),
            "attention": attention_distances(vit, data, n=64, batch_size=16, seed=1),
            "skips_vit": skip_norm_ratios(vit, data, n=64, batch_size=16, seed=1),
            "skips_cnn": skip_norm_ratios(cnn, data, n=64, batch_size=16, seed=1),
            "localize": spatial_localization(vit, data, n=64, batch_size=16, seed=1),
            "heads": head_similarity(vit, cnn, data, n=64, batch_size=16, window=2, seed=1),
            "probes": probe_layers(vit, train, data, n_train=80, n_test=96, batch_size=16, readouts="all", shots=2, samples=2, seed=1,
                                  widenings=0),  # the λ grid as it was (widening at an edge came later, issue 14)
            "erf": effective_receptive_fields(vit, data, n=8, batch_size=4, channels="exact", seed=1),
        }
    return {f"{name}::{key}": np.asarray(value) for name, result in results.items() for key, value in result.arrays.items()}


def test_every_analysis_gives_the_numbers_of_its_own_loop_before():
    now = compute()
    with np.load(REFERENCE) as reference:
        assert set(reference.files) <= set(now), "arrays that the analyses no longer give"
        for key in reference.files:
            if reference[key].dtype.kind == "f":
                np.testing.assert_allclose(now[key], reference[key], rtol=0, atol=1e-9, err_msg=key)
            else:
                np.testing.assert_array_equal(now[key], reference[key], err_msg=key)
