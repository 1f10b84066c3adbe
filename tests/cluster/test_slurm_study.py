"""Whole studies through melissa-launcher on the live Slurm cluster: the statistics equal those
of the local scheduler, and failed jobs (a non-zero exit, a time limit) are recorded as the
fault model says."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from tests.integration.conftest import run_launcher, start_launcher
from tests.integration.test_heat_study import heat_config
from tests.integration.test_sobol_study import ISHIGAMI, example_config

pytestmark = pytest.mark.slurm


def test_sa_study_through_slurm_equals_the_local_run(tmp_path: Path) -> None:
    config = heat_config()
    config["study_options"]["parameter_sweep_size"] = 6
    config["sa_config"]["plot_time_steps"] = []
    (tmp_path / "local").mkdir()
    local = run_launcher(config, tmp_path / "local")
    assert local.returncode == 0, local.output

    config["launcher_config"].update(
        scheduler="slurm", scheduler_arg_client=["--time=5", "--comment=melissa client"],
        scheduler_arg_server=["--time=10"])
    config["server_config"] = {"bind_address": "0.0.0.0"}  # clients may run on other nodes
    (tmp_path / "slurm").mkdir()
    slurm = run_launcher(config, tmp_path / "slurm")
    assert slurm.returncode == 0, slurm.output

    assert slurm.parameters() == local.parameters()  # same draws, all completed
    assert {r["status"] for r in slurm.parameters()} == {"completed"}
    with xr.open_dataset(local.output_dir / "statistics" / "temperature.nc") as expected, \
            xr.open_dataset(slurm.output_dir / "statistics" / "temperature.nc") as got:
        assert sorted(got.data_vars) == sorted(expected.data_vars)
        for name in expected.data_vars:  # equal but for the order of the additions
            np.testing.assert_allclose(got[name].values, expected[name].values, rtol=1e-12,
                                       atol=1e-12, err_msg=name)
    jobs = slurm.output_dir / "jobs"
    assert sorted(p.name for p in jobs.iterdir()) == ["server.sh"] + [
        f"simulation_{i:06d}.sh" for i in range(6)]
    assert "#SBATCH --time=10\n" in (jobs / "server.sh").read_text()
    script = (jobs / "simulation_000002.sh").read_text()
    assert '#SBATCH --time=5\n#SBATCH "--comment=melissa client"\n' in script
    assert "MELISSA_STUDY_TOKEN" not in script  # the token travels with sbatch, not in files
    log = (slurm.output_dir / "logs" / "launcher.log").read_text()
    assert re.search(r"simulation 5 \(attempt 0\) submitted as job \d+\n", log), log


def test_sobol_study_through_slurm_equals_the_local_run(tmp_path: Path) -> None:
    """Pick-freeze groups as Slurm jobs: the same indices as with the local scheduler."""
    results = {}
    for scheduler in ("local", "slurm"):
        config = example_config(
            ISHIGAMI / "config.json", output_dir=str(tmp_path / scheduler),
            study_options={"parameter_sweep_size": 8},
            client_config={"executable_command": f"{sys.executable} "
                                                 f"{ISHIGAMI / 'ishigami.py'}"},
            launcher_config={"scheduler": scheduler, "job_limit": 10},
            server_config={"bind_address": "0.0.0.0"})
        (tmp_path / f"{scheduler}_dir").mkdir()
        run = run_launcher(config, tmp_path / f"{scheduler}_dir")
        assert run.returncode == 0, run.output
        with xr.open_dataset(run.output_dir / "statistics" / "y.nc") as ds:
            results[scheduler] = ds.load()
    assert int(results["slurm"]["sobol_groups"].min()) == 8
    for name in ("sobol_first", "sobol_total", "sobol_first_low", "mean"):
        np.testing.assert_allclose(results["slurm"][name].values, results["local"][name].values,
                                   rtol=1e-12, atol=1e-12, err_msg=name)


# The simulation fails by its parameter: exits 3, or runs past its time limit (which it ends
# at once with scontrol: Slurm's limits are whole minutes), or completes.
SIMULATION = """
import os, subprocess, sys, time
import numpy as np
import melissa.client as melissa
p = float(sys.argv[1])
if p < 0.3:
    sys.exit(3)
if p < 0.6:
    # Retried: right after the job starts, slurmctld may still refuse the update.
    for _ in range(20):
        if subprocess.run(["scontrol", "update", "JobId=" + os.environ["SLURM_JOB_ID"],
                           "EndTime=now"]).returncode == 0:
            break
        time.sleep(0.5)
    time.sleep(300)
melissa.init("f", 5)
for step in range(3):
    melissa.send("f", np.full(5, p) + step)
melissa.finalize()
"""


def monitor_once(out_dir: Path) -> str:
    run = subprocess.run([sys.executable, "-m", "melissa.monitor", str(out_dir), "--once"],
                         capture_output=True, text=True, timeout=30, check=False)
    return run.stdout + run.stderr


def test_failed_jobs_are_recorded(tmp_path: Path) -> None:
    (tmp_path / "sim.py").write_text(SIMULATION)
    config: dict[str, Any] = {
        "output_dir": "out",
        "study_options": {"field_names": ["f"], "nb_time_steps": 3, "parameter_sweep_size": 6,
                          "seed": 5},
        "parameters": [{"name": "p", "distribution": "uniform", "low": 0, "high": 1}],
        "sa_config": {"plot_time_steps": []},
        "client_config": {"executable_command": f"{sys.executable} sim.py"},
        "server_config": {"bind_address": "0.0.0.0"},
        # Each failure recorded as it is, not resubmitted (tests/chaos/ covers resubmission).
        "launcher_config": {"scheduler": "slurm", "job_limit": 6, "fault_tolerance": False,
                            "scheduler_arg_client": ["--time=1"]},
    }
    out_dir = tmp_path / "out"
    launcher = start_launcher(tmp_path, config)
    try:
        # While the study runs, the monitor accounts for all six simulations; usually, while
        # the jobs past their time limit wait for Slurm's check (up to 30 s), it shows some
        # running and some failed. Slurm may also check at once and the study end first.
        deadline = time.monotonic() + 60
        snapshots = 0
        while launcher.poll() is None:
            seen = monitor_once(out_dir)
            counts = re.search(r"\(slurm, running, .*\nsimulations 6 total: (\d+) waiting "
                               r"\(\d+ queued\), (\d+) running, (\d+) completed, (\d+) failed",
                               seen)
            if counts:
                snapshots += 1
                assert sum(int(c) for c in counts.groups()) == 6, seen
                if int(counts[2]) > 0 and int(counts[4]) > 0:
                    break
            assert time.monotonic() < deadline, seen
            time.sleep(0.5)
        assert snapshots > 0, "the monitor never saw the study running"
        assert launcher.wait(timeout=120) == 0
    finally:
        launcher.kill()
        output = launcher.communicate()[0]
    with open(out_dir / "parameters.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    p = np.array([float(r["p"]) for r in rows])
    assert (p < 0.3).any() and ((p >= 0.3) & (p < 0.6)).any() and (p >= 0.6).any(), p
    for pi, row in zip(p, rows):
        if pi < 0.3:
            assert (row["status"], row["exit_code"], row["message"]) == (
                "failed", "3", "exited with status 3")
        elif pi < 0.6:
            assert row["status"] == "failed", row
            assert row["message"].startswith("killed at its time limit (Slurm TIMEOUT): ask for "
                                             "more with --time in launcher_config."), row
        else:
            assert (row["status"], row["exit_code"]) == ("completed", "0"), row
    assert "Failed simulations" in output and "Slurm TIMEOUT" in output
