"""The slurm-steps scheduler: a whole study inside one `sbatch -N 3` allocation, the server and
every simulation a job step of it; a step that Slurm kills is retried; a launcher killed inside
its allocation is resumed in a new one and completes the study."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from tests.integration.conftest import LauncherRun
from tests.integration.test_parallel import SIZE, STEPS, field

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("multinode")]

SIMS = 6
# As tests/integration/test_parallel.py's simulation, one rank, slow enough to be caught running.
SIMULATION = f"""
import sys, time
import numpy as np
import melissa.client as melissa
a, b = (float(v) for v in sys.argv[1:])
cells = np.arange({SIZE}, dtype=np.float64) + 1
time.sleep(2)
melissa.init("u", {SIZE})
for step in range({STEPS}):
    melissa.send("u", np.sin(a * cells + step) + b * cells ** 2)
melissa.finalize()
"""


def config() -> dict[str, Any]:
    return {
        "output_dir": "out",
        "study_options": {"field_names": ["u"], "nb_time_steps": STEPS,
                          "parameter_sweep_size": SIMS, "seed": 3},
        "parameters": [{"name": "a", "distribution": "uniform", "low": 0, "high": 2},
                       {"name": "b", "distribution": "normal", "mean": 0, "std": 0.1}],
        "sa_config": {"mean": True, "variance": True, "plot_time_steps": []},
        "client_config": {"executable_command": f"{sys.executable} sim.py"},
        "server_config": {"bind_address": "0.0.0.0"},
        "launcher_config": {"scheduler": "slurm-steps", "job_limit": 3},
    }


def sbatch(workdir: Path, *launcher_args: str) -> str:
    """An allocation of 3 nodes whose batch script runs the launcher; its pid goes to
    launcher.pid, its exit status to launcher.rc."""
    script = workdir / "study.sh"
    script.write_text("\n".join([
        "#!/bin/bash",
        "#SBATCH --nodes=3 --ntasks-per-node=4 --time=10",
        f"#SBATCH --output={workdir}/allocation.log --open-mode=append",
        f"{sys.executable} -m melissa.launcher {' '.join(launcher_args)} &",
        f"echo $! > {workdir}/launcher.pid",
        "wait $!",
        f"echo $? > {workdir}/launcher.rc",
        "",
    ]))
    out = subprocess.run(["sbatch", "--parsable", f"--chdir={workdir}", str(script)],
                         capture_output=True, text=True, check=True, timeout=30,
                         env={**os.environ, "COLUMNS": "200"})
    return out.stdout.strip().split(";")[0]


def wait_for(condition: Any, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def job_over(job_id: str) -> bool:
    out = subprocess.run(["squeue", "--noheader", f"--jobs={job_id}"], capture_output=True,
                         text=True, timeout=30, check=False)
    return out.returncode != 0 or not out.stdout.strip()


def steps(job_id: str) -> dict[str, tuple[str, str]]:
    """Step name -> (node list, state) of the job's steps, from sacct."""
    out = subprocess.run(["sacct", "--noheader", "--parsable2", f"--jobs={job_id}",
                          "--format=JobID,JobName,NodeList,State"], capture_output=True,
                         text=True, check=True, timeout=30).stdout
    found = {}
    for line in out.splitlines():
        step_id, name, nodes, state = line.split("|")
        if re.fullmatch(rf"{job_id}\.\d+", step_id):
            found[name] = (nodes, state.split()[0])
    return found


def running_steps(job_id: str) -> dict[str, str]:
    out = subprocess.run(["squeue", "--steps", "--noheader", f"--jobs={job_id}",
                          "--format=%i|%j"], capture_output=True, text=True, timeout=30,
                         check=False).stdout
    return {name: step for step, _, name in (line.partition("|") for line in out.split())}


def assert_equals_numpy(run: LauncherRun) -> None:
    rows = run.parameters()
    assert len(rows) == SIMS and {r["status"] for r in rows} == {"completed"}, rows
    x = np.array([[field(float(r["a"]), float(r["b"]), t) for t in range(STEPS)] for r in rows])
    with xr.open_dataset(run.output_dir / "statistics" / "u.nc") as ds:
        np.testing.assert_allclose(ds["mean"].values, x.mean(axis=0), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ds["variance"].values, x.var(axis=0, ddof=1), rtol=1e-10,
                                   atol=1e-12)


def finished(workdir: Path, job_id: str) -> LauncherRun:
    wait_for(lambda: job_over(job_id), f"allocation {job_id} still running")
    log = (workdir / "allocation.log").read_text()
    rc = (workdir / "launcher.rc").read_text().strip()
    return LauncherRun(int(rc), log, workdir / "out")


def test_study_inside_one_allocation(tmp_path: Path) -> None:
    (tmp_path / "sim.py").write_text(SIMULATION)
    (tmp_path / "config.json").write_text(json.dumps(config()))
    job = sbatch(tmp_path, "-c", "config.json")
    # Slurm kills a running simulation's step: the launcher counts a failure and retries it.
    victim: list[str] = []

    def some_simulation_runs() -> bool:
        victim[:] = [n for n in running_steps(job) if n.startswith("simulation_")][:1]
        return bool(victim) or job_over(job)

    wait_for(some_simulation_runs, "no simulation step ever ran")
    subprocess.run(["scancel", running_steps(job)[victim[0]]], check=True, timeout=30)
    run = finished(tmp_path, job)
    assert run.returncode == 0, run.output
    assert_equals_numpy(run)

    ran = steps(job)
    assert "server.1" in ran
    simulations = {name: v for name, v in ran.items() if name.startswith("simulation_")}
    assert {name.split(".")[0] for name in simulations} == {f"simulation_{i:06d}"
                                                            for i in range(SIMS)}
    assert len(simulations) == SIMS + 1, ran  # the cancelled one ran twice
    assert ran[victim[0]][1] == "CANCELLED"
    assert len({nodes for nodes, _ in simulations.values()}) >= 2, ran  # packed over the nodes
    killed = int(victim[0].split(".")[0].removeprefix("simulation_"))
    row = next(r for r in run.parameters() if int(r["simulation_id"]) == killed)
    assert row["attempts"] == "2", row
    log = (run.output_dir / "logs" / "launcher.log").read_text()
    assert "its step was cancelled by Slurm, not by Melissa" in log
    assert not (run.output_dir / "jobs").exists()  # no batch script: steps only


def test_launcher_killed_then_resumed_in_a_new_allocation(tmp_path: Path) -> None:
    (tmp_path / "sim.py").write_text(SIMULATION)
    (tmp_path / "config.json").write_text(json.dumps(config()))
    first = sbatch(tmp_path, "-c", "config.json")
    done = re.compile(r"simulation \d+ .*completed|completed simulation", re.IGNORECASE)

    def one_completed() -> bool:
        db = tmp_path / "out" / "parameters.csv"
        log = tmp_path / "out" / "logs" / "launcher.log"
        return (db.exists() and "completed" in db.read_text()) or (
            log.exists() and bool(done.search(log.read_text())))

    wait_for(one_completed, "no simulation completed in the first allocation")
    os.kill(int((tmp_path / "launcher.pid").read_text()), signal.SIGKILL)
    wait_for(lambda: job_over(first), "the first allocation outlived its launcher")

    (tmp_path / "launcher.rc").unlink()
    second = sbatch(tmp_path, "-c", "config.json", "--resume")
    run = finished(tmp_path, second)
    assert run.returncode == 0, run.output
    assert_equals_numpy(run)
    again = [n.split(".")[0] for n in steps(second) if n.startswith("simulation_")]
    assert 0 < len(again) < SIMS, steps(second)  # the rest, not the whole study again
