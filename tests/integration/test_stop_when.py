"""sa_config.stop_when end to end: a model whose mean settles fast stops early, one whose does
not runs every planned simulation; the stop is recorded in study.db, so --resume after a launcher
died submits nothing more."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from tests.integration.conftest import REPO, run_launcher, start_launcher

SIMS, CELLS, STEPS = 16, 20, 3

# easy: a spatial profile the parameter barely moves (mean_stderr ~ 1e-4 from 2 simulations on);
# hard: the parameter alone, uniform in space (mean_stderr = 1/sqrt(n) exactly).
SIMULATION = f"""
import os, sys, time
import numpy as np
import melissa.client as melissa
p = float(sys.argv[1])
melissa.init("f", {CELLS})
for step in range({STEPS}):
    if os.environ["MODEL"] == "easy":
        melissa.send("f", 100.0 * np.arange({CELLS}) + step + p)
    else:
        melissa.send("f", np.full({CELLS}, p))
    time.sleep(0.3)
melissa.finalize()
"""


def config(workdir: Path, model: str) -> dict[str, Any]:
    (workdir / "sim.py").write_text(SIMULATION)
    return {
        "output_dir": "out",
        "study_options": {"field_names": ["f"], "nb_time_steps": STEPS,
                          "parameter_sweep_size": SIMS, "seed": 3},
        "parameters": [{"name": "p", "distribution": "uniform", "low": 0, "high": 1}],
        "sa_config": {"mean": True, "variance": True, "plot_time_steps": [],
                      "stop_when": {"figure": "mean_stderr", "below": 0.2,
                                    "min_simulations": 4}},
        "client_config": {"executable_command": f"{sys.executable} sim.py",
                          "environment": {"MODEL": model}},
        "launcher_config": {"job_limit": 2, "poll_interval": 0.1},
    }


def counted(out: Path) -> np.ndarray:
    with xr.open_dataset(out / "statistics" / "f.nc") as ds:
        assert int(ds.attrs["simulations_seen"]) == int(ds["count"].max())
        return ds["count"].values


def test_an_easy_model_stops_early_and_a_hard_one_does_not(tmp_path: Path) -> None:
    (tmp_path / "easy").mkdir()
    easy = run_launcher(config(tmp_path / "easy", "easy"), tmp_path / "easy")
    assert easy.returncode == 0, easy.output
    statuses = [r["status"] for r in easy.parameters()]
    done = statuses.count("completed")
    assert 4 <= done < SIMS and statuses.count("pending") == SIMS - done, statuses
    assert "The study stopped early: mean_stderr" in easy.output, easy.output
    assert "(sa_config.stop_when)" in easy.output
    assert "stop_when mean_stderr" in easy.output  # the figure reached, in the summary table
    # The simulations running at the stop finished and count: the results hold every one.
    np.testing.assert_array_equal(counted(easy.output_dir), done)

    (tmp_path / "hard").mkdir()
    hard = run_launcher(config(tmp_path / "hard", "hard"), tmp_path / "hard")
    assert hard.returncode == 0, hard.output
    assert [r["status"] for r in hard.parameters()] == ["completed"] * SIMS
    assert "stopped early" not in hard.output
    np.testing.assert_array_equal(counted(hard.output_dir), SIMS)
    rows = (hard.output_dir / "statistics" / "stop_when.csv").read_text().splitlines()
    last = rows[-1].split(",")
    assert last[1] == str(SIMS) and abs(float(last[3]) - 1 / np.sqrt(SIMS)) < 1e-6, rows


def study_status(db: Path) -> str:
    try:
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error:
        return ""
    try:
        return str(conn.execute("SELECT status FROM study").fetchone()[0])
    except (sqlite3.Error, TypeError):
        return ""
    finally:
        conn.close()


def test_resume_after_the_stop_submits_nothing_more(tmp_path: Path) -> None:
    cfg = config(tmp_path, "easy")
    launcher = start_launcher(tmp_path, cfg)
    db = tmp_path / "out" / "study.db"
    deadline = time.monotonic() + 90
    while study_status(db) != "stopped":
        assert launcher.poll() is None and time.monotonic() < deadline, "never stopped"
        time.sleep(0.05)
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.wait()
    conn = sqlite3.connect(db)
    started = {s for (s,) in conn.execute(
        "SELECT simulation_id FROM simulations WHERE submitted_at IS NOT NULL")}
    conn.close()

    run = run_launcher(cfg, tmp_path, "--resume")
    assert run.returncode == 0, run.output
    assert "The study stopped early: mean_stderr" in run.output
    rows = run.parameters()
    assert {int(r["simulation_id"]) for r in rows if r["status"] == "completed"} <= started
    log = (run.output_dir / "logs" / "launcher.log").read_text().split("resumed")[-1]
    assert "submitted as job" not in log


def test_a_sobol_study_stops_on_its_aggregated_interval(tmp_path: Path) -> None:
    """figure sobol_interval: the widest 95% interval of the aggregated indices, the figure of
    statistics/sobol_convergence.csv, stops an Ishigami study once it is below the target."""
    sim = REPO / "examples" / "ishigami" / "ishigami.py"
    cfg = {
        "output_dir": "out",
        "study_options": {"field_names": ["y"], "nb_time_steps": 1,
                          "parameter_sweep_size": 100, "seed": 7},
        "parameters": [{"name": f"x{i}", "distribution": "uniform", "low": -np.pi,
                        "high": np.pi} for i in (1, 2, 3)],
        "sampling": {"method": "sobol"},
        "sa_config": {"sobol_indices": True, "mean": True, "variance": True,
                      "plot_time_steps": [],
                      "stop_when": {"figure": "sobol_interval", "below": 1.4,
                                    "min_simulations": 20}},
        "client_config": {"executable_command": f"python3 {sim}"},
        "launcher_config": {"job_limit": 10, "poll_interval": 0.05},
    }
    run = run_launcher(cfg, tmp_path)
    assert run.returncode == 0, run.output
    assert "The study stopped early: sobol_interval" in run.output, run.output
    statuses = [r["status"] for r in run.parameters()]
    assert statuses.count("pending") > 0 and "failed" not in statuses, statuses
    # The value that stopped it (the groups running then complete after, and the figure may
    # move either way: the summary's row gives the last value, the stop line this one).
    match = re.search(r"stopped early: sobol_interval ([0-9.]+) below 1\.4 ", run.output)
    assert match, run.output
    reached = float(match.group(1))
    assert reached < 1.4
    rows = (run.output_dir / "statistics" / "stop_when.csv").read_text().splitlines()[1:]
    values = [float(r.split(",")[3]) for r in rows]
    assert any(abs(v - reached) <= 1e-3 * reached for v in values), (reached, values)
    widest = [float(r.split(",")[3]) for r in
              (run.output_dir / "statistics" / "sobol_convergence.csv").read_text().splitlines()[1:]
              if r.split(",")[3]]
    assert min(widest) <= reached * (1 + 1e-3)  # the same figure as the convergence log
