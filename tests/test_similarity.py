"""CKA maths (PAPER.md §1): properties, slow loop references, minibatch accumulation, rejections, results."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch

from seelike.errors import InvalidInputError
from seelike.results import load_result
from seelike.similarity import (
    CKAResult,
    MinibatchCKA,
    cka,
    gram_linear,
    gram_rbf,
    hsic_biased,
    hsic_unbiased,
    minibatch_cka,
    u_centre,
)

KERNEL_ESTIMATORS = [(k, e) for k in ("linear", "rbf") for e in ("unbiased", "biased")]


def gaussian(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def related_pair(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x [n, 4, 5] and y [n, 12], y a noisy nonlinear function of x: CKA well inside (0, 1)."""
    x = gaussian(n, 4, 5, seed=seed)
    y = torch.tanh(x.reshape(n, -1) @ gaussian(20, 12, seed=seed + 1)) + gaussian(n, 12, seed=seed + 2)
    return x, y


# --- slow references, written from the formulas of PAPER.md §1 with explicit loops -------------


def ref_gram_linear(x: torch.Tensor) -> list[list[float]]:
    rows = x.reshape(x.shape[0], -1).tolist()
    return [[sum(a * b for a, b in zip(r, s)) for s in rows] for r in rows]


def ref_gram_rbf(x: torch.Tensor, sigma: float) -> list[list[float]]:
    rows = x.reshape(x.shape[0], -1).tolist()
    n = len(rows)
    distance = [[math.dist(rows[i], rows[j]) for j in range(n)] for i in range(n)]
    bandwidth = sigma * statistics.median(distance[i][j] for i in range(n) for j in range(i + 1, n))
    return [[math.exp(-distance[i][j] ** 2 / (2 * bandwidth**2)) for j in range(n)] for i in range(n)]


def ref_hsic_biased(K: list[list[float]], L: list[list[float]]) -> float:
    """tr(KHLH)/(n−1)², every index summed explicitly."""
    n = len(K)
    H = [[(1.0 if i == j else 0.0) - 1.0 / n for j in range(n)] for i in range(n)]
    trace = 0.0
    for a in range(n):
        for b in range(n):
            for c in range(n):
                for d in range(n):
                    trace += K[a][b] * H[b][c] * L[c][d] * H[d][a]
    return trace / (n - 1) ** 2


def ref_hsic_unbiased(K: list[list[float]], L: list[list[float]]) -> float:
    """Song 2012 with explicit sums over K̃, L̃ (zeroed diagonals)."""
    n = len(K)
    Kt = [[0.0 if i == j else K[i][j] for j in range(n)] for i in range(n)]
    Lt = [[0.0 if i == j else L[i][j] for j in range(n)] for i in range(n)]
    trace = sum(Kt[i][j] * Lt[j][i] for i in range(n) for j in range(n))
    sum_K = sum(Kt[i][j] for i in range(n) for j in range(n))
    sum_L = sum(Lt[i][j] for i in range(n) for j in range(n))
    one_K_L_one = sum(Kt[i][j] * Lt[j][k] for i in range(n) for j in range(n) for k in range(n))
    return (trace + sum_K * sum_L / ((n - 1) * (n - 2)) - 2 / (n - 2) * one_K_L_one) / (n * (n - 3))


def ref_cka(K: list[list[float]], L: list[list[float]], hsic) -> float:
    return hsic(K, L) / math.sqrt(hsic(K, K) * hsic(L, L))


def tensor(K: list[list[float]]) -> torch.Tensor:
    return torch.tensor(K, dtype=torch.float64)


# --- full-batch CKA: properties ------------------------------------------------------------------


@pytest.mark.parametrize("kernel,estimator", KERNEL_ESTIMATORS)
def test_cka_of_a_representation_with_itself_is_one(kernel: str, estimator: str) -> None:
    x, _ = related_pair(20, seed=0)
    assert cka(x, x, kernel=kernel, estimator=estimator) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("kernel,estimator", KERNEL_ESTIMATORS)
def test_cka_is_symmetric(kernel: str, estimator: str) -> None:
    x, y = related_pair(20, seed=1)
    assert cka(x, y, kernel, estimator) == pytest.approx(cka(y, x, kernel, estimator), abs=1e-12)


@pytest.mark.parametrize("kernel,estimator", KERNEL_ESTIMATORS)
def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling(kernel: str, estimator: str) -> None:
    x, y = related_pair(20, seed=2)
    q, _ = torch.linalg.qr(gaussian(12, 12, seed=3))
    reference = cka(x, y, kernel, estimator)
    assert 0.1 < reference < 0.95
    assert cka(x, y @ q, kernel, estimator) == pytest.approx(reference, abs=1e-10)
    assert cka(7.5 * x, y, kernel, estimator) == pytest.approx(reference, abs=1e-10)


def test_linear_cka_is_not_invariant_to_non_isotropic_scaling() -> None:
    x, y = related_pair(20, seed=4)
    scales = torch.logspace(-2, 2, 12, dtype=torch.float64)
    assert abs(cka(x, y * scales) - cka(x, y)) > 0.05
    assert cka(y, y * scales) < 0.9


def test_cka_takes_numpy_and_torch_alike_and_flattens_per_example() -> None:
    x, y = related_pair(16, seed=5)
    value = cka(x, y)
    assert cka(x.numpy(), y.numpy()) == pytest.approx(value, abs=1e-12)
    assert cka(x.reshape(16, -1).float(), y) == pytest.approx(cka(x.float().double(), y), abs=1e-12)


# --- agreement with the slow references ----------------------------------------------------------


@pytest.mark.parametrize("n", [9, 10])  # 36 pairs (even: median of the two middle ones) and 45
def test_grams_match_loop_references(n: int) -> None:
    x = gaussian(n, 3, 2, seed=n)
    assert torch.allclose(gram_linear(x), tensor(ref_gram_linear(x)), atol=1e-10)
    assert torch.allclose(gram_rbf(x, sigma=0.7), tensor(ref_gram_rbf(x, 0.7)), atol=1e-10)


def test_hsic_biased_matches_trace_reference() -> None:
    x, y = related_pair(10, seed=6)
    K, L = ref_gram_linear(x), ref_gram_linear(y)
    assert float(hsic_biased(tensor(K), tensor(L))) == pytest.approx(ref_hsic_biased(K, L), rel=1e-9, abs=1e-6)


def test_hsic_unbiased_matches_song_reference() -> None:
    x, y = related_pair(11, seed=7)
    K, L = ref_gram_rbf(x, 1.0), ref_gram_linear(y)
    assert float(hsic_unbiased(tensor(K), tensor(L))) == pytest.approx(ref_hsic_unbiased(K, L), rel=1e-9, abs=1e-6)


def test_u_centre_inner_product_equals_song_formula() -> None:
    x, y = related_pair(12, seed=8)
    K, L = ref_gram_linear(x), ref_gram_linear(y)
    n = 12
    U_K, U_L = u_centre(tensor(K)), u_centre(tensor(L))
    assert torch.all(U_K.diagonal() == 0)
    assert float((U_K * U_L).sum()) / (n * (n - 3)) == pytest.approx(ref_hsic_unbiased(K, L), rel=1e-9, abs=1e-6)


@pytest.mark.parametrize("kernel,estimator", KERNEL_ESTIMATORS)
def test_cka_matches_loop_reference(kernel: str, estimator: str) -> None:
    x, y = related_pair(10, seed=9)
    gram = ref_gram_linear if kernel == "linear" else (lambda z: ref_gram_rbf(z, 1.0))
    hsic = ref_hsic_unbiased if estimator == "unbiased" else ref_hsic_biased
    expected = ref_cka(gram(x), gram(y), hsic)
    assert cka(x.numpy(), y.numpy(), kernel, estimator) == pytest.approx(expected, abs=1e-6)


# --- biased vs unbiased --------------------------------------------------------------------------


def test_biased_cka_is_inflated_on_independent_wide_data_and_unbiased_is_not() -> None:
    x, y = gaussian(32, 2000, seed=10), gaussian(32, 2000, seed=11)
    assert cka(x, y, estimator="biased") > 0.5
    assert abs(cka(x, y, estimator="unbiased")) < 0.1


def test_negative_unbiased_cka_is_reported_negative() -> None:
    for seed in range(20):
        x, y = gaussian(10, 6, seed=100 + seed), gaussian(10, 6, seed=200 + seed)
        expected = ref_cka(ref_gram_linear(x), ref_gram_linear(y), ref_hsic_unbiased)
        if expected < -0.01:
            break
    else:
        pytest.fail("no negative unbiased CKA among the seeds tried")
    assert cka(x, y) == pytest.approx(expected, abs=1e-9)
    assert minibatch_cka([x], [y]) == pytest.approx(expected, abs=1e-9)
    assert float(hsic_unbiased(gram_linear(x), gram_linear(y))) < 0


# --- minibatch CKA -------------------------------------------------------------------------------


def batches(n_per_batch: list[int], seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    x, y = related_pair(sum(n_per_batch), seed=seed)
    return list(x.split(n_per_batch)), list(y.split(n_per_batch))


def test_minibatch_cka_is_independent_of_batch_order() -> None:
    xs, ys = batches([12, 12, 12, 12, 7], seed=12)
    order = [3, 0, 4, 2, 1]
    assert minibatch_cka(xs, ys) == pytest.approx(minibatch_cka([xs[i] for i in order], [ys[i] for i in order]), abs=1e-12)


def test_minibatch_cka_sums_numerator_and_denominator_with_batch_size_weights() -> None:
    xs, ys = batches([16, 16, 16, 5], seed=13)
    xs[1], ys[1] = 10 * xs[1], 0.1 * ys[1]  # batches of different scale: averaging per-batch CKA would differ
    h = [[float(hsic_unbiased(gram_linear(a), gram_linear(b))) for a, b in ((x, y), (x, x), (y, y))] for x, y in zip(xs, ys)]
    w = [len(x) for x in xs]
    expected = sum(wi * hi[0] for wi, hi in zip(w, h)) / math.sqrt(
        sum(wi * hi[1] for wi, hi in zip(w, h)) * sum(wi * hi[2] for wi, hi in zip(w, h))
    )
    value = minibatch_cka(xs, ys)
    assert value == pytest.approx(expected, abs=1e-9)
    accumulator = MinibatchCKA()
    for x, y in zip(xs, ys):
        accumulator.update({"x": x, "y": y})
    mean_hsic = [sum(wi * hi[column] for wi, hi in zip(w, h)) / sum(w) for column in range(3)]
    expected_hsic = [[mean_hsic[1], mean_hsic[0]], [mean_hsic[0], mean_hsic[2]]]
    np.testing.assert_allclose(accumulator.result()["hsic"], expected_hsic, rtol=1e-9)
    per_batch_mean = statistics.mean(hi[0] / math.sqrt(hi[1] * hi[2]) for hi in h)
    assert abs(value - per_batch_mean) > 1e-3


def test_short_last_batch_is_accumulated_and_counted() -> None:
    xs, ys = batches([16, 16, 16, 5], seed=14)
    full, without_last = MinibatchCKA(), MinibatchCKA()
    for i, (x, y) in enumerate(zip(xs, ys)):
        full.update({"x": x, "y": y})
        if i < 3:
            without_last.update({"x": x, "y": y})
    result = full.result()
    assert abs(result.matrix[0, 1] - without_last.result().matrix[0, 1]) > 1e-6
    assert result.metadata["n"] == 53 == full.num_images
    assert result.metadata["batch_sizes"] == [16, 16, 16, 5] == full.batch_sizes
    assert full.num_batches == 4


def test_merge_of_two_halves_equals_one_accumulator() -> None:
    xs, ys = batches([10] * 6 + [6], seed=15)
    whole, first, second = MinibatchCKA(), MinibatchCKA(), MinibatchCKA()
    for i, (x, y) in enumerate(zip(xs, ys)):
        whole.update({"a/x": x, "b/y": y})
        # the second half lists the names in the other order: merge must line them up
        (first if i < 3 else second).update({"a/x": x, "b/y": y} if i < 3 else {"b/y": y, "a/x": x})
    first.merge(second)
    expected, merged = whole.result(), first.result()
    for key in ("cka", "standard_error", "hsic"):
        np.testing.assert_allclose(merged[key], expected[key], rtol=1e-10, atol=1e-12)
    assert merged.metadata["n"] == expected.metadata["n"] == 66
    assert sorted(merged.metadata["batch_sizes"]) == sorted(expected.metadata["batch_sizes"])

    empty = MinibatchCKA()
    empty.merge(first)
    np.testing.assert_allclose(empty.result().matrix, expected.matrix, atol=1e-12)


def test_all_pairs_matrix_equals_pairwise_minibatch_cka() -> None:
    sizes = [10, 10, 8]
    x, y = related_pair(sum(sizes), seed=16)
    representations = {
        "a/l1": x,
        "a/l2": torch.relu(x.reshape(len(x), -1) @ gaussian(20, 9, seed=17)),
        "b/l1": y,
        "b/l2": y**2 + gaussian(len(y), 12, seed=18),
    }
    accumulator = MinibatchCKA()
    for i in range(len(sizes)):
        accumulator.update({name: r.split(sizes)[i] for name, r in representations.items()})
    result = accumulator.result()
    names = list(representations)
    assert result.names == names
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            expected = minibatch_cka(representations[a].split(sizes), representations[b].split(sizes))
            assert result.matrix[i, j] == pytest.approx(expected, abs=1e-10)
    assert len({round(v, 6) for v in result.matrix[np.triu_indices(4, 1)]}) == 6  # the pairs differ


def test_update_between_gives_the_cross_pairs_of_all_pairs_and_nan_for_the_rest() -> None:
    sizes = [10, 10, 8]
    x, y = related_pair(sum(sizes), seed=16)
    first = {"a/l1": x, "a/l2": torch.relu(x.reshape(len(x), -1) @ gaussian(20, 9, seed=17)), "a/l3": x[:, 0]}
    second = {"b/l1": y, "b/l2": y**2 + gaussian(len(y), 12, seed=18)}
    names = [*first, *second]
    every, between = MinibatchCKA(names=names), MinibatchCKA(names=names)
    for i in range(len(sizes)):
        batch = {name: r.split(sizes)[i] for name, r in {**first, **second}.items()}
        every.update(batch)
        rows = {name: every.centred_row(value, name) for name, value in batch.items()}
        # first in two blocks (2 + 1 rows), second in one: blocks of any size, rows in the names' order
        between.update_between([torch.stack([rows["a/l1"], rows["a/l2"]]), rows["a/l3"][None]],
                               [torch.stack([rows["b/l1"], rows["b/l2"]])])
    expected, got = every.result(), between.result()
    cross = np.ix_(range(3), range(3, 5))
    for key in ("cka", "standard_error", "hsic"):
        np.testing.assert_allclose(got[key][cross], expected[key][cross], rtol=1e-10, atol=1e-12, err_msg=key)
        np.testing.assert_allclose(got[key][cross[::-1]], expected[key][cross[::-1]], rtol=1e-10, atol=1e-12, err_msg=key)
        np.testing.assert_allclose(np.diag(got[key]), np.diag(expected[key]), rtol=1e-10, atol=1e-12, err_msg=key)
    group = np.array([0, 0, 0, 1, 1])
    within = (group[:, None] == group[None, :]) & ~np.eye(5, dtype=bool)
    assert np.isnan(got.matrix[within]).all() and not np.isnan(got.matrix[~within]).any()  # only within-group pairs skipped


def test_update_between_refuses_rows_that_do_not_match_the_names() -> None:
    x = gaussian(3, 10 * 9 // 2, seed=3)
    with pytest.raises(InvalidInputError, match="names fixed at construction"):
        MinibatchCKA().update_between([x[:2]], [x[2:]])
    with pytest.raises(InvalidInputError, match="one row per name"):
        MinibatchCKA(names=["a", "b", "c", "d"]).update_between([x[:2]], [x[2:]])
    with pytest.raises(InvalidInputError, match="same images"):
        MinibatchCKA(names=["a", "b", "c"]).update_between([x[:2]], [gaussian(1, 8 * 7 // 2, seed=4)])
    with pytest.raises(InvalidInputError, match="'c'"):
        MinibatchCKA(names=["a", "b", "c"]).update_between([x[:2]], [torch.full((1, 45), math.inf)])


def test_minibatch_estimate_is_close_to_full_batch_for_large_n() -> None:
    n = 2000
    latent = gaussian(n, 6, seed=19)
    x = latent @ gaussian(6, 64, seed=20) + 0.5 * gaussian(n, 64, seed=21)
    y = torch.tanh(latent @ gaussian(6, 32, seed=22)) + 0.5 * gaussian(n, 32, seed=23)
    full = cka(x, y)
    assert 0.2 < full < 0.9
    assert minibatch_cka(x.split(200), y.split(200)) == pytest.approx(full, abs=0.02)


def test_minibatch_cka_takes_float32_and_numpy() -> None:
    xs, ys = batches([12, 12, 12], seed=24)
    expected = minibatch_cka(xs, ys)
    assert minibatch_cka([x.float() for x in xs], [y.float() for y in ys]) == pytest.approx(expected, abs=1e-5)
    assert minibatch_cka([x.numpy() for x in xs], [y.numpy() for y in ys]) == pytest.approx(expected, abs=1e-12)


def test_float32_features_far_from_zero_keep_their_cka() -> None:
    xs, ys = batches([64, 64], seed=25)
    expected = minibatch_cka(xs, ys)  # float64; a shared offset changes no U-centred Gram
    offset = minibatch_cka([(x + 100 * x.std()).float() for x in xs], [(y - 100 * y.std()).float() for y in ys])
    assert offset == pytest.approx(expected, abs=1e-5)


def test_rbf_minibatch_cka_matches_weighted_reference() -> None:
    xs, ys = batches([10, 10], seed=25)
    h = [[float(hsic_unbiased(gram_rbf(a, 0.8), gram_rbf(b, 0.8))) for a, b in ((x, y), (x, x), (y, y))] for x, y in zip(xs, ys)]
    expected = (h[0][0] + h[1][0]) / math.sqrt((h[0][1] + h[1][1]) * (h[0][2] + h[1][2]))
    assert minibatch_cka(xs, ys, kernel="rbf", sigma=0.8) == pytest.approx(expected, abs=1e-9)


# --- standard error ------------------------------------------------------------------------------


def standard_error(num_batches: int, seed: int) -> float:
    xs, ys = batches([16] * num_batches, seed=seed)
    accumulator = MinibatchCKA()
    for x, y in zip(xs, ys):
        accumulator.update({"x": x, "y": y})
    se = accumulator.result()["standard_error"]
    assert se[0, 0] == se[1, 1] == 0
    return float(se[0, 1])


def test_standard_error_is_finite_with_two_batches_and_shrinks_with_more() -> None:
    few, many = standard_error(4, seed=26), standard_error(32, seed=26)
    assert math.isfinite(few) and few > 0
    assert many < 0.6 * few


def test_standard_error_matches_delta_method_written_out() -> None:
    sizes = [12, 12, 9, 12, 7]
    xs, ys = batches(sizes, seed=46)
    accumulator = MinibatchCKA()
    for x, y in zip(xs, ys):
        accumulator.update({"x": x, "y": y})
    # per batch (a, b, c) = (HSIC₁(K, L), HSIC₁(K, K), HSIC₁(L, L)); replicates with Var ∝ 1/nᵢ, weights nᵢ
    pairs = [((x, y), (x, x), (y, y)) for x, y in zip(xs, ys)]
    h = np.array([[float(hsic_unbiased(gram_linear(p), gram_linear(q))) for p, q in batch] for batch in pairs])
    w = np.array(sizes, dtype=float)
    mean = w @ h / w.sum()
    covariance = sum(wi * np.outer(hi - mean, hi - mean) for wi, hi in zip(w, h)) / ((len(w) - 1) * w.sum())
    a, b, c = mean
    f = a / math.sqrt(b * c)
    gradient = np.array([1 / math.sqrt(b * c), -f / (2 * b), -f / (2 * c)])
    result = accumulator.result()
    assert result.matrix[0, 1] == pytest.approx(f, abs=1e-12)
    assert result["standard_error"][0, 1] == pytest.approx(math.sqrt(gradient @ covariance @ gradient), rel=1e-8)


def test_standard_error_is_nan_after_one_batch() -> None:
    accumulator = MinibatchCKA()
    accumulator.update({"x": gaussian(8, 3, seed=27), "y": gaussian(8, 3, seed=28)})
    assert np.isnan(accumulator.result()["standard_error"]).all()


def test_standard_error_matches_spread_over_independent_repeats() -> None:
    values, errors = [], []
    for repeat in range(150):
        xs, ys = batches([16] * 8, seed=1000 + 3 * repeat)
        accumulator = MinibatchCKA()
        for x, y in zip(xs, ys):
            accumulator.update({"x": x, "y": y})
        result = accumulator.result()
        values.append(result.matrix[0, 1])
        errors.append(result["standard_error"][0, 1])
    assert 0.8 < float(np.sqrt(np.mean(np.square(errors)))) / float(np.std(values, ddof=1)) < 1.25


# --- rejections ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_update_rejects_non_finite_values_naming_the_layer(bad: float) -> None:
    x = gaussian(8, 5, seed=29)
    x[3, 2] = bad
    accumulator = MinibatchCKA()
    with pytest.raises(InvalidInputError, match=r"vit/blocks\.3.*NaN or inf"):
        accumulator.update({"resnet/layer1": gaussian(8, 5, seed=30), "vit/blocks.3": x})
    with pytest.raises(InvalidInputError, match="NaN or inf"):
        cka(x, gaussian(8, 5, seed=30))


def test_update_rejects_mismatched_n() -> None:
    with pytest.raises(InvalidInputError, match=r"'a/x': 8, 'b/y': 9"):
        MinibatchCKA().update({"a/x": gaussian(8, 3, seed=31), "b/y": gaussian(9, 3, seed=32)})
    with pytest.raises(InvalidInputError, match=r"x has n=10, y has n=12"):
        cka(gaussian(10, 3, seed=33), gaussian(12, 3, seed=34))


def test_rejects_fewer_than_four_images() -> None:
    message = "minibatch CKA needs at least 4 images per batch, got 3; use a larger batch size"
    with pytest.raises(InvalidInputError, match=message):
        MinibatchCKA().update({"x": gaussian(3, 5, seed=35)})
    with pytest.raises(InvalidInputError, match="at least 4"):
        cka(gaussian(3, 5, seed=35), gaussian(3, 5, seed=36))
    with pytest.raises(InvalidInputError, match="at least 4"):
        hsic_unbiased(torch.eye(3), torch.eye(3))
    assert math.isfinite(cka(gaussian(3, 5, seed=35), gaussian(3, 5, seed=36), estimator="biased"))


def test_rejects_unknown_kernel_and_estimator_listing_the_allowed_ones() -> None:
    x = gaussian(8, 3, seed=37)
    with pytest.raises(InvalidInputError, match=r"kernel must be one of 'linear', 'rbf'; got 'cosine'"):
        cka(x, x, kernel="cosine")
    with pytest.raises(InvalidInputError, match=r"estimator must be one of 'unbiased', 'biased'"):
        cka(x, x, estimator="debiased")
    with pytest.raises(InvalidInputError, match="kernel must be one of"):
        MinibatchCKA(kernel="poly")


def test_sigma_only_with_rbf_and_positive() -> None:
    x = gaussian(8, 3, seed=38)
    with pytest.raises(InvalidInputError, match="sigma"):
        cka(x, x, kernel="linear", sigma=1.0)
    with pytest.raises(InvalidInputError, match="sigma"):
        cka(x, x, kernel="rbf", sigma=0.0)
    assert cka(x, x, kernel="rbf") == cka(x, x, kernel="rbf", sigma=1.0)
    assert cka(x, x**3, kernel="rbf", sigma=0.5) != pytest.approx(cka(x, x**3, kernel="rbf", sigma=2.0), abs=1e-3)


def test_update_rejects_a_different_set_of_names_and_keeps_its_state() -> None:
    accumulator = MinibatchCKA()
    accumulator.update({"a/x": gaussian(8, 3, seed=39), "b/y": gaussian(8, 3, seed=40)})
    before = accumulator.result().matrix.copy()
    with pytest.raises(InvalidInputError, match=r"missing: \['b/y'\], unexpected: \['b/z'\]"):
        accumulator.update({"a/x": gaussian(8, 3, seed=41), "b/z": gaussian(8, 3, seed=42)})
    with pytest.raises(InvalidInputError, match="NaN"):
        accumulator.update({"a/x": torch.full((8, 3), math.nan), "b/y": gaussian(8, 3, seed=42)})
    assert accumulator.num_batches == 1
    np.testing.assert_array_equal(accumulator.result().matrix, before)


def test_result_before_any_update_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="at least one update"):
        MinibatchCKA().result()


def test_constant_representation_is_refused_by_cka_and_nan_with_a_warning_in_minibatch() -> None:
    x = gaussian(8, 7, seed=43)
    constant = torch.full((8, 7), 0.1)  # float32: its U(K) rounds to ~1e-9, not 0, unless zeroed on purpose
    with pytest.raises(InvalidInputError, match="same for every example"):
        cka(x, constant)
    accumulator = MinibatchCKA()
    accumulator.update({"a/x": x, "a/dead": constant})
    accumulator.update({"a/x": -x, "a/dead": constant})
    with pytest.warns(RuntimeWarning, match="a/dead"):
        result = accumulator.result()
    assert np.isnan(result.matrix[1]).all() and result.matrix[0, 0] == pytest.approx(1.0)
    assert result.metadata["undefined_layers"] == ["a/dead"]


# --- CKAResult -----------------------------------------------------------------------------------


def two_model_result() -> CKAResult:
    x, y = related_pair(40, seed=44)
    accumulator = MinibatchCKA()
    for xb, yb in zip(x.split(10), y.split(10)):
        mixed = torch.relu(yb) + xb[:, 0, :2].sum(1, keepdim=True)
        accumulator.update({"vit/blocks.0": xb, "resnet/layer1": yb, "vit/blocks.1": mixed})
    return accumulator.result(metadata={"seed": 7, "data": "synthetic"})


def test_result_blocks_within_and_across_models() -> None:
    result = two_model_result()
    assert result.kind == "cka"
    assert result.models == ["vit", "resnet"]
    assert result.layer_names("vit") == ["blocks.0", "blocks.1"]
    within, rows, columns = result.block("vit")
    assert rows == columns == ["blocks.0", "blocks.1"]
    np.testing.assert_array_equal(within, result.matrix[np.ix_([0, 2], [0, 2])])
    cross, rows, columns = result.block("vit", "resnet")
    assert (rows, columns) == (["blocks.0", "blocks.1"], ["layer1"])
    np.testing.assert_array_equal(cross, result.matrix[[0, 2]][:, [1]])
    with pytest.raises(InvalidInputError, match=r"'mixer'.*\['vit', 'resnet'\]"):
        result.block("vit", "mixer")


def test_result_carries_metadata_and_refuses_to_overwrite_computed_keys() -> None:
    result = two_model_result()
    assert result.metadata["seed"] == 7
    assert result.metadata["estimator"] == "unbiased" and result.metadata["kernel"] == "linear"
    assert result.metadata["n"] == 40 and result.metadata["batch_sizes"] == [10] * 4
    accumulator = MinibatchCKA()
    accumulator.update({"x": gaussian(8, 3, seed=45)})
    with pytest.raises(InvalidInputError, match=r"\['n'\]"):
        accumulator.result(metadata={"n": 5})


def test_result_round_trips_through_save_and_load(tmp_path) -> None:
    result = two_model_result()
    loaded = load_result(result.save(tmp_path / "cka"))
    assert isinstance(loaded, CKAResult)
    for key in ("cka", "standard_error", "hsic"):
        np.testing.assert_array_equal(loaded[key], result[key])
    assert loaded.names == result.names
    assert loaded.metadata["seed"] == 7 and loaded.metadata["batch_sizes"] == [10] * 4
    np.testing.assert_array_equal(loaded.block("resnet", "vit")[0], result.block("resnet", "vit")[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_minibatch_cka_on_gpu_float32_matches_cpu_float64() -> None:
    xs, ys = batches([32, 32, 20], seed=47)
    on_cpu, on_gpu = MinibatchCKA(), MinibatchCKA()
    for x, y in zip(xs, ys):
        on_cpu.update({"a/x": x, "b/y": y})
        on_gpu.update({"a/x": x.float().cuda(), "b/y": y.float().cpu()})  # mixed devices on purpose
    np.testing.assert_allclose(on_gpu.result().matrix, on_cpu.result().matrix, atol=1e-5)
