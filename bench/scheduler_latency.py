"""Submission and poll latency per job: Melissa's OAR backend against its Slurm backend, same run.

Both test clusters must be up (scripts/slurm-cluster.sh start --accounting --nodes 3,
scripts/oar-cluster.sh start). For each scheduler, JOBS one-core jobs running `sleep 1` are
submitted through the backend's `submit` (script written, sbatch/oarsub run, id parsed), then
polled with its batched status query until all have ended. Printed per scheduler: median and max
seconds per submission, seconds per status query of all JOBS jobs (and per job in it), and the
median time from a job's submission to its end as the backend first saw it; then OAR / Slurm.

    .venv/bin/python bench/scheduler_latency.py [--jobs 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from melissa.launcher.schedulers.base import JobSpec, JobState
from melissa.launcher.schedulers.batch import BatchScheduler
from melissa.launcher.schedulers.oar import OarScheduler
from melissa.launcher.schedulers.slurm import SlurmScheduler

BACKENDS: dict[str, Callable[[Path], BatchScheduler]] = {
    "slurm": lambda d: SlurmScheduler(d, accounting=True, query_interval_s=0.0),
    "oar": lambda d: OarScheduler(d, query_interval_s=0.0),
}


def measure(name: str, jobs: int, workdir: Path) -> dict[str, float]:
    scheduler = BACKENDS[name](workdir / "jobs")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp"}
    submitted: dict[str, float] = {}
    submit_s = []
    for i in range(jobs):
        spec = JobSpec(f"bench_{i:03d}", ["sleep", "1"], env, workdir,
                       workdir / "logs" / f"{name}_{i:03d}.log")
        start = time.perf_counter()
        job_id = scheduler.submit(spec)
        submit_s.append(time.perf_counter() - start)
        submitted[job_id] = time.monotonic()
    query_s: list[float] = []
    ended: dict[str, float] = {}
    deadline = time.monotonic() + 300
    while len(ended) < jobs:
        if time.monotonic() > deadline:
            raise SystemExit(f"{name}: jobs not ended after 300 s")
        active = [j for j in submitted if j not in ended]
        start = time.perf_counter()
        states = scheduler.query(active)
        query_s.append(time.perf_counter() - start)
        for job_id, status in states.items():
            if status.state.is_final and job_id not in ended:
                if status.state != JobState.COMPLETED:
                    raise SystemExit(f"{name} job {job_id}: {status}")
                ended[job_id] = time.monotonic() - submitted[job_id]
        time.sleep(0.2)
    return {"submit_median": statistics.median(submit_s), "submit_max": max(submit_s),
            "query_median": statistics.median(query_s),
            "query_per_job": statistics.median(query_s) / jobs,
            "turnaround_median": statistics.median(ended.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2, help="each scheduler, interleaved")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"slurm": [], "oar": []}
    with tempfile.TemporaryDirectory(prefix="melissa-bench-") as tmp:
        for round_ in range(args.rounds):
            for name, rows in results.items():
                workdir = Path(tmp) / f"{name}{round_}"
                workdir.mkdir()
                rows.append(measure(name, args.jobs, workdir))
    keys = ["submit_median", "submit_max", "query_median", "query_per_job", "turnaround_median"]
    print(f"{args.jobs} jobs of `sleep 1`, {args.rounds} rounds; seconds, median over rounds")
    print(f"{'':8}" + "".join(f"{k:>19}" for k in keys))
    med = {n: {k: statistics.median(r[k] for r in rs) for k in keys} for n, rs in results.items()}
    for name, row in med.items():
        print(f"{name:8}" + "".join(f"{row[k]:19.4f}" for k in keys))
    print(f"{'oar/slurm':8}" + "".join(f"{med['oar'][k] / med['slurm'][k]:19.2f}" for k in keys))


if __name__ == "__main__":
    main()
