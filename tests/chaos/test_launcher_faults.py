"""The launcher SIGKILLed in the middle of a study, then `melissa-launcher --resume`: the study
ends with the results of a fault-free run and no simulation completed twice."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from tests.chaos.conftest import (
    assert_statistics_of,
    chaos_config,
    run_launcher,
    start_launcher,
    statistics,
)

SIMS = 10


def completed_jobs(db: Path) -> dict[int, str]:
    """simulation id -> job id of the completed simulations, read as melissa-monitor would."""
    try:
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error:
        return {}
    try:
        return dict(conn.execute("SELECT simulation_id, job_id FROM simulations "
                                 "WHERE status = 'completed'").fetchall())
    except sqlite3.Error:  # not created yet
        return {}
    finally:
        conn.close()


def test_a_killed_launcher_resumes(tmp_path: Path) -> None:
    cfg = chaos_config(tmp_path, SIMS, step_s=0.3, job_limit=3)
    launcher = start_launcher(tmp_path, cfg)
    db = tmp_path / "out" / "study.db"
    deadline = time.monotonic() + 60
    while len(completed_jobs(db)) < 3:
        assert launcher.poll() is None and time.monotonic() < deadline, "no progress"
        time.sleep(0.1)
    os.kill(launcher.pid, signal.SIGKILL)  # its jobs, in their own sessions, go on
    launcher.wait()
    before = completed_jobs(db)
    assert len(before) < SIMS

    run = run_launcher(cfg, tmp_path, "--resume")
    assert run.returncode == 0, run.output
    rows = run.parameters()
    assert [r["status"] for r in rows] == ["completed"] * SIMS
    assert_statistics_of(statistics(run), np.array([float(r["p"]) for r in rows]))
    # Completed before the kill: never submitted again.
    after = completed_jobs(db)
    assert {sim: after[sim] for sim in before} == before
    server_log = (run.output_dir / "logs" / "server.log").read_text()
    completions = Counter(re.findall(r"simulation (\d+) complete$", server_log, re.MULTILINE))
    assert completions == Counter({str(i): 1 for i in range(SIMS)}), completions
    log = (run.output_dir / "logs" / "launcher.log").read_text()
    assert "resumed" in log and "the server restored checkpoint" in log

    again = subprocess.run([sys.executable, "-m", "melissa.launcher", "--resume", "out"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 0 and "had already finished" in again.stdout, again.stderr
