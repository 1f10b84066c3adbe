"""Output bandwidth of the statistics server: the Zarr results written by M ranks in parallel
(each rank its own cells, no gather), against a raw sequential write of the same number of bytes
(64 MiB writes, then fsync) by the same ranks in the same run. Also the single NetCDF file
(gathered on rank 0) for comparison, and each rank's peak memory.

Every rank builds the full SA set's state for its cells (a few samples per time step), then:
raw write, Zarr (float64), Zarr float32, Zarr zstd, NetCDF, each timed from a barrier to a
barrier, with everything written fsynced (as the server does).

    .venv/bin/python bench/output.py [--ranks 1 2] [--cells 250000] [--steps 100] [--dir DIR]

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

FULL_SET = {"skewness": True, "kurtosis": True, "min": True, "max": True,
            "threshold_exceedance": True, "threshold_values": [0.5, 1.0],
            "quantiles": [0.05, 0.25, 0.5, 0.75, 0.95]}
RAW_BLOCK = 64 << 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cells", type=int, default=250_000)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: /tmp)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    figures = []
    for ranks in args.ranks:
        work = Path(tempfile.mkdtemp(prefix="melissa-output-", dir=args.dir))
        try:
            mpi = [str(Path(sys.executable).parent / "mpiexec"), "-n", str(ranks)]
            proc = subprocess.run(
                [*mpi, sys.executable, __file__, "--worker", "--cells", str(args.cells),
                 "--steps", str(args.steps), "--dir", str(work)],
                capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise SystemExit(proc.stdout + proc.stderr)
            result = json.loads(proc.stdout.strip().splitlines()[-1])
        finally:
            shutil.rmtree(work, ignore_errors=True)
        figures.append(result)
        print(f"M={ranks}: " + ", ".join(
            f"{k} {v['gb_s']:.2f} GB/s ({v['gb']:.2f} GB, {v['s']:.1f} s"
            + (f", {v['ratio_to_raw']:.2f} of raw)" if "ratio_to_raw" in v else ")")
            for k, v in result["writes"].items()) + f"; peak MB per rank {result['peak_mb']}")
    print(json.dumps(figures))


def worker(args: argparse.Namespace) -> None:
    from mpi4py import MPI

    from melissa.config.models import SAConfig
    from melissa.protocol import cell_range, cell_ranges
    from melissa.server.base import peak_memory
    from melissa.server.sa.output import write_field_results
    from melissa.server.sa.zarr_output import ZarrResults
    from melissa.server.stats import FieldStatistics

    comm = MPI.COMM_WORLD
    rank, ranks = comm.Get_rank(), comm.Get_size()
    sa = SAConfig(**FULL_SET)
    start, stop = cell_range(args.cells, ranks, rank)
    stats = FieldStatistics(args.steps, stop - start, sa)
    rng = np.random.default_rng(rank)
    for t in range(args.steps):
        for sim in range(3):
            stats.update(t, 0, rng.random(stop - start), sim)
    leading: dict[str, Any] = {"threshold": sa.threshold_values, "quantile_level": sa.quantiles,
                               "parameter": []}
    specs = FieldStatistics(1, 1, sa).results()
    work: Path = args.dir
    writes: dict[str, dict[str, float]] = {}

    def timed(name: str, write: Any, nbytes: int) -> None:
        comm.Barrier()
        started = time.perf_counter()
        write()
        comm.Barrier()
        seconds = time.perf_counter() - started
        total = comm.allreduce(nbytes)
        writes[name] = {"s": seconds, "gb": total / 1e9, "gb_s": total / 1e9 / seconds}

    def zarr_write(name: str, dtype: str, compression: str) -> int:
        floats = np.dtype(dtype)
        variables = {k: floats if v.dtype.kind == "f" else v.dtype for k, v in specs.items()}
        writer = ZarrResults(work / f"{name}.zarr", "u", nb_time_steps=args.steps, shape=None,
                             global_size=args.cells, leading=leading, variables=variables,
                             ranges=cell_ranges(args.cells, ranks), rank=rank, comm=comm,
                             compression=compression, durable=True)
        timed(name, lambda: writer.write(stats.results, {}), 0)
        return sum(_bytes(p) for p in (work / f"{name}.zarr").rglob("*")) if rank == 0 else 0

    # The bytes of the float64 results of this rank's cells.
    per_step = sum(v.dtype.itemsize * (v.size // 1) for v in stats.results(slice(0, 1)).values())
    nbytes = per_step * args.steps
    timed("raw", lambda: _raw_write(work / f"raw-{rank}.bin", nbytes), nbytes)
    (work / f"raw-{rank}.bin").unlink()
    on_disk = {name: zarr_write(name, dtype, compression) for name, dtype, compression in (
        ("zarr", "float64", "none"), ("zarr_float32", "float32", "none"),
        ("zarr_zstd", "float64", "zstd"))}

    def netcdf() -> None:
        parts = comm.gather(stats.results(), root=0)
        if rank == 0:
            results = {k: np.concatenate([p[k] for p in parts], axis=-1) for k in parts[0]}
            write_field_results(work / "u.nc", "u", results, shape=None,
                                thresholds=sa.threshold_values, attrs={},
                                quantile_levels=sa.quantiles)

    timed("netcdf", netcdf, 0)
    on_disk["netcdf"] = _bytes(work / "u.nc") if rank == 0 else 0
    raw_speed = writes["raw"]["gb_s"]
    for name, figure in writes.items():
        if name != "raw":
            size = comm.bcast(on_disk[name], root=0)
            figure["gb"] = size / 1e9
            figure["gb_s"] = size / 1e9 / figure["s"]
            figure["ratio_to_raw"] = figure["gb_s"] / raw_speed
    peaks = comm.gather(round(peak_memory() / 1e6), root=0)
    if rank == 0:
        print(json.dumps({"ranks": ranks, "cells": args.cells, "steps": args.steps,
                          "writes": {k: {n: round(x, 3) for n, x in v.items()}
                                     for k, v in writes.items()}, "peak_mb": peaks}))


def _raw_write(path: Path, nbytes: int) -> None:
    block = np.random.default_rng(0).random(RAW_BLOCK // 8).tobytes()
    with open(path, "wb") as f:
        left = nbytes
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= len(block)
        f.flush()
        os.fsync(f.fileno())


def _bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


if __name__ == "__main__":
    main()
