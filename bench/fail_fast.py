"""A study whose command is misspelt, with fail-fast (launcher_config.fail_fast, default 3) and
without it (0: the ensemble is retried and redrawn to the end), side by side in one run: failed
runs, wall time, lines on the terminal.

    .venv/bin/python bench/fail_fast.py [--sims 6] [--job-limit 4]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(workdir: Path, sims: int, job_limit: int, fail_fast: int) -> tuple[int, float, int, int]:
    """(failed runs, seconds, output lines, exit status) of one study."""
    workdir.mkdir()
    config = {
        "output_dir": "out",
        "study_options": {"field_names": ["f"], "nb_time_steps": 4, "parameter_sweep_size": sims},
        "parameters": [{"name": "p", "distribution": "uniform", "low": 0, "high": 1}],
        "client_config": {"executable_command": "python3 advdif.py"},  # there is no advdif.py
        "launcher_config": {"job_limit": job_limit, "fail_fast": fail_fast},
    }
    (workdir / "config.json").write_text(json.dumps(config))
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "melissa.launcher", "-c", "config.json"],
                          cwd=workdir, capture_output=True, text=True, check=False,
                          env={**os.environ, "COLUMNS": "80"})
    seconds = time.monotonic() - started
    with open(workdir / "out" / "parameters.csv", newline="") as f:
        runs = sum(int(r["attempts"]) for r in csv.DictReader(f))
    lines = len((proc.stdout + proc.stderr).splitlines())
    return runs, seconds, lines, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=6)
    parser.add_argument("--job-limit", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        off = run(Path(tmp) / "off", args.sims, args.job_limit, fail_fast=0)
        on = run(Path(tmp) / "on", args.sims, args.job_limit, fail_fast=3)
    print(f"{args.sims} simulations, job_limit {args.job_limit}, command misspelt")
    print(f"{'':>16} {'failed runs':>12} {'seconds':>8} {'lines':>6} {'exit':>5}")
    for name, (runs, seconds, lines, code) in (("fail_fast 0", off), ("fail_fast 3", on)):
        print(f"{name:>16} {runs:>12} {seconds:>8.1f} {lines:>6} {code:>5}")
    print(f"ratio (0 / 3)    {off[0] / on[0]:>12.1f} {off[1] / on[1]:>8.1f} "
          f"{off[2] / max(on[2], 1):>6.1f}")


if __name__ == "__main__":
    main()
