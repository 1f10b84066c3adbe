"""N trivial simulations (one cell, one step) through the slurm-steps scheduler, inside one
`sbatch --nodes=3` allocation of the test cluster, against the bare cost of as many `srun`
steps started in the same kind of allocation in the same run (each the same interpreter with
the same imports, but no server to talk to).

    .venv/bin/python bench/slurm_steps_scale.py [--simulations 2000] [--job-limit 11]

Needs the multi-node test cluster (scripts/slurm-cluster.sh start --accounting --nodes 3; as
root). Reports the launcher's wall time and time per simulation, its peak memory (GNU time's
maximum resident set size), the steps sacct counted in its allocation, and the ratio against
the bare steps (the same number of `srun true` steps, job_limit at once, from a shell loop).
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIMULATION = """
import numpy as np
import melissa.client as melissa
melissa.init("u", 1)
melissa.send("u", np.ones(1))
melissa.finalize()
"""

# What a simulation costs without a server: the same interpreter and imports.
BARE = "import numpy, melissa.client"
ALLOCATION = "#SBATCH --nodes=3 --ntasks-per-node=4 --time=60"


def sbatch(workdir: Path, body: list[str]) -> tuple[str, float]:
    """Run a batch script to its end; (job id, seconds from submission to the end)."""
    script = workdir / "job.sh"
    script.write_text("\n".join(["#!/bin/bash", ALLOCATION,
                                 f"#SBATCH --output={workdir}/allocation.log", *body, ""]))
    started = time.monotonic()
    job = subprocess.run(["sbatch", "--parsable", f"--chdir={workdir}", str(script)],
                         capture_output=True, text=True, check=True).stdout.strip()
    while subprocess.run(["squeue", "--noheader", f"--jobs={job}"], capture_output=True,
                         text=True, check=False).stdout.strip():
        time.sleep(1)
    return job, time.monotonic() - started


def step_count(job: str) -> int:
    out = subprocess.run(["sacct", "--noheader", "--parsable2", f"--jobs={job}",
                          "--format=JobID"], capture_output=True, text=True, check=True).stdout
    return sum(bool(re.fullmatch(rf"{job}\.\d+", line)) for line in out.split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulations", type=int, default=2000)
    parser.add_argument("--job-limit", type=int, default=11)  # 12 CPUs, one for the server
    args = parser.parse_args()
    n = args.simulations
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        work = Path(tmp)
        (work / "sim.py").write_text(SIMULATION)
        (work / "config.json").write_text(json.dumps({
            "output_dir": "out",
            "study_options": {"field_names": ["u"], "nb_time_steps": 1,
                              "parameter_sweep_size": n, "seed": 1},
            "parameters": [{"name": "a", "distribution": "uniform", "low": 0, "high": 1}],
            "sa_config": {"mean": True, "variance": False, "plot_time_steps": []},
            "client_config": {"executable_command": f"{sys.executable} sim.py"},
            "server_config": {"bind_address": "0.0.0.0"},
            "launcher_config": {"scheduler": "slurm-steps", "job_limit": args.job_limit},
        }))
        job, wall = sbatch(work, [
            (f"/usr/bin/time -f 'maxrss_kb=%M wall_s=%e' -o {work}/time.txt "
             f"{sys.executable} -m melissa.launcher -c config.json > launcher.out 2>&1"),
            f"echo $? > {work}/rc"])
        rc = (work / "rc").read_text().strip()
        if rc != "0":
            raise SystemExit(f"the launcher failed ({rc}): {(work / 'launcher.out').read_text()}")
        timing = dict(kv.split("=") for kv in (work / "time.txt").read_text().split()[-2:])
        launcher_s, rss_mb = float(timing["wall_s"]), int(timing["maxrss_kb"]) / 1024
        steps = step_count(job)
        rows = (work / "out" / "parameters.csv").read_text().splitlines()[1:]
        completed = sum(",completed," in row for row in rows)

        # Baseline: the same number of steps of the same kind, job_limit at once, nothing else.
        sbatch(work, [
            f"for i in $(seq {n}); do",
            f"  srun --exact --ntasks=1 --nodes=1 {sys.executable} -c '{BARE}' &",
            f"  (( i % {args.job_limit} == 0 )) && wait",
            "done; wait",
            f"echo $SECONDS > {work}/bare.txt"])
        bare_s = float((work / "bare.txt").read_text())
    print(f"{n} trivial simulations through slurm-steps, job_limit {args.job_limit}, in one "
          f"3-node allocation: {completed} completed, {steps} steps in sacct")
    print(f"  launcher: {launcher_s:.0f} s ({launcher_s / n * 1000:.0f} ms per simulation), "
          f"peak RSS {rss_mb:.0f} MB; allocation end to end {wall:.0f} s")
    print(f"  bare srun steps, same count and concurrency: {bare_s:.0f} s; "
          f"ratio bare / launcher {bare_s / launcher_s:.2f}")
    print(json.dumps({"bench": "slurm_steps_scale", "simulations": n, "completed": completed,
                      "steps": steps, "launcher_s": launcher_s, "ms_per_simulation":
                      round(launcher_s / n * 1000, 1), "launcher_peak_rss_mb": round(rss_mb, 1),
                      "bare_steps_s": bare_s, "ratio": round(bare_s / launcher_s, 3)}))


if __name__ == "__main__":
    main()
