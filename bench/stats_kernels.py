"""Update throughput of the statistics kernel, against `acc += x` measured in the same run.

Throughput is bytes of incoming field data (x) processed per second. Rows:
- acc += x: NumPy in-place add on arrays of the same size (the memory-bandwidth baseline);
- stream floor: a Numba loop that reads and writes the same arrays as the four-moment update
  (μ, M2, M3, M4; the counts are per segment of cells, not per cell) but does no arithmetic
  beyond adds, i.e. the best a memory-bound moment update can do here;
- moments: FieldStatistics.update with mean, variance, skewness, kurtosis;
- SA set: the same plus min, max (with simulation ids) and 2 thresholds.
The "bytes/cell" column is the memory traffic per cell and update (reads + writes; the extrema
are read but rarely written once settled). Each method runs in interleaved rounds after a
warm-up (JIT compiled); the median call is kept. The run is made at --cells (default 2M: the
arrays of `acc += x`, 32 MB, still partly fit a 32 MiB L3, which favours the baseline) and again
at --large-cells (default 16M, 0 to skip: every array far beyond the caches).
The last line printed is one JSON object with the figures and the ratios to `acc += x`; the
keys ending in "_large" are the --large-cells run.

Run: .venv/bin/python bench/stats_kernels.py [--cells N] [--large-cells N] [--rounds R]
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


# Memory traffic per cell and update, in bytes: x is read (8); acc, μ, M2, M3, M4 and the
# exceedance counts are read and written (16 each); min, max and their ids are read (32).
BYTES_PER_CELL = {
    "acc += x": 8 + 16,
    "stream floor": 8 + 4 * 16,
    "moments": 8 + 4 * 16,
    "SA set": 8 + 4 * 16 + 4 * 8 + 2 * 16,
}


@njit(cache=True, error_model="numpy")
def _stream_floor(
    x: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray
) -> None:
    for i in range(x.shape[0]):
        a[i] += x[i]
        b[i] += x[i]
        c[i] += x[i]
        d[i] += x[i]


def _methods(cells: int) -> dict[str, Callable[[np.ndarray, int], object]]:
    acc = np.zeros(cells)
    floor_state = [np.zeros(cells) for _ in range(4)]
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


def figures(cells: int, rounds: int, calls: int) -> dict[str, dict[str, float]]:
    """Median and best GB/s of x per method, and the median's ratio to `acc += x`."""
    times = run(cells, rounds, calls)
    nbytes = cells * 8
    gbps = {name: nbytes / statistics.median(t) / 1e9 for name, t in times.items()}
    best = {name: nbytes / min(t) / 1e9 for name, t in times.items()}
    base = gbps["acc += x"]
    print(f"{cells:,} float64 cells per update, {len(times['acc += x'])} calls per method, "
          f"CPU {get_host_cpu_name()}, one thread")
    print(f"{'method':<14}{'bytes/cell':>11}{'median GB/s':>13}{'best GB/s':>11}{'ratio':>8}")
    for name in times:
        print(f"{name:<14}{BYTES_PER_CELL[name]:>11}{gbps[name]:>13.2f}{best[name]:>11.2f}"
              f"{gbps[name] / base:>8.3f}")
    return {"gbps": gbps, "ratio": {name: g / base for name, g in gbps.items()}}


def _summary(f: dict[str, dict[str, float]], suffix: str) -> dict[str, float]:
    gbps, ratio = f["gbps"], f["ratio"]
    return {
        f"acc_add_gbps{suffix}": round(gbps["acc += x"], 3),
        f"stream_floor_gbps{suffix}": round(gbps["stream floor"], 3),
        f"moments_gbps{suffix}": round(gbps["moments"], 3),
        f"sa_set_gbps{suffix}": round(gbps["SA set"], 3),
        f"moments_ratio{suffix}": round(ratio["moments"], 3),
        f"sa_set_ratio{suffix}": round(ratio["SA set"], 3),
        f"moments_vs_stream_floor{suffix}": round(gbps["moments"] / gbps["stream floor"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=2_000_000)
    parser.add_argument("--large-cells", type=int, default=16_000_000,
                        help="cells of the second run (0: skip it)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=6, help="timed calls per method per round")
    args = parser.parse_args()
    result = {
        "bench": "stats_kernels",
        "cells": args.cells,
        "cpu": get_host_cpu_name(),
        "statistic": "median",
        **_summary(figures(args.cells, args.rounds, args.calls), ""),
    }
    if args.large_cells:
        print()
        result["cells_large"] = args.large_cells
        result.update(_summary(figures(args.large_cells, args.rounds, args.calls), "_large"))
    result["bytes_per_cell"] = {
        "acc_add": BYTES_PER_CELL["acc += x"], "moments": BYTES_PER_CELL["moments"],
        "sa_set": BYTES_PER_CELL["SA set"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
