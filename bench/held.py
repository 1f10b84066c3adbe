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
process's peak resident memory after each. The last line is one JSON object.

Run: .venv/bin/python bench/held.py [--cells 250000] [--steps 50] [--running 4] [--rounds 3]
[--copy]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=250_000)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--running", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--copy", action="store_true", help="held copies every chunk")
    args = parser.parse_args()
    compile_kernels(SA)
    data = np.random.default_rng(0).random((args.running, args.steps, args.cells))
    nbytes = data.nbytes
    times: dict[str, list[float]] = {"direct": [], "held": []}
    peak_held = 0
    for _ in range(args.rounds):
        times["direct"].append(direct(data))
        elapsed, peak_held = held(data, not args.copy)
        times["held"].append(elapsed)
    median = {k: statistics.median(v) for k, v in times.items()}
    per_sim = args.steps * args.cells * 8
    print(f"{args.running} simulations x {args.steps} steps x {args.cells} cells "
          f"({nbytes / 1e6:.0f} MB), median of {args.rounds} rounds")
    for name, seconds in median.items():
        print(f"  {name:<7} {seconds:.3f} s  {nbytes / seconds / 1e9:.2f} GB/s")
    ratio = median["held"] / median["direct"]
    print(f"  held/direct time: {ratio:.2f}; held at the peak: {peak_held / 1e6:.0f} MB "
          f"(= {args.running} x {per_sim / 1e6:.0f} MB per running simulation)")
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"copy": args.copy, "cells": args.cells, "steps": args.steps,
                      "running": args.running,
                      "direct_s": median["direct"], "held_s": median["held"],
                      "ratio": ratio, "held_peak_bytes": peak_held,
                      "held_bytes_per_running_simulation": per_sim,
                      "peak_rss_bytes": peak_rss}))


if __name__ == "__main__":
    main()
