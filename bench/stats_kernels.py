"""Update throughput of the statistics kernel, against `acc += x` measured in the same run.

Throughput is bytes of incoming field data (x) processed per second. Rows:
- acc += x: NumPy in-place add on arrays of the same size (the memory-bandwidth baseline);
- stream floor: a Numba loop that reads and writes the same arrays as the four-moment update but
  does no arithmetic beyond adds, i.e. the best a memory-bound moment update can do here;
- moments: FieldStatistics.update with mean, variance, skewness, kurtosis;
- SA set: the same plus min, max (with simulation ids) and 2 thresholds.
Each method runs in interleaved rounds after a warm-up (JIT compiled); the median call is kept.
The last line printed is one JSON object with the figures and the ratios to `acc += x`.

Run: .venv/bin/python bench/stats_kernels.py [--cells N] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
from llvmlite.binding import get_host_cpu_name
from numba import njit

from melissa.config.models import SAConfig
from melissa.server.stats import FieldStatistics

MOMENTS = SAConfig(mean=True, variance=True, skewness=True, kurtosis=True)
SA_SET = SAConfig(
    mean=True, variance=True, skewness=True, kurtosis=True, min=True, max=True,
    threshold_exceedance=True, threshold_values=[0.0, 1.0],
)


@njit(cache=True, error_model="numpy")
def _stream_floor(
    x: np.ndarray, n: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray
) -> None:
    for i in range(x.shape[0]):
        n[i] += 1
        a[i] += x[i]
        b[i] += x[i]
        c[i] += x[i]
        d[i] += x[i]


def _methods(cells: int) -> dict[str, Callable[[np.ndarray, int], object]]:
    acc = np.zeros(cells)
    floor_state = [np.zeros(cells, np.int64)] + [np.zeros(cells) for _ in range(4)]
    moments = FieldStatistics(1, cells, MOMENTS)
    sa_set = FieldStatistics(1, cells, SA_SET)
    return {
        "acc += x": lambda x, _: np.add(acc, x, out=acc),
        "stream floor": lambda x, _: _stream_floor(x, *floor_state),
        "moments": lambda x, sim: moments.update(0, 0, x, sim),
        "SA set": lambda x, sim: sa_set.update(0, 0, x, sim),
    }


def run(cells: int, rounds: int, calls: int) -> dict[str, list[float]]:
    """Seconds per call of each method, interleaved round by round."""
    rng = np.random.default_rng(0)
    # A few distinct inputs, so that extrema keep changing now and then, as in a real study.
    inputs = [rng.standard_normal(cells) for _ in range(4)]
    methods = _methods(cells)
    times: dict[str, list[float]] = {name: [] for name in methods}
    for method in methods.values():  # warm-up: JIT compilation, first-touch page faults
        method(inputs[0], 0)
    sim = 1
    for _ in range(rounds):
        for name, method in methods.items():
            for _ in range(calls):
                x = inputs[sim % len(inputs)]
                started = time.perf_counter()
                method(x, sim)
                times[name].append(time.perf_counter() - started)
                sim += 1
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=6, help="timed calls per method per round")
    args = parser.parse_args()
    times = run(args.cells, args.rounds, args.calls)
    nbytes = args.cells * 8
    gbps = {name: nbytes / statistics.median(t) / 1e9 for name, t in times.items()}
    best = {name: nbytes / min(t) / 1e9 for name, t in times.items()}
    base = gbps["acc += x"]
    print(f"{args.cells:,} float64 cells per update, {len(times['acc += x'])} calls per method, "
          f"CPU {get_host_cpu_name()}, one thread")
    print(f"{'method':<14}{'median GB/s':>13}{'best GB/s':>11}{'ratio':>8}")
    for name in times:
        print(f"{name:<14}{gbps[name]:>13.2f}{best[name]:>11.2f}{gbps[name] / base:>8.3f}")
    print(json.dumps({
        "bench": "stats_kernels",
        "cells": args.cells,
        "cpu": get_host_cpu_name(),
        "statistic": "median",
        "acc_add_gbps": round(base, 3),
        "stream_floor_gbps": round(gbps["stream floor"], 3),
        "moments_gbps": round(gbps["moments"], 3),
        "sa_set_gbps": round(gbps["SA set"], 3),
        "moments_ratio": round(gbps["moments"] / base, 3),
        "sa_set_ratio": round(gbps["SA set"] / base, 3),
        "moments_vs_stream_floor": round(gbps["moments"] / gbps["stream floor"], 3),
    }))


if __name__ == "__main__":
    main()
