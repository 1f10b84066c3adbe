"""Sobol' indices: throughput of the Martinez update kernel and of a Sobol' study's ingest.

1. Kernel: p = 6, one complete pick-freeze group (8 member arrays of --cells float64) per update,
   through the group join (each member's chunk copied into the join buffer, then the fused
   Welford/co-moment update) and through the bare kernel; against `acc += x` over the same
   8 arrays, in the same run. GB/s of incoming field data (8 x cells x 8 bytes per group).
   Second order (sa_config.second_order): a group of 2p + 2 = 14 member arrays through the join
   (first-order and second-order updates), GB/s of its 14 x cells x 8 bytes.
2. Ingest: one group of 8 client processes streams --steps steps of --ingest-cells cells each to
   a live server computing the indices (plus mean and variance of A and B), against raw pyzmq
   PUSH/PULL of the same bytes by the same number of processes (bench/ingest.py's harness).

    .venv/bin/python bench/sobol.py [--cells 1048576] [--rounds 5] [--ingest-cells 262144]
                                    [--steps 20] [--repeats 3]

The last line printed is one JSON object with the figures and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ingest  # bench/ingest.py's harness (its START_DELAY_S is set below)

from melissa.server.sa.groups import GroupJoin
from melissa.server.stats.sobol import SobolState
from melissa.server.stats.sobol_second import SecondOrderState

P = 6
ingest.START_DELAY_S = 10.0  # 8 client processes must all connect before the common start


def kernel_figures(cells: int, rounds: int) -> dict[str, float]:
    members = P + 2
    rng = np.random.default_rng(0)
    data = [rng.random(cells) for _ in range(members)]
    group = np.ascontiguousarray(np.stack(data))
    state = SobolState(P, 1, cells)
    join = GroupJoin(SobolState(P, 1, cells))
    acc = np.zeros(cells)
    state.update(0, group)  # compile, and touch the state's pages
    for m in range(members):
        join.add(m, 0, 0, data[m])
    extended = 2 * P + 2
    data2 = data + [rng.random(cells) for _ in range(extended - members)]
    join2 = GroupJoin(SobolState(P, 1, cells), SecondOrderState(P, 1, cells))
    for m in range(extended):
        join2.add(m, 0, 0, data2[m])
    best = {"acc": np.inf, "kernel": np.inf, "join": np.inf, "second": np.inf}
    for r in range(rounds):  # interleaved, so that load changes hit every variant
        t0 = time.perf_counter()
        for x in data:
            acc += x
        t1 = time.perf_counter()
        state.update(0, group)
        t2 = time.perf_counter()
        for m in range(members):
            join.add((r + 1) * members + m, 0, 0, data[m])
        t3 = time.perf_counter()
        for m in range(extended):
            join2.add((r + 1) * extended + m, 0, 0, data2[m])
        t4 = time.perf_counter()
        best = {"acc": min(best["acc"], t1 - t0), "kernel": min(best["kernel"], t2 - t1),
                "join": min(best["join"], t3 - t2), "second": min(best["second"], t4 - t3)}
    nbytes = {"second": extended * cells * 8}
    return {name: nbytes.get(name, members * cells * 8) / seconds / 1e9
            for name, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1 << 20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ingest-cells", type=int, default=1 << 18)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    k = kernel_figures(args.cells, args.rounds)
    print(f"kernel, p = {P}, {args.cells} cells, best of {args.rounds}, {os.cpu_count()} cores:")
    print(f"  acc += x over the 8 member arrays  {k['acc']:6.2f} GB/s")
    print(f"  Martinez update kernel             {k['kernel']:6.2f} GB/s   ratio "
          f"{k['kernel'] / k['acc']:.2f}")
    print(f"  group join + update                {k['join']:6.2f} GB/s   ratio "
          f"{k['join'] / k['acc']:.2f}")
    print(f"  second order: join of 14 + update  {k['second']:6.2f} GB/s   ratio "
          f"{k['second'] / k['acc']:.2f}")
    clients = P + 2
    total = clients * args.ingest_cells * args.steps * 8
    raw_times, sobol_times, output_times = [], [], []
    sa = {"sobol_indices": True, "mean": True, "variance": True}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            raw_times.append(ingest.run_raw(clients, args.ingest_cells, args.steps))
            elapsed, output_s = ingest.run_melissa(clients, args.ingest_cells, args.steps,
                                                   Path(tmp), sa_config=sa, nb_parameters=P)
            sobol_times.append(elapsed)
            output_times.append(output_s)
    raw = total / min(raw_times) / 1e9
    sobol = total / min(sobol_times) / 1e9
    print(f"ingest, one group of {clients} clients x {args.steps} steps x {args.ingest_cells} "
          f"cells = {total / 1e6:.0f} MB per run, best of {args.repeats}:")
    print(f"  raw pyzmq PUSH/PULL                {raw:6.2f} GB/s")
    print(f"  melissa, Sobol' indices p = {P}     {sobol:6.2f} GB/s   ratio {sobol / raw:.2f}"
          f"   output phase {min(output_times):.2f} s")
    print(json.dumps({
        "bench": "sobol", "p": P, "cells": args.cells,
        "kernel_gbps": round(k["kernel"], 3), "join_gbps": round(k["join"], 3),
        "acc_gbps": round(k["acc"], 3), "kernel_ratio": round(k["kernel"] / k["acc"], 3),
        "join_ratio": round(k["join"] / k["acc"], 3),
        "second_order_gbps": round(k["second"], 3),
        "second_order_ratio": round(k["second"] / k["acc"], 3), "ingest_cells": args.ingest_cells,
        "steps": args.steps, "raw_gbps": round(raw, 3), "sobol_ingest_gbps": round(sobol, 3),
        "ingest_ratio": round(sobol / raw, 3), "output_s": round(min(output_times), 3),
    }))


if __name__ == "__main__":
    main()
