"""Helpers for the chaos tests: the integration helpers (run and start melissa-launcher), and a
small simulation whose faults a test chooses per simulation id and attempt."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from tests.integration.conftest import (  # noqa: F401  (the launcher fixture, re-exported)
    LauncherRun,
    launcher,
    run_launcher,
    start_launcher,
)

FIELD, CELLS, STEPS = "f", 5, 4

# Faults come from CHAOS_PLAN (JSON), by simulation id, on the listed attempts:
#   kill: {id: attempt}  SIGKILL itself after sending 2 steps;
#   hang: {id: attempt}  sleep forever after sending 2 steps;
#   fail: {id: k}        exit 1 after sending 1 step while attempt < k;
#   doomed: [ids]        exit 1 before sending anything, every time;
#   crash: {id: step}    exit 1 after sending the steps before `step`, every time.
# CHAOS_STEP_S slows each step down (tests that act while the study runs).
SIMULATION = f"""
import json, os, signal, sys, time
import numpy as np
import melissa.client as melissa
p = float(sys.argv[1])
sim = os.environ["MELISSA_SIMULATION_ID"]
attempt = int(os.environ["MELISSA_ATTEMPT"])
plan = json.loads(os.environ.get("CHAOS_PLAN", "{{}}"))
pause = float(os.environ.get("CHAOS_STEP_S", "0"))
if sim in plan.get("doomed", []):
    sys.exit(1)
melissa.init("{FIELD}", {CELLS})
for step in range({STEPS}):
    if step == 2 and plan.get("kill", {{}}).get(sim) == attempt:
        time.sleep(0.3)  # let ZeroMQ deliver steps 0 and 1: the server keeps them
        os.kill(os.getpid(), signal.SIGKILL)
    if step == 2 and plan.get("hang", {{}}).get(sim) == attempt:
        time.sleep(3600)
    if step == plan.get("crash", {{}}).get(sim):
        time.sleep(0.3)
        sys.exit(1)
    if step == 1 and attempt < plan.get("fail", {{}}).get(sim, 0):
        time.sleep(0.3)
        sys.exit(1)
    melissa.send("{FIELD}", p * np.arange(1, {CELLS + 1}) + step)
    time.sleep(pause)
melissa.finalize()
"""


def chaos_config(workdir: Path, sims: int, plan: dict[str, Any] | None = None,
                 step_s: float = 0.0, **launcher_config: Any) -> dict[str, Any]:
    (workdir / "sim.py").write_text(SIMULATION)
    env = {"CHAOS_PLAN": json.dumps(plan or {}), "CHAOS_STEP_S": str(step_s)}
    return {
        "output_dir": "out",
        "study_options": {"field_names": [FIELD], "nb_time_steps": STEPS,
                          "parameter_sweep_size": sims, "seed": 7, "simulation_timeout": 3},
        "parameters": [{"name": "p", "distribution": "uniform", "low": 0, "high": 1}],
        "sa_config": {"mean": True, "variance": True, "checkpoint_interval": 1.0,
                      "plot_time_steps": []},
        "client_config": {"executable_command": f"{sys.executable} sim.py",
                          "environment": env},
        "launcher_config": {"job_limit": 4, "poll_interval": 0.1, **launcher_config},
    }


def statistics(run: LauncherRun) -> xr.Dataset:
    return xr.load_dataset(run.output_dir / "statistics" / f"{FIELD}.nc")


def assert_same_statistics(got: xr.Dataset, expected: xr.Dataset) -> None:
    """Counts exactly, values to 1e-12 relative (floating-point reordering)."""
    np.testing.assert_array_equal(got["count"].values, expected["count"].values)
    for name in ("mean", "variance"):
        np.testing.assert_allclose(got[name].values, expected[name].values, rtol=1e-12)


def assert_statistics_of(got: xr.Dataset, p: np.ndarray) -> None:
    """The statistics of the simulations of parameters p, computed offline with NumPy."""
    fields = p[:, None, None] * np.arange(1, CELLS + 1) + np.arange(STEPS)[:, None]
    np.testing.assert_array_equal(got["count"].values, np.full((STEPS, CELLS), len(p)))
    np.testing.assert_allclose(got["mean"].values, fields.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(got["variance"].values, fields.var(axis=0, ddof=1), rtol=1e-12)
    for name, reduce in (("minimum", np.min), ("maximum", np.max)):
        if name in got:
            np.testing.assert_array_equal(got[name].values, reduce(fields, axis=0))
    assert got.attrs["simulations_seen"] == len(p)
