"""The study lock (one live launcher per output_dir), the fail-fast decision and the reading of a
simulation's last output lines: real files, real processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from melissa.errors import StudyError
from melissa.launcher.lock import StudyLock, read_owner
from melissa.launcher.policy import FailFast, Failure
from melissa.launcher.simlog import last_lines, open_attempt

HOLD = """
import sys, time
from pathlib import Path
from melissa.launcher.lock import StudyLock
lock = StudyLock.acquire(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(60)
"""


def test_a_live_launcher_holds_the_lock_until_it_dies(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(StudyError, match=rf"the study in {tmp_path} is in use by the "
                           rf"launcher with pid {holder.pid} on {socket.gethostname()}, running "
                           rf"since .*: wait until it ends or stop it \(Ctrl-C in its terminal, "
                           rf"or kill {holder.pid}\), or choose another output_dir"):
            StudyLock.acquire(tmp_path)
        owner, alive = read_owner(tmp_path)
        assert owner is not None and owner.pid == holder.pid and alive
    finally:
        holder.kill()
        holder.wait()
    owner, alive = read_owner(tmp_path)  # the file stays, its owner is gone
    assert owner is not None and owner.pid == holder.pid and not alive
    lock = StudyLock.acquire(tmp_path)  # a dead launcher's lock is taken over
    assert lock.taken_over is not None and lock.taken_over.pid == holder.pid
    assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    lock.release()
    assert not lock.path.exists() and read_owner(tmp_path) == (None, False)


def test_a_lock_of_another_host_is_named_with_how_to_break_it(tmp_path: Path) -> None:
    (tmp_path / "launcher.lock").write_text(json.dumps(
        {"host": "node-17", "pid": 4242, "started": time.time() - 60}))
    with pytest.raises(StudyError, match=rf"{tmp_path} is locked by the launcher with pid 4242 "
                       rf"on node-17, running since .*; it may still run there. If it is gone "
                       rf"\(check on node-17: ps -p 4242\), remove {tmp_path}/launcher.lock and "
                       "start again"):
        StudyLock.acquire(tmp_path)


def test_only_one_of_many_racing_launchers_gets_the_lock(tmp_path: Path) -> None:
    racers = [subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(4)]
    try:
        time.sleep(0.5)
        deadline = time.monotonic() + 30
        while sum(r.poll() is not None for r in racers) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        winners = [r for r in racers if r.poll() is None]
        assert len(winners) == 1
        assert all(f"the study in {tmp_path} is in use by" in r.communicate()[1]
                   for r in racers if r is not winners[0])
    finally:
        for r in racers:
            r.kill()
            r.wait()


def failure(sim: int, reason: str = "exited with status 2", line: str = "no file",
            sent_data: bool = False) -> Failure:
    return Failure(sim, reason, (line,) if line else (), sent_data)


def test_fail_fast_stops_on_distinct_simulations_failing_alike() -> None:
    policy = FailFast(limit=3)
    assert policy.failed(failure(0)) is None
    assert policy.failed(failure(0)) is None  # the same simulation again counts once
    assert policy.failed(failure(1)) is None
    stop = policy.failed(failure(2))
    assert stop is not None and [f.simulation_id for f in stop] == [0, 1, 2]


def test_fail_fast_goes_on_when_failures_differ_or_data_arrived() -> None:
    policy = FailFast(limit=2)
    assert policy.failed(failure(0, line="x = 1/p: ZeroDivisionError")) is None
    assert policy.failed(failure(1, line="MemoryError")) is None
    assert policy.failed(failure(2, "killed by signal SIGKILL", "", sent_data=True)) is None
    assert policy.failed(failure(3, "killed by signal SIGKILL", "", sent_data=True)) is None
    # Durations differ between hung simulations: still the same way.
    assert policy.failed(failure(4, "sent nothing for 61 s", "")) is None
    assert policy.failed(failure(5, "sent nothing for 65 s", "")) is not None


def test_fail_fast_counts_a_missing_finalize_though_data_arrived() -> None:
    policy = FailFast(limit=2)
    reason = "exited with status 0 but the server did not receive all its data"
    assert policy.failed(failure(0, reason, "", sent_data=True)) is None
    assert policy.failed(failure(1, reason, "", sent_data=True)) is not None


def test_fail_fast_is_off_once_a_simulation_completed_or_at_zero() -> None:
    policy = FailFast(limit=2)
    policy.completed()
    assert all(policy.failed(failure(i)) is None for i in range(5))
    off = FailFast(limit=0)
    assert all(off.failed(failure(i)) is None for i in range(5))


def test_last_lines_are_those_of_the_latest_attempt(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "simulation_000003.log"
    assert last_lines(log) == []
    open_attempt(log, 3, 0, "python3 sim.py 0.5  (in /x)")
    with log.open("a") as f:
        f.write("step 1\nTraceback (most recent call last):\nValueError: first\n\n")
    assert last_lines(log, 2) == ["Traceback (most recent call last):", "ValueError: first"]
    open_attempt(log, 3, 1, "python3 sim.py 0.5  (in /x)")
    assert last_lines(log) == []  # the new attempt wrote nothing yet
    with log.open("a") as f:
        f.write("x" * 40000 + "\nlast\n")  # a long log: only its end is read
    assert last_lines(log, 1) == ["last"]
    assert log.read_text().startswith("# melissa-launcher: simulation 3, attempt 0: python3")
