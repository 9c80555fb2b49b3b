"""The shared uncertainty helpers: bootstrap over items, normal draws, binomial standard errors."""

from __future__ import annotations

import numpy as np
import pytest

from seelike.statistics import binomial_standard_error, bootstrap_means, normal_draws, standard_error


def test_bootstrap_standard_error_of_a_mean_matches_the_textbook_value():
    values = np.random.default_rng(1).normal(size=(400, 2)) * [1.0, 3.0]
    se = standard_error(bootstrap_means(values, draws=2000, seed=0))
    np.testing.assert_allclose(se, values.std(axis=0, ddof=1) / np.sqrt(400), rtol=0.08)


def test_bootstrap_is_seeded_and_does_not_depend_on_item_order():
    values = np.random.default_rng(2).normal(size=(50, 3))
    first = bootstrap_means(values, seed=3)
    assert np.array_equal(first, bootstrap_means(values[::-1].copy(), seed=3))
    assert not np.array_equal(first, bootstrap_means(values, seed=4))


def test_batch_sums_with_counts_give_a_ratio_estimator():
    sums, counts = np.array([[10.0], [30.0]]), np.array([10, 10])
    draws = bootstrap_means(sums, counts, draws=100, seed=0)
    assert set(np.round(draws.ravel(), 9)) <= {1.0, 2.0, 3.0}


def test_constant_items_have_zero_error_and_a_single_draw_none():
    assert standard_error(bootstrap_means(np.ones((10, 2)), seed=0)).tolist() == [0.0, 0.0]
    assert np.isnan(standard_error(np.ones((1, 2)))).all()


def test_normal_draws_and_binomial():
    draws = normal_draws(np.array([0.5, 0.9]), np.array([0.1, np.nan]), draws=4000, seed=0)
    np.testing.assert_allclose(standard_error(draws), [0.1, 0.0], atol=0.005)
    assert binomial_standard_error(0.5, 100) == pytest.approx(0.05)
    with pytest.raises(ValueError):
        binomial_standard_error(0.5, 0)


def test_infinite_items_stay_infinite_and_nan_items_nan():
    values = np.array([[1.0, 1.0], [np.inf, 2.0], [np.nan, 3.0]])
    draws = bootstrap_means(values, draws=300, seed=0)
    drawn_inf = np.isinf(draws[:, 0])
    assert drawn_inf.any() and np.isfinite(draws[:, 1]).all()
    assert not np.isnan(draws[:, 0][drawn_inf]).any()
