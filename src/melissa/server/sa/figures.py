"""Study-level convergence figures for sa_config.stop_when: name -> `Figure`.

A figure is computed in two halves, as the server's ranks each hold some cells of every field:
`local` maps one rank's state of one field to a few partial sums (a list of floats, sent to rank
0 in the rank's status), and `combine` turns every rank's partial sums into the figure. The
study's figure is the largest over its fields (the slowest to converge decides), and the study
stops once it is below sa_config.stop_when.below. To add a figure, add an entry to FIGURES.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from melissa.server.stats import FieldStatistics
    from melissa.server.stats.sobol_aggregate import AggregatedSobol


@dataclass(frozen=True)
class FieldState:
    """What a figure sees of one field on one rank."""

    statistics: FieldStatistics
    aggregate: AggregatedSobol | None  # the aggregated Sobol' indices; None unless sobol_indices


@dataclass(frozen=True)
class Figure:
    local: Callable[[FieldState], list[float]]
    combine: Callable[[Sequence[Sequence[float]]], float]
    requires: str  # the SAConfig switch it needs ("variance", "sobol_indices")
    description: str


def mean_stderr_sums(state: FieldState) -> list[float]:
    """Over this rank's cells and time steps with n >= 2 samples: [cells, Σ s²/n, Σ s², Σ x̄,
    Σ x̄²] (s²: the unbiased variance of the cell, x̄: its mean). The counts are piecewise
    constant over the cells (counts.py), so the sums go segment by segment."""
    s = state.statistics.state_dict()
    offsets, starts, counts = s["count_offsets"], s["count_starts"], s["count_values"]
    mean, m2 = s["mean"], s["m2"]
    n_cells = mean.shape[1]
    sums = np.zeros(5)
    for t in range(mean.shape[0]):
        lo, hi = offsets[t], offsets[t + 1]
        bounds = np.append(starts[lo:hi], n_cells)
        for a, b, n in zip(bounds[:-1], bounds[1:], counts[lo:hi]):
            if n < 2:
                continue
            variance = m2[t, a:b] / (n - 1)
            total = float(variance.sum())
            mu = mean[t, a:b]
            sums += (b - a, total / n, total, float(mu.sum()), float(np.dot(mu, mu)))
    return sums.tolist()


def mean_stderr(parts: Sequence[Sequence[float]]) -> float:
    """√(mean of s²/n) / √(mean of s² + spatial variance of x̄): the root-mean-square standard
    error of the mean, relative to the field's standard deviation over the ensemble, the time
    steps and the cells together (law of total variance). NaN before any cell has 2 samples."""
    cells, se2, var, mu, mu2 = (sum(p[i] for p in parts) for i in range(5))
    if cells == 0:
        return math.nan
    if se2 == 0:
        return 0.0  # the field does not vary with the parameters: the mean is exact
    spread = var / cells + max(mu2 / cells - (mu / cells) ** 2, 0.0)
    return math.sqrt(se2 / cells / spread)


def sobol_interval_parts(state: FieldState) -> list[float]:
    """This rank's aggregated-index summary, flattened: [n, mean (p × 5), cov (p × 5 × 5)]."""
    assert state.aggregate is not None  # the config requires sobol_indices for this figure
    summary = state.aggregate.summary()
    return [float(summary["n"]), *np.ravel(summary["mean"]), *np.ravel(summary["cov"])]


def sobol_interval(parts: Sequence[Sequence[float]]) -> float:
    """The widest 95% interval of the field's aggregated first-order and total Sobol' indices
    (server/sa/convergence.py): NaN until 4 groups are complete on every rank."""
    from melissa.server.sa.convergence import sobol_convergence_figure

    summaries = []
    for part in parts:
        p = (len(part) - 1) // 30
        values = np.asarray(part[1:], dtype=np.float64)
        summaries.append({"n": int(part[0]), "mean": values[:5 * p].reshape(p, 5),
                          "cov": values[5 * p:].reshape(p, 5, 5)})
    return sobol_convergence_figure(summaries)


FIGURES: dict[str, Figure] = {
    "mean_stderr": Figure(
        mean_stderr_sums, mean_stderr, "variance",
        "RMS standard error of the mean relative to the field's total standard deviation",
    ),
    "sobol_interval": Figure(
        sobol_interval_parts, sobol_interval, "sobol_indices",
        "widest 95% interval of the aggregated first-order and total Sobol' indices",
    ),
}
