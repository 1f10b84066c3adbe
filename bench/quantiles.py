"""Quantile estimates: the previous estimator against the current one, side by side in one run.

Previous: density-scaled Robbins–Monro from the first sample (Tierney 1983), no clamp; its
update is copied below as `_previous_update` (the kernel of the version before exact samples).
Current: FieldStatistics with `quantiles` only (quantiles.py): exact up to K =
`quantile_exact_samples` samples per cell, then the same recursion warm-started from them,
clamped to [min, max] and monotone in the level.

1. Accuracy: mean rank error |F(q) - level| over --replicates cells (F: the piecewise-linear
   empirical CDF that np.quantile(method='linear') inverts) at n = 10, 30, 100, 1000 on five
   distributions, levels 0.05, 0.5, 0.95, for the previous estimator, for "auto" (the K the
   server chooses for a study of n simulations, with the default quantile_memory_mb, for a
   field of --field-cells cells and --field-steps time steps on one rank), and for K = 8 and
   K = 32 (a study larger than K: the estimate phase).
2. Throughput: cells·samples per second of the update, over --steps time steps of --cells cells,
   --samples samples per cell (the first K = --exact in the exact phase, the rest in the
   estimate phase, timed apart), and the state's bytes per cell and time step.

Run: .venv/bin/python bench/quantiles.py [--cells N] [--steps T] [--samples S] [--exact K]
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
from llvmlite.binding import get_host_cpu_name
from numba import njit

from melissa.config.models import SAConfig
from melissa.server.stats import FieldStatistics, quantiles

LEVELS = [0.05, 0.5, 0.95]
DISTRIBUTIONS = {
    "normal": lambda rng, size: rng.normal(size=size),
    "uniform": lambda rng, size: rng.random(size),
    "exponential": lambda rng, size: rng.exponential(size=size),
    "lognormal": lambda rng, size: rng.lognormal(sigma=1.0, size=size),
    "bimodal": lambda rng, size: np.where(rng.random(size) < 0.5, rng.normal(-3, 1, size),
                                          rng.normal(3, 1, size)),
}


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def _previous_update(
    x: np.ndarray, t: int, n: int, levels: np.ndarray, q: np.ndarray, density: np.ndarray,
    low: np.ndarray, high: np.ndarray,
) -> None:
    """The previous kernel (own extremes, one segment of count n - 1 before this sample)."""
    rate = 1.0 / n
    root = math.sqrt(n)
    for c in range(x.shape[0]):
        xi = np.float64(x[c])
        if np.isnan(xi):
            continue
        if n == 1 or np.isnan(low[t, c]):
            low[t, c] = xi
            high[t, c] = xi
            for j in range(levels.shape[0]):
                q[j, t, c] = xi
                density[j, t, c] = 0.0
            continue
        low[t, c] = min(low[t, c], xi)
        high[t, c] = max(high[t, c], xi)
        spread = high[t, c] - low[t, c]
        bandwidth = spread / root
        for j in range(levels.shape[0]):
            qj = q[j, t, c]
            near = 0.0
            if bandwidth > 0.0 and abs(xi - qj) <= bandwidth:
                near = 0.5 / bandwidth
            f = np.float64(density[j, t, c])
            f = f + (near - f) * rate
            density[j, t, c] = f
            step = spread * root
            if f > 0.0 and 1.0 / f < step:
                step = 1.0 / f
            below = 1.0 if xi <= qj else 0.0
            q[j, t, c] = qj + step * rate * (levels[j] - below)


class Previous:
    """The previous estimator's state: q float64, f float32 per level; own min and max."""

    def __init__(self, steps: int, cells: int) -> None:
        shape = (len(LEVELS), steps, cells)
        self.levels = np.array(LEVELS)
        self.q, self.f = np.full(shape, np.nan), np.zeros(shape, np.float32)
        self.low, self.high = np.full(shape[1:], np.nan), np.full(shape[1:], np.nan)
        self.nbytes = sum(a.nbytes for a in (self.q, self.f, self.low, self.high))

    def update(self, t: int, x: np.ndarray, n: int) -> None:
        _previous_update(x, t, n, self.levels, self.q, self.f, self.low, self.high)


def _current(steps: int, cells: int, exact: int) -> FieldStatistics:
    return FieldStatistics(steps, cells, SAConfig(mean=False, variance=False, quantiles=LEVELS,
                                                  quantile_exact_samples=exact))


def rank_error(x: np.ndarray, q: np.ndarray, levels: list[float]) -> np.ndarray:
    """Mean over cells of |F(q) - level| per level, F the piecewise-linear empirical CDF that
    np.quantile(method='linear') inverts (rank (n - 1)·level); 0 for np.quantile itself, and
    an estimate outside [min, max] counts as the nearest extreme."""
    xs = np.sort(x, axis=0)
    ranks = np.arange(x.shape[0]) / (x.shape[0] - 1)
    return np.array([np.mean([abs(np.interp(q[j, c], xs[:, c], ranks) - a)
                              for c in range(x.shape[1])]) for j, a in enumerate(levels)])


def accuracy(replicates: int, exacts: list[int], cells: int, steps: int) -> list[dict[str, object]]:
    rows = []
    budget = SAConfig(quantiles=LEVELS).quantile_memory_mb * 2**20
    print(f"mean rank error over {replicates} cells, levels {LEVELS}; auto: K for a study of n "
          f"simulations, {cells:,} cells x {steps} steps on one rank")
    print(f"{'n':>5} {'distribution':<12} {'previous':<20}{'auto':<20}"
          + "".join(f"{f'K = {k}':<20}" for k in exacts) + "ratio (auto)  ratio (K = 8)")
    for n in (10, 30, 100, 1000):
        auto, why = quantiles.auto_exact_samples(n, steps, cells, len(LEVELS), budget)
        print(f"auto at n = {n}: K = {auto} ({why})")
        for name, draw in DISTRIBUTIONS.items():
            x = draw(np.random.default_rng(n), (n, replicates))
            prev = Previous(1, replicates)
            for i in range(n):
                prev.update(0, np.ascontiguousarray(x[i]), i + 1)
            row: dict[str, object] = {"n": n, "distribution": name,
                                      "previous": rank_error(x, prev.q[:, 0], LEVELS).tolist()}
            for key, k in [("auto", auto)] + [(f"K={k}", k) for k in exacts]:
                cur = _current(1, replicates, k)
                for i in range(n):
                    cur.update(0, 0, np.ascontiguousarray(x[i]), i)
                row[key] = rank_error(x, cur.results()["quantile"][:, 0], LEVELS).tolist()
            for key in ("auto", "K=8"):
                row[f"worst_ratio_{key}"] = max(a / b for a, b in zip(row[key], row["previous"]))  # type: ignore[arg-type]
            print(f"{n:>5} {name:<12} "
                  + "".join(f"{' '.join(f'{v:.3f}' for v in row[key]):<20}"  # type: ignore[attr-defined]
                            for key in ["previous", "auto"] + [f"K={k}" for k in exacts])
                  + f"{row['worst_ratio_auto']:<14.2f}{row['worst_ratio_K=8']:.2f}")
            rows.append(row)
    return rows


def throughput(cells: int, steps: int, samples: int, exact: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    pool = [rng.standard_normal(cells) for _ in range(7)]
    prev, cur = Previous(steps, cells), _current(steps, cells, exact)
    cur.state_dict()  # every row initialised, as Previous's: page faults stay out of the timing
    for warm in (Previous(1, 4), _current(1, 4, exact)):  # JIT compilation
        for i in range(exact + 2):
            x = np.ones(4) * i
            warm.update(0, x, i + 1) if isinstance(warm, Previous) else warm.update(0, 0, x, i)
    seconds = {"previous": 0.0, "exact phase": 0.0, "estimate phase": 0.0}
    for i in range(samples):
        for t in range(steps):
            x = pool[(i + t) % len(pool)]
            started = time.perf_counter()
            prev.update(t, x, i + 1)
            middle = time.perf_counter()
            cur.update(t, 0, x, i)
            ended = time.perf_counter()
            seconds["previous"] += middle - started
            seconds["exact phase" if i < exact else "estimate phase"] += ended - middle
    per_phase = {"previous": samples, "exact phase": min(samples, exact),
                 "estimate phase": max(samples - exact, 0)}
    rates = {name: cells * steps * per_phase[name] / s for name, s in seconds.items() if s}
    state_bytes = {"previous": prev.nbytes / (cells * steps), "current": cur.nbytes / (cells * steps)}
    print(f"\n{cells:,} cells x {steps} steps x {samples} samples, K = {exact}, CPU "
          f"{get_host_cpu_name()}, one thread")
    for name, rate in rates.items():
        print(f"{name:<16}{rate / 1e6:>10.1f} M cells·samples/s  {rate / rates['previous']:.2f}x")
    print(f"state bytes per cell and step: previous {state_bytes['previous']:.0f}, "
          f"current {state_bytes['current']:.0f}")
    return {**{f"{k.replace(' ', '_')}_per_s": round(v) for k, v in rates.items()},
            **{f"bytes_per_cell_{k}": round(v, 1) for k, v in state_bytes.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=250_000)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--exact", type=int, default=8, help="K of the throughput run")
    parser.add_argument("--field-cells", type=int, default=10_000,
                        help="cells of the field whose auto K the accuracy table uses")
    parser.add_argument("--field-steps", type=int, default=100,
                        help="time steps of that field")
    parser.add_argument("--replicates", type=int, default=200,
                        help="cells of the accuracy table (0: skip it)")
    args = parser.parse_args()
    rows = (accuracy(args.replicates, [8, 32], args.field_cells, args.field_steps)
            if args.replicates else [])
    result = {"bench": "quantiles", "cpu": get_host_cpu_name(), "cells": args.cells,
              "steps": args.steps, "samples": args.samples, "exact": args.exact,
              **throughput(args.cells, args.steps, args.samples, args.exact),
              **{f"worst_ratio_{key}": {f"{r['n']}/{r['distribution']}":
                                        round(r[f"worst_ratio_{key}"], 2)  # type: ignore[call-overload]
                                        for r in rows} for key in ("auto", "K=8")}}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
