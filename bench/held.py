"""Cost of holding running simulations' data apart until they complete (server/sa/held.py),
against folding each chunk into the statistics as it arrives (no redraw correction), same run.

R simulations run together and send their T time steps of C float64 cells interleaved, step by
step, as a server sees them; each then completes. "direct": FieldStatistics.update on each chunk
(what the server did before). "held": HeldChunks.add on each chunk, and at completion
every held chunk goes through FieldStatistics.update (what SensitivityServer does now). The
chunks are handed over as the server does with its views on received ZeroMQ frames: held.py
keeps such a chunk (64 KiB or more) without copying it; --copy makes it copy each. The
statistics are mean, variance, min and max. Printed: the ingest time of each (median of the
rounds, interleaved), their ratio, the held bytes at the peak (R running simulations) and the
process's peak resident memory after each. --budget-mb B adds "bounded": held within a budget
of B MiB (sa_config.hold_memory_mb), the simulations HeldChunks.to_fold names being committed
early and their later chunks on arrival, as SensitivityServer does. The last line is one JSON
object.

Run: .venv/bin/python bench/held.py [--cells 250000] [--steps 50] [--running 4] [--rounds 3]
[--copy] [--budget-mb B]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import numpy as np

from melissa.config.models import SAConfig
from melissa.server.sa.held import HeldChunks
from melissa.server.stats import FieldStatistics, compile_kernels

SA = SAConfig(mean=True, variance=True, min=True, max=True)


def direct(data: np.ndarray) -> float:
    running, steps, cells = data.shape
    stats = FieldStatistics(steps, cells, SA)
    started = time.perf_counter()
    for t in range(steps):
        for sim in range(running):
            stats.update(t, 0, data[sim, t], sim)
    return time.perf_counter() - started


def held(data: np.ndarray, frame: bool) -> tuple[float, int]:
    running, steps, cells = data.shape
    stats = FieldStatistics(steps, cells, SA)
    chunks = HeldChunks()
    started = time.perf_counter()
    for t in range(steps):
        for sim in range(running):
            chunks.add(sim, 0, t, 0, data[sim, t], frame=frame)
    for sim in range(running):  # each completes: its chunks go to the statistics
        for _, t, start, values in chunks.chunks(sim):
            stats.update(t, start, values, sim)
        chunks.drop(sim)
    return time.perf_counter() - started, chunks.peak_nbytes


def bounded(data: np.ndarray, frame: bool, budget: int) -> tuple[float, int, int]:
    """Held within `budget` bytes; also returns how many simulations were committed early."""
    running, steps, cells = data.shape
    stats = FieldStatistics(steps, cells, SA)
    chunks = HeldChunks(budget)
    early: set[int] = set()
    started = time.perf_counter()
    for t in range(steps):
        for sim in range(running):
            if sim not in early:
                for victim in chunks.to_fold(sim, data[sim, t].nbytes):
                    early.add(victim)
                    for _, step, start, values in chunks.chunks(victim):
                        stats.update(step, start, values, victim)
                    chunks.drop(victim)
            if sim in early:
                stats.update(t, 0, data[sim, t], sim)
            else:
                chunks.add(sim, 0, t, 0, data[sim, t], frame=frame)
    for sim in range(running):
        for _, t, start, values in chunks.chunks(sim):
            stats.update(t, start, values, sim)
        chunks.drop(sim)
    return time.perf_counter() - started, chunks.peak_nbytes, len(early)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=250_000)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--running", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--copy", action="store_true", help="held copies every chunk")
    parser.add_argument("--budget-mb", type=float, default=None,
                        help="also time holding within this budget (sa_config.hold_memory_mb)")
    args = parser.parse_args()
    compile_kernels(SA)
    data = np.random.default_rng(0).random((args.running, args.steps, args.cells))
    nbytes = data.nbytes
    times: dict[str, list[float]] = {"direct": [], "held": []}
    if args.budget_mb is not None:
        times["bounded"] = []
    peak_held = peak_bounded = folded = 0
    for _ in range(args.rounds):
        times["direct"].append(direct(data))
        elapsed, peak_held = held(data, not args.copy)
        times["held"].append(elapsed)
        if args.budget_mb is not None:
            elapsed, peak_bounded, folded = bounded(data, not args.copy,
                                                    int(args.budget_mb * 2**20))
            times["bounded"].append(elapsed)
    median = {k: statistics.median(v) for k, v in times.items()}
    per_sim = args.steps * args.cells * 8
    print(f"{args.running} simulations x {args.steps} steps x {args.cells} cells "
          f"({nbytes / 1e6:.0f} MB), median of {args.rounds} rounds")
    for name, seconds in median.items():
        print(f"  {name:<7} {seconds:.3f} s  {nbytes / seconds / 1e9:.2f} GB/s")
    ratio = median["held"] / median["direct"]
    print(f"  held/direct time: {ratio:.2f}; held at the peak: {peak_held / 1e6:.0f} MB "
          f"(= {args.running} x {per_sim / 1e6:.0f} MB per running simulation)")
    extra = {}
    if args.budget_mb is not None:
        extra = {"budget_mb": args.budget_mb, "bounded_s": median["bounded"],
                 "bounded_ratio": median["bounded"] / median["direct"],
                 "bounded_peak_bytes": peak_bounded, "committed_early": folded}
        print(f"  bounded/direct time: {extra['bounded_ratio']:.2f}; held at the peak: "
              f"{peak_bounded / 2**20:.0f} MiB (budget {args.budget_mb:g} MiB), {folded} of "
              f"{args.running} simulations committed early")
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"copy": args.copy, "cells": args.cells, "steps": args.steps,
                      "running": args.running,
                      "direct_s": median["direct"], "held_s": median["held"],
                      "ratio": ratio, "held_peak_bytes": peak_held,
                      "held_bytes_per_running_simulation": per_sim,
                      "peak_rss_bytes": peak_rss, **extra}))


if __name__ == "__main__":
    main()
