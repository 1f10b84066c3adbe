"""A Sobol' study survives its server being SIGKILLed twice, the second time in the middle of a
checkpoint write: the half-joined groups come back from the checkpoint, every simulation the
checkpoint does not hold as complete runs again, and the indices equal a fault-free run's."""

from __future__ import annotations

import csv
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from tests.chaos.test_launcher_faults import completed_jobs
from tests.chaos.test_server_restarts import server_pid, wait_checkpoint
from tests.integration.conftest import run_launcher, start_launcher

CELLS, STEPS, GROUPS = 150_000, 3, 6  # a few tens of MB of state: a checkpoint write is seen

MODEL = f"""
import sys, time
import numpy as np
import melissa.client as melissa
x = np.array([float(a) for a in sys.argv[1:]])
i = np.linspace(0.0, 1.0, {CELLS})
melissa.init("u", {CELLS})
for step in range({STEPS}):
    melissa.send("u", (1 + i) * x[0] + (2 - i) * x[1] + step * x[0] * x[1])
    time.sleep(0.15)
melissa.finalize()
"""


def sobol_config(workdir: Path) -> dict[str, Any]:
    workdir.mkdir()
    (workdir / "model.py").write_text(MODEL)
    return {
        "output_dir": "out",
        "study_options": {"field_names": ["u"], "nb_time_steps": STEPS,
                          "parameter_sweep_size": GROUPS, "seed": 5},
        "parameters": [{"name": n, "distribution": "uniform", "low": 0, "high": 1}
                       for n in ("a", "b")],
        "sa_config": {"sobol_indices": True, "mean": True, "variance": True,
                      "checkpoint_interval": 0.5, "plot_time_steps": []},
        "client_config": {"executable_command": f"{sys.executable} model.py"},
        "launcher_config": {"job_limit": 8, "poll_interval": 0.05, "server_timeout": 30},
    }


def results(out: Path) -> dict[str, np.ndarray]:
    with xr.open_dataset(out / "statistics" / "u.nc") as ds:
        return {str(name): ds[name].values for name in ds.data_vars}


def wait_for(condition: Any, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def partly_written_checkpoint(out: Path) -> bool:
    for tmp in (out / "checkpoints").glob("*.tmp"):
        try:
            return tmp.stat().st_size > 0
        except FileNotFoundError:  # renamed meanwhile: that write is over
            pass
    return False


def test_server_killed_twice_once_mid_checkpoint(tmp_path: Path) -> None:
    reference = run_launcher(sobol_config(tmp_path / "reference"), tmp_path / "reference")
    assert reference.returncode == 0, reference.output

    workdir = tmp_path / "chaos"
    launcher = start_launcher(workdir, sobol_config(workdir))
    out = workdir / "out"
    first = server_pid(out)
    wait_for(lambda: len(completed_jobs(out / "study.db")) >= 5, "a first group")
    wait_checkpoint(out)
    os.kill(first, signal.SIGKILL)  # a group is half joined
    second = server_pid(out, not_pid=first)
    wait_for(lambda: partly_written_checkpoint(out), "a checkpoint being written")
    os.kill(second, signal.SIGKILL)
    output, _ = launcher.communicate(timeout=240)
    assert launcher.returncode == 0, output

    assert re.search(r"server restarts +│ 2 ", output), output
    log = (out / "logs" / "launcher.log").read_text()
    assert log.count("the server restored checkpoint") == 2
    got, expected = results(out), results(reference.output_dir)
    assert set(got) == set(expected)
    np.testing.assert_array_equal(got["sobol_groups"], GROUPS)
    np.testing.assert_array_equal(got["count"], expected["count"])
    for name, array in expected.items():
        if name.startswith("sobol_") and name.endswith(("aggregated_low", "aggregated_high")):
            continue  # their delta-method variance depends on the groups' completion order
        # atol: indices near 0 are sums of rounding-level terms in any order
        np.testing.assert_allclose(got[name], array, rtol=1e-12, atol=1e-12, err_msg=name)
    for kind in ("first", "total"):
        name = f"sobol_{kind}_aggregated"
        assert (got[f"{name}_low"] <= got[name]).all() and (got[name] <= got[f"{name}_high"]).all()
    with open(out / "parameters.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == GROUPS * 4 and {r["status"] for r in rows} == {"completed"}
