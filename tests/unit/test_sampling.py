"""Sampling: designs are seeded, resumable sequences; marginals follow each distribution."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy import stats
from scipy.stats import qmc

from melissa.config.models import (
    LogUniformParameter,
    NormalParameter,
    Parameter,
    Sampling,
    UniformParameter,
)
from melissa.sampling import Sampler, inverse_cdf

Method = Literal["random", "lhs", "sobol", "halton"]
METHODS: list[Method] = ["random", "lhs", "sobol", "halton"]


def uniform(name: str, low: float = 0.0, high: float = 1.0) -> UniformParameter:
    return UniformParameter(name=name, distribution="uniform", low=low, high=high)


def loguniform(name: str, low: float, high: float) -> LogUniformParameter:
    return LogUniformParameter(name=name, distribution="loguniform", low=low, high=high)


def normal(name: str, mean: float, std: float) -> NormalParameter:
    return NormalParameter(name=name, distribution="normal", mean=mean, std=std)


MIXED: list[Parameter] = [uniform("a", -2.0, 3.0), loguniform("b", 1e-3, 10.0), normal("c", 5.0, 0.5)]


def sampler(
    method: Method,
    seed: int,
    parameters: Sequence[Parameter] = MIXED,
    planned_size: int = 32,
    **kw: Any,
) -> Sampler:
    return Sampler(parameters, Sampling(method=method, **kw), seed, planned_size=planned_size)


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_draws_seed_zero_included(method: Method) -> None:
    for seed in (0, 7):
        a, b = sampler(method, seed).draw(40), sampler(method, seed).draw(40)
        assert a.dtype == np.float64 and a.shape == (40, 3)
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("method", METHODS)
def test_different_seeds_differ(method: Method) -> None:
    draws = [sampler(method, seed).draw(20) for seed in (0, 1, 2)]
    for i in range(3):
        for j in range(i):
            assert not np.any(draws[i] == draws[j]), (i, j)


@pytest.mark.parametrize("method", ["sobol", "halton"])
def test_unscrambled_sequences_ignore_the_seed(method: Method) -> None:
    a = sampler(method, 0, scramble=False).draw(16)
    np.testing.assert_array_equal(a, sampler(method, 5, scramble=False).draw(16))
    assert np.all(np.isfinite(a))  # point 0 is the origin: the normal's ppf(0) must be clipped


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("splits", [[10, 5], [1, 1, 13], [0, 15], [7, 0, 8], [15, 25]])
def test_drawing_in_pieces_continues_the_sequence(method: Method, splits: list[int]) -> None:
    pieces = sampler(method, 3, planned_size=12)
    drawn = np.concatenate([pieces.draw(n) for n in splits])
    assert pieces.drawn == sum(splits)
    np.testing.assert_array_equal(drawn, sampler(method, 3, planned_size=12).draw(sum(splits)))


def test_names_follow_the_parameters_and_columns() -> None:
    s = sampler("random", 0)
    assert s.names == ["a", "b", "c"]
    assert s.draw(0).shape == (0, 3)
    with pytest.raises(ValueError, match="negative"):
        s.draw(-1)


def test_lhs_needs_the_planned_size() -> None:
    with pytest.raises(ValueError, match="planned_size"):
        Sampler(MIXED, Sampling(method="lhs"), 0)


def test_no_parameters_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one parameter"):
        Sampler([], Sampling(), 0)


def assert_latin(points: np.ndarray) -> None:
    """Each of the n strata [i/n, (i+1)/n) holds exactly one point, in every dimension."""
    n = len(points)
    strata = np.floor(points * n).astype(int)
    for column in strata.T:
        np.testing.assert_array_equal(np.sort(column), np.arange(n))


def test_lhs_stratifies_each_block_whatever_the_call_sizes() -> None:
    unit = [uniform(f"x{i}") for i in range(4)]  # uniform(0, 1) values are the unit values
    s = sampler("lhs", 11, parameters=unit, planned_size=50)
    first = np.concatenate([s.draw(7), s.draw(20), s.draw(23)])
    assert_latin(first)
    second = np.concatenate([s.draw(1) for _ in range(50)])  # redraws: the next block
    assert_latin(second)
    assert not np.array_equal(np.sort(first, axis=0), np.sort(second, axis=0))


def test_random_design_is_not_latin() -> None:
    """Guards the stratification check itself: it must reject a plain random draw."""
    points = sampler("random", 11, parameters=[uniform("x")]).draw(50)
    with pytest.raises(AssertionError):
        assert_latin(points)


@pytest.mark.parametrize("method", ["sobol", "halton"])
def test_low_discrepancy_beats_random(method: Method) -> None:
    unit = [uniform(f"x{i}") for i in range(3)]
    qmc_points = sampler(method, 4, parameters=unit).draw(256)
    random_points = sampler("random", 4, parameters=unit).draw(256)
    assert qmc.discrepancy(qmc_points) < qmc.discrepancy(random_points) / 3


@pytest.mark.parametrize("method", METHODS)
def test_marginals(method: Method) -> None:
    values = sampler(method, 12345, planned_size=2000).draw(2000)
    a, b, c = values.T
    assert a.min() >= -2.0 and a.max() <= 3.0
    assert b.min() >= 1e-3 and b.max() <= 10.0
    # Low-discrepancy designs fit far better than random: p-values stay high for all four.
    assert stats.kstest(a, stats.uniform(-2.0, 5.0).cdf).pvalue > 0.01
    log_b = np.log(b)
    lo, hi = math.log(1e-3), math.log(10.0)
    assert stats.kstest(log_b, stats.uniform(lo, hi - lo).cdf).pvalue > 0.01
    assert stats.kstest(c, stats.norm(5.0, 0.5).cdf).pvalue > 0.01


def test_ks_check_detects_a_wrong_marginal() -> None:
    """Guards the marginal checks: log-uniform values are far from uniform in linear space."""
    b = sampler("random", 12345).draw(2000)[:, 1]
    assert stats.kstest(b, stats.uniform(1e-3, 10.0 - 1e-3).cdf).pvalue < 1e-6


def test_normal_inverse_cdf_is_finite_at_the_ends() -> None:
    values = inverse_cdf(normal("c", 1.0, 2.0), np.array([0.0, 0.5, 1.0]))
    assert np.all(np.isfinite(values))
    assert values[1] == 1.0
    assert values[0] < 1.0 - 8 * 2.0 and values[2] > 1.0 + 8 * 2.0


finite = st.floats(-1e300, 1e300, allow_nan=False)


@given(finite, finite, st.floats(0.0, 1.0, exclude_max=True))
def test_uniform_values_stay_within_bounds(x: float, y: float, u: float) -> None:
    low, high = min(x, y), max(x, y)
    assume(low < high and math.isfinite(high - low))
    value = inverse_cdf(uniform("a", low, high), np.array([u, 0.0, np.nextafter(1.0, 0.0)]))
    assert np.all((low <= value) & (value <= high))
    assert value[1] == low


@given(st.floats(1e-300, 1e300), st.floats(1e-300, 1e300), st.floats(0.0, 1.0, exclude_max=True))
def test_loguniform_values_stay_within_bounds(x: float, y: float, u: float) -> None:
    low, high = min(x, y), max(x, y)
    assume(low < high)
    value = inverse_cdf(loguniform("b", low, high), np.array([u, 0.0, np.nextafter(1.0, 0.0)]))
    assert np.all((low <= value) & (value <= high))


@pytest.mark.parametrize("method", METHODS)
def test_pick_freeze_groups(method: Method) -> None:
    """Groups of p + 2 rows: A, B, then C_k = A with its k-th value from B; A and B are the two
    halves of one 2p-dimensional design point, each mapped by its parameter's distribution;
    drawing in pieces continues the sequence."""
    p = len(MIXED)
    whole = Sampler(MIXED, Sampling(method=method), 3, planned_size=16, pick_freeze=True)
    assert whole.group_size == p + 2
    rows = whole.draw(16)
    assert rows.shape == (16 * (p + 2), p) and whole.drawn == 16
    groups = rows.reshape(16, p + 2, p)
    a, b = groups[:, 0], groups[:, 1]
    for k in range(p):
        expected = a.copy()
        expected[:, k] = b[:, k]
        np.testing.assert_array_equal(groups[:, 2 + k], expected)
    assert not np.any(a == b)
    pieces = Sampler(MIXED, Sampling(method=method), 3, planned_size=16, pick_freeze=True)
    np.testing.assert_array_equal(np.concatenate([pieces.draw(5), pieces.draw(11)]), rows)
    if method == "lhs":  # every half of the 2p dimensions is stratified over the 16 groups
        for column, parameter in enumerate(MIXED):
            for half in (a, b):
                unit = _cdf(parameter, half[:, column])
                assert sorted(np.floor(unit * 16).astype(int)) == list(range(16))


def _cdf(parameter: Parameter, values: np.ndarray) -> np.ndarray:
    if isinstance(parameter, NormalParameter):
        return stats.norm.cdf(values, parameter.mean, parameter.std)
    if isinstance(parameter, LogUniformParameter):
        return (np.log(values) - math.log(parameter.low)) / (
            math.log(parameter.high) - math.log(parameter.low))
    return (values - parameter.low) / (parameter.high - parameter.low)
