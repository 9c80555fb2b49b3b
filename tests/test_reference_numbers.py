"""The analyses give the numbers they gave before the accumulator contract (issue: one contract, one driver).

Both references were written by :func:`compute` with seelike at commit aac626b (each analysis with its own
batch loop); the same batches through the driver must give the same arrays.

- ``pre_accumulator_reference_float64.npz``: every model in float64 (:func:`in_float64`), so the numbers do not
  depend on the CPU's float32 kernels; compared to 1e-9 (they agree to 1e-15). Written with
  ``PYTHONPATH=<worktree of aac626b>/src python tests/test_reference_numbers.py OUT.npz``.
- ``pre_accumulator_reference.npz``: the models in float32, as users run them, on the machine of the time.
  Another CPU's float32 kernels round differently (an AMD EPYC gave CKA 4e-8 away), so this one is compared
  within float32 rounding: 1e-5 of each array's largest value.

The probes are scored on all 96 test images (their ``probes::`` entries rewritten at aac626b with n_test=96): the
probes' test images are now the seeded n every analysis reads, no longer a draw after the training draw, so only
the whole test set is the same set of images before and after.
"""

from __future__ import annotations

import inspect
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from seelike.analyses.attention_distance import attention_distances
from seelike.analyses.head_similarity import head_similarity
from seelike.analyses.layer_similarity import layer_similarity
from seelike.analyses.localization import spatial_localization
from seelike.analyses.probes import probe_layers
from seelike.analyses.receptive_field import effective_receptive_fields
from seelike.analyses.skip_norms import skip_norm_ratios
from seelike.data import load_dataset
from seelike.models import load_model

REFERENCES = {torch.float32: Path(__file__).parent / "data" / "pre_accumulator_reference.npz",
              torch.float64: Path(__file__).parent / "data" / "pre_accumulator_reference_float64.npz"}
VIT = "seelike:vit?width=32&depth=2&heads=4"
RESNET = "seelike:resnet?widths=[8,16]&units_per_stage=[1,1]"
SYNTHETIC = "synthetic:n=96,size=28,channels=1,classes=10,seed=0"


def in_float64(model):
    """``model`` with its weights in float64 and its input cast to float64 as it enters (the data stay float32)."""
    model.module.double()
    model.module.register_forward_pre_hook(lambda module, args: tuple(a.double() if torch.is_tensor(a) else a for a in args))
    return model


def compute(dtype: torch.dtype = torch.float32) -> dict[str, np.ndarray]:
    data, train = load_dataset(SYNTHETIC), load_dataset(SYNTHETIC, split="train")
    vit, cnn = load_model(VIT), load_model(RESNET)
    if dtype == torch.float64:
        vit, cnn = in_float64(vit), in_float64(cnn)
    # the λ grid as it was: widening at an edge came later (issue 14); aac626b has no such parameter
    grid_as_it_was = {"widenings": 0} if "widenings" in inspect.signature(probe_layers).parameters else {}
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
                                  **grid_as_it_was),
            "erf": effective_receptive_fields(vit, data, n=8, batch_size=4, channels="exact", seed=1),
        }
    return {f"{name}::{key}": np.asarray(value) for name, result in results.items() for key, value in result.arrays.items()}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_every_analysis_gives_the_numbers_of_its_own_loop_before(dtype):
    now = compute(dtype)
    with np.load(REFERENCES[dtype]) as reference:
        assert set(reference.files) <= set(now), "arrays that the analyses no longer give"
        for key in reference.files:
            expected = reference[key]
            if expected.dtype.kind != "f":
                np.testing.assert_array_equal(now[key], expected, err_msg=key)
                continue
            actual = now[key]
            if key.endswith("standard_error"):
                # an SE is the root of a variance: one that rounds to within 1e-16 of 0 (CKA of a layer with itself)
                # gives an SE anywhere in [0, 1e-8], so the variances are compared
                actual, expected = actual**2, expected**2
            finite = np.abs(expected[np.isfinite(expected)])
            tolerance = 1e-9 if dtype == torch.float64 else 1e-5 * max(finite.max(initial=0.0), 1.0)
            np.testing.assert_allclose(actual, expected, rtol=0, atol=tolerance, err_msg=key)


if __name__ == "__main__":  # write the float64 reference with the seelike on the path (see the module docstring)
    np.savez(sys.argv[1], **compute(torch.float64))
