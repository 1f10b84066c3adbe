"""job_limit raised and lowered while a study runs, through the status API and through the file
output_dir/job_limit: the running jobs, sampled all along in the status API and in the process
table, never exceed the limit; preempted simulations run again and the results are complete."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from melissa.launcher.state import read_token
from tests.chaos.conftest import assert_statistics_of, chaos_config, start_launcher, statistics
from tests.integration.conftest import LauncherRun

SIMS = 14
SETTLE_S = 3.0  # a preempted job's processes are gone this long after the limit dropped


class Watcher(threading.Thread):
    """Samples the status API (limit and running jobs) and the process table (this study's
    simulation processes) every 50 ms until stopped."""

    def __init__(self, address: str, token: str) -> None:
        super().__init__(daemon=True)
        self.address, self.token = address, token
        self.snapshots: list[tuple[int, int]] = []  # (job_limit, running jobs)
        self.processes: list[tuple[float, int]] = []  # (time, simulation processes)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            self.processes.append((time.monotonic(), simulation_processes(self.token)))
            try:
                snap = self.status()
            except OSError:
                continue  # the launcher is finishing
            if "job_limit" in snap:
                self.snapshots.append((snap["job_limit"], len(snap["running"])))

    def status(self) -> dict[str, Any]:
        request = urllib.request.Request(self.address + "/status",
                                         headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=5) as r:
            return dict(json.loads(r.read()))

    def post_limit(self, limit: int) -> None:
        request = urllib.request.Request(
            self.address + "/job_limit", data=json.dumps({"job_limit": limit}).encode(),
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=5) as r:
            assert json.loads(r.read()) == {"job_limit": limit}

    def wait_for(self, condition: Any, what: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not (self.snapshots and condition(*self.snapshots[-1])):
            assert time.monotonic() < deadline, f"never saw {what}: {self.snapshots[-5:]}"
            time.sleep(0.05)


def allowed(changes: list[tuple[float, int]], when: float) -> int:
    """The limit in force at `when`, or a higher one set less than SETTLE_S before."""
    in_force = [limit for t, limit in changes if t <= when]
    recent = [limit for t, limit in changes if when - SETTLE_S <= t <= when]
    return max([in_force[-1], *recent])


def simulation_processes(token: str) -> int:
    marker = f"MELISSA_STUDY_TOKEN={token}".encode()
    count = 0
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            variables = environ.read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in variables and any(v.startswith(b"MELISSA_SIMULATION_ID=") for v in variables):
            count += 1
    return count


def test_job_limit_follows_the_api_and_the_file(tmp_path: Path) -> None:
    cfg = chaos_config(tmp_path, SIMS, step_s=0.4, job_limit=2)
    launcher = start_launcher(tmp_path, cfg)
    out = tmp_path / "out"
    deadline = time.monotonic() + 30
    while not (out / "launcher.json").exists():
        assert launcher.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    watcher = Watcher(json.loads((out / "launcher.json").read_text())["address"],
                      read_token(out / "study.db"))
    watcher.start()
    changes = [(time.monotonic(), 2)]  # (when, new limit) as the test asked

    watcher.wait_for(lambda limit, running: running == 2, "2 running")
    watcher.post_limit(4)
    changes.append((time.monotonic(), 4))
    watcher.wait_for(lambda limit, running: running == 4, "4 running once raised to 4")
    changes.append((time.monotonic(), 1))
    (out / "job_limit").write_text("1\n")
    watcher.wait_for(lambda limit, running: limit == 1, "the limit read from the file")
    watcher.wait_for(lambda limit, running: running == 1, "1 running once lowered to 1")
    watcher.post_limit(3)
    changes.append((time.monotonic(), 3))
    output, _ = launcher.communicate(timeout=120)
    watcher.stop.set()
    watcher.join()
    assert launcher.returncode == 0, output

    assert all(running <= limit for limit, running in watcher.snapshots), watcher.snapshots
    assert {limit for limit, _ in watcher.snapshots} == {2, 4, 1, 3}
    for when, count in watcher.processes:
        assert count <= allowed(changes, when), (when, count, changes)
    assert (out / "job_limit").read_text() == "3\n"  # the API's value, for a resume

    run = LauncherRun(launcher.returncode, output, out)
    rows = run.parameters()
    assert [r["status"] for r in rows] == ["completed"] * SIMS
    assert any("preempted (job_limit lowered to 1)" in r["message"] for r in rows)
    assert_statistics_of(statistics(run), np.array([float(r["p"]) for r in rows]))
    log = (out / "logs" / "launcher.log").read_text()
    assert "job_limit is now 4 (from the status API)" in log
    assert f"job_limit is now 1 (from {out / 'job_limit'})" in log
