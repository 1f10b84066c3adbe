"""Cost of the server's checkpoints (server/checkpoint.py), measured side by side in one run.

1. Write and read of a large state: `write_checkpoint` (checksum, temp file, fsync, rename,
   directory fsync) against its floor, the same bytes written raw to one file and fsynced.
2. Study ingest: a real `melissa-server` process fed by clients (sequential, in this process)
   with checkpoints every `--interval` seconds against checkpoint_interval 0 (none), alternated
   `--repeats` times; the time runs from the first HELLO to the last END_ACK.

    .venv/bin/python bench/checkpoint.py [--state-mb 256] [--cells 200000] [--steps 20]
                                         [--sims 64] [--interval 1.0] [--repeats 3]

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from melissa.client.session import ClientEnvironment, Session
from melissa.launcher.channel import ServerChannel
from melissa.paths import StudyPaths
from melissa.server.checkpoint import read_checkpoint, write_checkpoint


def bench_write(directory: Path, state_mb: int) -> dict[str, float]:
    paths = StudyPaths(directory)
    directory.mkdir(parents=True)
    cells = state_mb * 2**20 // 8 // 4
    arrays = {f"field0/stats/{name}": np.random.default_rng(0).random(cells)
              for name in ("mean", "m2", "m3", "m4")}
    raw_s, write_s = [], []
    for sequence in range(3):  # alternated; the best of each
        started = time.perf_counter()
        with open(directory / f"raw{sequence}.bin", "wb") as f:
            f.writelines(array.data for array in arrays.values())
            f.flush()
            os.fsync(f.fileno())
        raw_s.append(time.perf_counter() - started)
        written = write_checkpoint(paths, 0, 1, sequence, arrays, {})
        write_s.append(written.seconds)
    started = time.perf_counter()
    read_checkpoint(written.path)
    read_s = time.perf_counter() - started
    mb, best, floor = written.nbytes / 1e6, min(write_s), min(raw_s)
    return {"state_mb": round(mb, 1), "write_s": round(best, 3),
            "write_mb_per_s": round(mb / best), "raw_write_fsync_s": round(floor, 3),
            "write_vs_raw": round(best / floor, 2), "read_verify_s": round(read_s, 3),
            "read_mb_per_s": round(mb / read_s)}


def ingest(root: Path, cells: int, steps: int, sims: int, interval: float) -> tuple[float, int]:
    """Seconds to ingest the study, and the number of checkpoints written meanwhile."""
    paths = StudyPaths(root)
    paths.make_dirs()
    paths.study_file.write_text(json.dumps({
        "output_dir": str(root),
        "study_options": {"field_names": ["f"], "nb_time_steps": steps,
                          "parameter_sweep_size": sims},
        "parameters": [{"name": "p", "distribution": "uniform", "low": 0, "high": 1}],
        "sa_config": {"mean": True, "variance": True, "checkpoint_interval": interval},
        "client_config": {"executable_command": "unused"},
    }))
    token = secrets.token_bytes(16)
    with open(paths.server_log, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "melissa.server", str(root)],
                                env={**os.environ, "MELISSA_STUDY_TOKEN": token.hex()},
                                stderr=log)
    try:
        while not paths.rendezvous.exists():
            if proc.poll() is not None:
                raise SystemExit(paths.server_log.read_text())
            time.sleep(0.02)
        address = json.loads(paths.rendezvous.read_text())["address"]
        channel = ServerChannel(address, token)
        channel.attach(30)
        x = np.random.default_rng(0).random(cells)
        started = time.perf_counter()
        for sim in range(sims):
            session = Session(ClientEnvironment(address, sim, token, 0, 60.0))
            session.init("f", cells, 0, cells, None)
            for step in range(steps):
                x[0] = step
                session.send("f", x)
            session.finalize()
        elapsed = time.perf_counter() - started
        channel.finish()
        if proc.wait(timeout=120):
            raise SystemExit(paths.server_log.read_text())
        channel.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    checkpoints = len(re.findall(r"checkpoint \S+: [\d.]+ MB", paths.server_log.read_text()))
    return elapsed, checkpoints


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--state-mb", type=int, default=256)
    parser.add_argument("--cells", type=int, default=200_000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sims", type=int, default=64)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        write = bench_write(Path(tmp) / "write", args.state_mb)
        print(f"checkpoint of {write['state_mb']} MB: {write['write_s']} s "
              f"({write['write_mb_per_s']} MB/s; raw write + fsync {write['raw_write_fsync_s']} s,"
              f" ratio {write['write_vs_raw']}); read + verify {write['read_verify_s']} s")
        times: dict[str, list[float]] = {"none": [], "periodic": []}
        written = 0
        for repeat in range(args.repeats):
            for label, interval in (("none", 0.0), ("periodic", args.interval)):
                root = Path(tmp) / f"{label}{repeat}"
                elapsed, count = ingest(root, args.cells, args.steps, args.sims, interval)
                times[label].append(elapsed)
                written += count if label == "periodic" else 0
                print(f"ingest, checkpoints {label:8s}: {elapsed:.2f} s ({count} checkpoints)")
    state_mb = 2 * args.steps * args.cells * 8 / 1e6
    best = {label: min(t) for label, t in times.items()}
    result = {
        **write, "ingest_cells": args.cells, "ingest_steps": args.steps, "ingest_sims": args.sims,
        "ingest_state_mb": round(state_mb, 1), "interval_s": args.interval,
        "ingest_none_s": round(best["none"], 3), "ingest_periodic_s": round(best["periodic"], 3),
        "checkpoints_written": written,
        "periodic_vs_none": round(best["periodic"] / best["none"], 3),
    }
    print(f"ingest with a checkpoint of {state_mb:.0f} MB every {args.interval:g} s / without: "
          f"{result['periodic_vs_none']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
