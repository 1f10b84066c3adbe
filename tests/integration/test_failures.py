"""Failing simulations are reported (summary, parameters.csv) and the study still completes;
a failing server or a study where nothing completes makes the launcher exit non-zero, clearly."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

STEPS, CELLS = 4, 6

# Behaviour by parameter value: a crash before init, a crash after two steps, an exit 0
# without finalize, a hang, or a normal run.
SIMULATION = f"""
import os, sys, time
import numpy as np
import melissa.client as melissa
p = float(sys.argv[1])
if p < 0.15:
    sys.exit(3)
melissa.init("f", {CELLS})
for step in range({STEPS}):
    if 0.15 <= p < 0.3 and step == 2:
        time.sleep(0.5)  # let zmq deliver steps 0 and 1: data in flight at a crash is lost
        raise SystemExit(5)
    if 0.3 <= p < 0.4 and step == 2:
        time.sleep(0.5)
        os._exit(0)
    if 0.4 <= p < 0.45:
        time.sleep(3600)
    melissa.send("f", np.full({CELLS}, p) + step)
melissa.finalize()
"""


def config(tmp_path: Path, sims: int = 24, **launcher: Any) -> dict[str, Any]:
    (tmp_path / "sim.py").write_text(SIMULATION)
    return {
        "output_dir": "out",
        "study_options": {"field_names": ["f"], "nb_time_steps": STEPS,
                          "parameter_sweep_size": sims, "seed": 3, "simulation_timeout": 8},
        "parameters": [{"name": "p", "distribution": "uniform", "low": 0, "high": 1}],
        "sa_config": {"mean": True, "variance": True},
        "client_config": {"executable_command": f"{sys.executable} sim.py"},
        "launcher_config": {"job_limit": 4, **launcher},
    }


def test_failures_are_reported_and_the_study_completes(launcher: Any, tmp_path: Path) -> None:
    # A failed simulation stays failed; the failures depend on the parameters: no fail-fast.
    run = launcher(config(tmp_path, fault_tolerance=False, fail_fast=0))
    assert run.returncode == 0, run.output
    rows = run.parameters()
    p = np.array([float(r["p"]) for r in rows])
    status = {r["simulation_id"]: r for r in rows}
    kinds = {"exit 3": p < 0.15, "exit 5": (p >= 0.15) & (p < 0.3),
             "no finalize": (p >= 0.3) & (p < 0.4), "hang": (p >= 0.4) & (p < 0.45)}
    assert all(k.any() for k in kinds.values()), "seed must exercise every failure"
    for row, pi in zip(rows, p):
        r = status[row["simulation_id"]]
        if pi < 0.15:
            assert (r["status"], r["exit_code"]) == ("failed", "3")
        elif pi < 0.3:
            assert (r["status"], r["exit_code"]) == ("failed", "5")
        elif pi < 0.4:
            assert r["status"] == "failed" and "did not receive all its data" in r["message"]
        elif pi < 0.45:
            assert r["status"] == "failed" and "simulation_timeout" in r["message"]
        else:
            assert r["status"] == "completed" and r["exit_code"] in ("0", "")
    assert "Failed simulations" in run.output
    failed = sum(k.sum() for k in kinds.values())
    assert f"failed        │ {failed}" in run.output or f"│ failed        │ {failed}" in run.output

    # What a failed simulation sent before it failed (steps 0 and 1) is left out: every step
    # holds the completed simulations only.
    ds = xr.open_dataset(run.output_dir / "statistics" / "f.nc")
    ok = p >= 0.45
    partial = (p >= 0.15) & (p < 0.4)
    for step in range(STEPS):
        assert (ds["count"].values[step] == ok.sum()).all()
        np.testing.assert_allclose(ds["mean"].values[step], (p[ok] + step).mean(), rtol=1e-12)
    assert ds.attrs["simulations_seen"] == ok.sum()
    assert ds.attrs["simulations_dropped"] >= partial.sum()
    ds.close()


def test_nothing_completed_is_a_failed_study(launcher: Any, tmp_path: Path) -> None:
    cfg = config(tmp_path, sims=3, fail_fast=0)  # retried and redrawn to the end
    cfg["parameters"][0].update(low=0.0, high=0.1)  # every simulation exits 3 before init
    run = launcher(cfg)
    assert run.returncode == 1
    assert "no simulation completed" in run.output
    # Each is tried 3 times (crashes_before_redraw 2), then redrawn, at most once per group of
    # the study (parameter_sweep_size 3): then the study gives up.
    rows = run.parameters()
    assert [r["status"] for r in rows] == ["redrawn"] * 3 + ["failed"] * 3
    assert all(r["attempts"] == "3" and r["exit_code"] == "3" for r in rows), rows
    assert "not redrawn: the study already redrew 3 groups" in rows[-1]["message"]


def test_server_that_cannot_start(launcher: Any, tmp_path: Path) -> None:
    cfg = config(tmp_path, sims=2)
    cfg["server_config"] = {"bind_address": "192.0.2.1"}  # TEST-NET address, not on this host
    run = launcher(cfg, timeout=120)
    assert run.returncode == 1
    assert "the server stopped" in run.output and "server.log" in run.output
    assert "cannot listen on tcp://192.0.2.1" in (run.output_dir / "logs" / "server.log").read_text()


def test_missing_executable_fails_each_simulation(launcher: Any, tmp_path: Path) -> None:
    cfg = config(tmp_path, sims=2)
    cfg["client_config"]["executable_command"] = "./no-such-simulation --flag"
    run = launcher(cfg)
    assert run.returncode == 1
    rows = run.parameters()
    assert all(r["status"] == "failed" and "no-such-simulation" in r["message"] for r in rows)


def test_bad_config_is_one_line(launcher: Any, tmp_path: Path) -> None:
    cfg = config(tmp_path)
    cfg["study_options"]["nb_time_steps"] = 0
    run = launcher(cfg)
    assert run.returncode == 2
    assert run.output.strip().endswith(
        "study_options.nb_time_steps: Input should be greater than 0, got 0")
    assert "Traceback" not in run.output
