"""LocalScheduler with real processes: states, exit codes, signals, process-group cancel, logs."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from melissa.errors import SubmissionError
from melissa.launcher.schedulers.base import JobSpec, JobState, JobStatus
from melissa.launcher.schedulers.local import LocalScheduler

GRACE_S = 0.5
DEADLINE_S = 20.0  # generous upper bound on a busy machine; tests poll and return early


@pytest.fixture
def scheduler() -> Iterator[LocalScheduler]:
    scheduler = LocalScheduler(grace_period=GRACE_S)
    yield scheduler
    scheduler.close()


def python_job(
    tmp_path: Path, code: str, *, name: str = "job", env: dict[str, str] | None = None,
    cwd: Path | None = None, log_path: Path | None = None,
) -> JobSpec:
    return JobSpec(
        name=name,
        argv=[sys.executable, "-c", textwrap.dedent(code)],
        env=dict(os.environ) if env is None else env,
        cwd=tmp_path if cwd is None else cwd,
        log_path=tmp_path / f"{name}.log" if log_path is None else log_path,
    )


def wait_final(scheduler: LocalScheduler, job_id: str) -> JobStatus:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        status = scheduler.poll([job_id])[job_id]
        if status.state.is_final:
            return status
        time.sleep(0.01)
    pytest.fail(f"job {job_id} still {status.state.value} after {DEADLINE_S} s")


def wait_text(path: Path) -> str:
    """Content of a file the job writes, once it holds a complete line."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if path.exists() and (text := path.read_text()).endswith("\n"):
            return text
        time.sleep(0.01)
    pytest.fail(f"{path} never got a complete line")


def alive(pid: int) -> bool:
    """Whether pid is a running process (a zombie, killed but not yet reaped, counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def wait_dead(pid: int) -> bool:
    deadline = time.monotonic() + DEADLINE_S
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# Writes "<own pid> <grandchild pid>" to ./pids (atomically), then sleeps.
SPAWN_GRANDCHILD = """
    import os, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with open("pids.tmp", "w") as f:
        f.write(f"{os.getpid()} {child.pid}\\n")
    os.rename("pids.tmp", "pids")
"""
SPAWN_GRANDCHILD_AND_SLEEP = SPAWN_GRANDCHILD + "    time.sleep(60)\n"


def test_exit_zero_is_completed_and_output_is_logged(
    scheduler: LocalScheduler, tmp_path: Path
) -> None:
    code = "import sys; print('to stdout', flush=True); print('to stderr', file=sys.stderr)"
    job_id = scheduler.submit(python_job(tmp_path, code))
    assert wait_final(scheduler, job_id) == JobStatus(JobState.COMPLETED, 0, "")
    assert (tmp_path / "job.log").read_text() == "to stdout\nto stderr\n"


def test_non_zero_exit_is_failed_with_its_code(scheduler: LocalScheduler, tmp_path: Path) -> None:
    job_id = scheduler.submit(python_job(tmp_path, "raise SystemExit(3)"))
    assert wait_final(scheduler, job_id) == JobStatus(JobState.FAILED, 3, "exited with status 3")


@pytest.mark.parametrize(("name", "meaning"), [
    ("SIGKILL", ""), ("SIGSEGV", " (segmentation fault: an invalid memory access)")])
def test_killed_by_a_signal_is_failed_with_its_name(
    scheduler: LocalScheduler, tmp_path: Path, name: str, meaning: str
) -> None:
    code = f"import os, signal; os.kill(os.getpid(), signal.{name})"
    job_id = scheduler.submit(python_job(tmp_path, code))
    status = wait_final(scheduler, job_id)
    assert status.state == JobState.FAILED
    assert status.message == f"killed by signal {name}{meaning}"
    assert status.exit_code is not None and status.exit_code < 0


def test_cancel_kills_the_whole_process_group(scheduler: LocalScheduler, tmp_path: Path) -> None:
    job_id = scheduler.submit(python_job(tmp_path, SPAWN_GRANDCHILD_AND_SLEEP))
    leader, grandchild = map(int, wait_text(tmp_path / "pids").split())
    assert alive(leader) and alive(grandchild)
    scheduler.cancel([job_id])
    status = wait_final(scheduler, job_id)
    assert (status.state, status.message) == (JobState.CANCELLED, "cancelled")
    assert wait_dead(leader) and wait_dead(grandchild)


def test_cancel_escalates_to_sigkill_without_blocking(
    scheduler: LocalScheduler, tmp_path: Path
) -> None:
    code = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ignoring SIGTERM", flush=True)
        time.sleep(60)
    """
    job_id = scheduler.submit(python_job(tmp_path, code))
    wait_text(tmp_path / "job.log")
    scheduler.cancel([job_id])
    # cancel returned before the job died: it survives SIGTERM until the grace period ends
    assert scheduler.poll([job_id])[job_id].state == JobState.RUNNING
    status = wait_final(scheduler, job_id)
    assert status.state == JobState.CANCELLED
    assert status.message == f"cancelled, killed with SIGKILL after {GRACE_S:g} s"
    assert status.exit_code == -9


def test_a_finished_job_leaves_nothing_running(scheduler: LocalScheduler, tmp_path: Path) -> None:
    job_id = scheduler.submit(python_job(tmp_path, SPAWN_GRANDCHILD))  # exits, child sleeps on
    leader, grandchild = map(int, wait_text(tmp_path / "pids").split())
    assert wait_final(scheduler, job_id).state == JobState.COMPLETED
    assert wait_dead(grandchild)
    with pytest.raises(ProcessLookupError):  # reaped: not even a zombie is left
        os.kill(leader, 0)


def test_cancel_is_idempotent_and_spares_finished_jobs(
    scheduler: LocalScheduler, tmp_path: Path
) -> None:
    done = scheduler.submit(python_job(tmp_path, "pass", name="done"))
    assert wait_final(scheduler, done).state == JobState.COMPLETED
    sleeping = scheduler.submit(python_job(tmp_path, "import time; time.sleep(60)", name="s"))
    scheduler.cancel([done, sleeping, "no-such-job"])
    scheduler.cancel([done, sleeping, "no-such-job"])
    assert wait_final(scheduler, sleeping).state == JobState.CANCELLED
    scheduler.cancel([sleeping])
    assert scheduler.poll([done])[done] == JobStatus(JobState.COMPLETED, 0, "")
    assert scheduler.poll([sleeping])[sleeping].state == JobState.CANCELLED


def test_poll_answers_for_every_id_at_once(scheduler: LocalScheduler, tmp_path: Path) -> None:
    ids = [scheduler.submit(python_job(tmp_path, f"raise SystemExit({i})", name=f"j{i}"))
           for i in range(3)]
    assert len(set(ids)) == 3
    for job_id in ids:
        wait_final(scheduler, job_id)
    statuses = scheduler.poll([*ids, "no-such-job"])
    assert [statuses[i].exit_code for i in ids] == [0, 1, 2]
    assert statuses["no-such-job"].state == JobState.FAILED
    assert "unknown job no-such-job" in statuses["no-such-job"].message


def test_environment_is_exactly_the_spec(
    scheduler: LocalScheduler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MELISSA_LAUNCHER_ONLY", "1")
    code = "import os; print(os.environ.get('MELISSA_X'), os.environ.get('MELISSA_LAUNCHER_ONLY'))"
    job_id = scheduler.submit(python_job(tmp_path, code, env={"MELISSA_X": "42"}))
    assert wait_final(scheduler, job_id).state == JobState.COMPLETED
    assert (tmp_path / "job.log").read_text() == "42 None\n"


def test_working_directory_is_honoured(scheduler: LocalScheduler, tmp_path: Path) -> None:
    work = tmp_path / "work dir"
    work.mkdir()
    job_id = scheduler.submit(python_job(tmp_path, "import os; print(os.getcwd())", cwd=work))
    assert wait_final(scheduler, job_id).state == JobState.COMPLETED
    assert (tmp_path / "job.log").read_text() == f"{work.resolve()}\n"


def test_log_is_appended_and_its_folder_created(scheduler: LocalScheduler, tmp_path: Path) -> None:
    log_path = tmp_path / "logs" / "shared.log"
    for word in ("one", "two"):
        job_id = scheduler.submit(python_job(tmp_path, f"print({word!r})", log_path=log_path))
        wait_final(scheduler, job_id)
    assert log_path.read_text() == "one\ntwo\n"


def test_missing_executable_is_a_submission_error(
    scheduler: LocalScheduler, tmp_path: Path
) -> None:
    spec = JobSpec("sim", ["/nonexistent/melissa-sim", "0.5"], {}, tmp_path, tmp_path / "s.log")
    with pytest.raises(SubmissionError, match="job sim: /nonexistent/melissa-sim 0.5 .*No such"):
        scheduler.submit(spec)
    path_lookup = JobSpec("sim", ["melissa-no-such-command"], {"PATH": str(tmp_path)}, tmp_path,
                          tmp_path / "s.log")
    with pytest.raises(SubmissionError, match="melissa-no-such-command"):
        scheduler.submit(path_lookup)


def test_unrunnable_jobs_are_submission_errors(scheduler: LocalScheduler, tmp_path: Path) -> None:
    not_executable = tmp_path / "script.sh"
    not_executable.write_text("#!/bin/sh\n")
    with pytest.raises(SubmissionError, match="script.sh.*Permission denied"):
        scheduler.submit(JobSpec("a", [str(not_executable)], {}, tmp_path, tmp_path / "a.log"))
    with pytest.raises(SubmissionError, match="missing-dir"):
        scheduler.submit(python_job(tmp_path, "pass", cwd=tmp_path / "missing-dir"))
    with pytest.raises(SubmissionError, match="job b: its command is empty"):
        scheduler.submit(JobSpec("b", [], {}, tmp_path, tmp_path / "b.log"))


def test_close_kills_everything_still_running(tmp_path: Path) -> None:
    scheduler = LocalScheduler(grace_period=GRACE_S)
    job_id = scheduler.submit(python_job(tmp_path, SPAWN_GRANDCHILD_AND_SLEEP))
    leader, grandchild = map(int, wait_text(tmp_path / "pids").split())
    scheduler.close()
    assert not alive(leader) and wait_dead(grandchild)
    assert scheduler.poll([job_id])[job_id].state == JobState.CANCELLED


def test_negative_grace_period_is_refused() -> None:
    with pytest.raises(ValueError, match="grace_period"):
        LocalScheduler(grace_period=-1)


def test_adopt_stops_the_jobs_of_an_earlier_launcher_of_the_study(tmp_path: Path) -> None:
    """A resumed launcher cannot follow processes it did not start: it stops those of its study
    (their group too), and only those (the token in their environment tells)."""
    earlier = LocalScheduler(grace_period=GRACE_S)
    (tmp_path / "ours").mkdir()
    (tmp_path / "theirs").mkdir()
    ours = earlier.submit(python_job(tmp_path, SPAWN_GRANDCHILD_AND_SLEEP, cwd=tmp_path / "ours",
                                     env={**os.environ, "MELISSA_STUDY_TOKEN": "ab" * 16}))
    theirs = earlier.submit(python_job(tmp_path, SPAWN_GRANDCHILD_AND_SLEEP,
                                       cwd=tmp_path / "theirs",
                                       env={**os.environ, "MELISSA_STUDY_TOKEN": "cd" * 16}))
    leader, grandchild = map(int, wait_text(tmp_path / "ours" / "pids").split())
    other, _ = map(int, wait_text(tmp_path / "theirs" / "pids").split())
    try:
        resumed = LocalScheduler(grace_period=GRACE_S)
        assert resumed.adopt([ours, theirs, "7-999999999", "garbage"], "ab" * 16) == []
        assert wait_dead(leader) and wait_dead(grandchild)
        assert alive(other)
    finally:
        earlier.close()
