"""The launcher restarts a server that died (SIGKILL) or went silent (SIGSTOP, longer than
server_timeout) from its latest checkpoint: the study ends with the results of a fault-free run.
Past launcher_config.max_restarts the study fails with a clear error."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import numpy as np

from tests.chaos.conftest import (
    assert_statistics_of,
    chaos_config,
    start_launcher,
    statistics,
)
from tests.chaos.test_launcher_faults import completed_jobs
from tests.integration.conftest import LauncherRun

SIMS = 10


def server_pid(out: Path, not_pid: int = 0) -> int:
    """Rank 0's pid from the rendezvous file, once a server other than `not_pid` wrote it."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            pid = int(json.loads((out / "server.json").read_text())["pid"])
        except (OSError, ValueError, KeyError):
            pid = not_pid
        if pid != not_pid:
            return pid
        time.sleep(0.05)
    raise AssertionError("no server started")


def wait_completed(db: Path, count: int) -> None:
    deadline = time.monotonic() + 60
    while len(completed_jobs(db)) < count:
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.05)


def wait_checkpoint(out: Path, after: int = -1) -> int:
    """The sequence number of a checkpoint newer than `after`, once one is written."""
    deadline = time.monotonic() + 60
    while True:
        written = [int(p.stem.rsplit("-", 1)[1])
                   for p in (out / "checkpoints").glob("server-rank0000-*.ckpt")]
        if written and max(written) > after:
            return max(written)
        assert time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.05)


def test_a_dead_and_a_silent_server_are_restarted(tmp_path: Path) -> None:
    cfg = chaos_config(tmp_path, SIMS, step_s=0.2, job_limit=3, server_timeout=4)
    launcher = start_launcher(tmp_path, cfg)
    out = tmp_path / "out"
    first = server_pid(out)
    wait_completed(out / "study.db", 2)
    restored = wait_checkpoint(out)  # so that the restart restores one (else it starts empty)
    os.kill(first, signal.SIGKILL)
    second = server_pid(out, not_pid=first)
    wait_completed(out / "study.db", 5)
    wait_checkpoint(out, after=restored)  # one of the second server's
    os.kill(second, signal.SIGSTOP)  # alive but silent: the launcher kills it after 4 s
    output, _ = launcher.communicate(timeout=120)
    assert launcher.returncode == 0, output

    run = LauncherRun(launcher.returncode, output, out)
    rows = run.parameters()
    assert [r["status"] for r in rows] == ["completed"] * SIMS
    assert_statistics_of(statistics(run), np.array([float(r["p"]) for r in rows]))
    assert re.search(r"server restarts +│ 2 ", output), output
    assert "server restart 1: the server stopped (killed by signal SIGKILL)" in output
    assert "server restart 2: the server sent nothing for" in output
    log = (out / "logs" / "launcher.log").read_text()
    assert log.count("the server restored checkpoint") == 2


def test_past_max_restarts_the_study_fails(tmp_path: Path) -> None:
    cfg = chaos_config(tmp_path, SIMS, step_s=0.2, job_limit=3, max_restarts=0)
    launcher = start_launcher(tmp_path, cfg)
    out = tmp_path / "out"
    pid = server_pid(out)
    wait_completed(out / "study.db", 1)
    os.kill(pid, signal.SIGKILL)
    output, _ = launcher.communicate(timeout=120)
    assert launcher.returncode == 1
    assert output.strip().endswith(
        "the server stopped (killed by signal SIGKILL), and it was restarted 0 times already "
        f"(launcher_config.max_restarts); see {out / 'logs' / 'server.log'}")
    assert "Traceback" not in output


def test_a_restarted_server_keeps_what_it_committed_over_its_hold_budget(tmp_path: Path) -> None:
    """hold_memory_mb below two running simulations' data (each step is 40 bytes here): the
    server commits simulations before they complete. SIGKILLed after a checkpoint, it restores
    the statistics, the held chunks and which simulations it committed early; the simulations
    that run again send steps the statistics already hold, which must not count twice, and the
    results are NumPy's over the completed simulations, none flagged."""
    cfg = chaos_config(tmp_path, SIMS, step_s=0.3, job_limit=4)
    cfg["sa_config"].update({"hold_memory_mb": 100 / 2**20, "min": True, "max": True})
    launcher = start_launcher(tmp_path, cfg)
    out = tmp_path / "out"
    first = server_pid(out)
    wait_completed(out / "study.db", 2)
    wait_checkpoint(out)
    os.kill(first, signal.SIGKILL)
    output, _ = launcher.communicate(timeout=120)
    assert launcher.returncode == 0, output

    run = LauncherRun(launcher.returncode, output, out)
    rows = run.parameters()
    assert [r["status"] for r in rows] == ["completed"] * SIMS
    got = statistics(run)
    assert_statistics_of(got, np.array([float(r["p"]) for r in rows]))
    assert got.attrs["simulations_abandoned_included"] == 0
    log = (out / "logs" / "server.log").read_text()
    assert "reached: committed simulations" in log, log
    assert "the server restored checkpoint" in (out / "logs" / "launcher.log").read_text()
