"""stop_when's figures (server/sa/figures.py): mean_stderr against NumPy, split over ranks."""

from __future__ import annotations

import math

import numpy as np

from melissa.config.models import SAConfig
from melissa.server.sa.figures import FIGURES, FieldState
from melissa.server.stats import FieldStatistics

SA = SAConfig(mean=True, variance=True)


def stats_of(samples: np.ndarray) -> FieldStatistics:
    """samples: (simulation, time, cell)."""
    sims, steps, cells = samples.shape
    stats = FieldStatistics(steps, cells, SA)
    for sim in range(sims):
        for t in range(steps):
            stats.update(t, 0, samples[sim, t], sim)
    return stats


def expected(samples: np.ndarray) -> float:
    n = samples.shape[0]
    var = samples.var(axis=0, ddof=1)
    spread = var.mean() + samples.mean(axis=0).var()
    return math.sqrt((var / n).mean() / spread)


def test_mean_stderr_is_numpy_and_depends_on_the_data() -> None:
    rng = np.random.default_rng(1)
    figure = FIGURES["mean_stderr"]
    noise = rng.normal(size=(9, 3, 40))
    profile = noise + 10 * np.arange(40)  # the same noise over a strong spatial profile
    values = []
    for samples in (noise, profile):
        got = figure.combine([figure.local(FieldState(stats_of(samples), None))])
        assert math.isclose(got, expected(samples), rel_tol=1e-10)
        values.append(got)
    assert values[1] < values[0] / 10
    # Over two ranks (cells split): the same figure.
    parts = [figure.local(FieldState(stats_of(profile[..., cells]), None))
             for cells in (slice(0, 15), slice(15, 40))]
    assert math.isclose(figure.combine(parts), values[1], rel_tol=1e-10)


def test_mean_stderr_edges() -> None:
    figure = FIGURES["mean_stderr"]
    one = stats_of(np.ones((1, 2, 3)))  # one sample: no variance yet
    assert math.isnan(figure.combine([figure.local(FieldState(one, None))]))
    constant = stats_of(np.ones((4, 2, 3)))
    assert figure.combine([figure.local(FieldState(constant, None))]) == 0.0


def test_sobol_interval_is_the_aggregated_widest_interval_over_ranks() -> None:
    """The stop_when figure of a Sobol' study equals the convergence figure that the summary,
    the CSV and melissa-monitor show, computed from the same joins split over two ranks."""
    from melissa.server.sa.groups import GroupJoin
    from melissa.server.stats.sobol import SobolState
    from melissa.server.stats.sobol_aggregate import combine, widest_interval

    rng = np.random.default_rng(4)
    p, cells, groups = 3, 10, 40
    weights = np.linspace(0.2, 2.0, cells)
    figure = FIGURES["sobol_interval"]
    assert math.isnan(figure.combine([figure.local(FieldState(
        stats_of(np.zeros((2, 1, cells))), GroupJoin(SobolState(p, 1, cells)).aggregate))]))
    draws = rng.random((groups, 2, p))
    parts, summaries = [], []
    for lo, hi in ((0, 4), (4, cells)):  # the same groups, the cells split over two ranks
        join = GroupJoin(SobolState(p, 1, hi - lo))
        for g, (a, b) in enumerate(draws):
            members = [a, b] + [np.where(np.arange(p) == k, a, b) for k in range(p)]
            for m, x in enumerate(members):
                y = (np.sin(x[0]) + 2 * x[1] ** 2 + 0.1 * x[2]) * weights[lo:hi]
                join.add(g * (p + 2) + m, 0, 0, y)
        parts.append(figure.local(FieldState(stats_of(np.zeros((2, 1, hi - lo))),
                                             join.aggregate)))
        summaries.append(join.aggregate.summary())
    got = figure.combine(parts)
    assert math.isfinite(got) and 0 < got < 2
    assert got == widest_interval(combine(summaries))
