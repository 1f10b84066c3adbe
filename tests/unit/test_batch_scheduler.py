"""BatchScheduler's own logic (one cached query per interval, failed queries, cancellation
attribution) through a small backend whose submit and cancel are real commands and whose
status query answers what the test says. Live Slurm: tests/cluster/."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from melissa.errors import SchedulerError, SubmissionError
from melissa.launcher.schedulers.base import JobSpec, JobState, JobStatus
from melissa.launcher.schedulers.batch import BatchScheduler


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Scripted(BatchScheduler):
    """Job ids from `echo`; states from `self.states` (or SchedulerError if `self.down`)."""

    name = "scripted"
    transient = re.compile("busy")

    def __init__(self, jobs_dir: Path, clock: Clock) -> None:
        super().__init__(jobs_dir, query_interval_s=1.0, query_failure_limit_s=60.0,
                         close_wait_s=0.0, clock=clock)
        self.states: dict[str, JobStatus] = {}
        self.queries: list[list[str]] = []
        self.down = False
        self.next_id = 0

    def script(self, spec: JobSpec) -> str:
        return f"#!/bin/sh\nexec {' '.join(spec.argv)}\n"

    def submit_argv(self, spec: JobSpec, script: Path) -> list[str]:
        self.next_id += 1
        return ["sh", "-c", f'test -x "{script}" && echo {self.next_id}']

    def parse_job_id(self, stdout: str) -> str:
        if not stdout.strip().isdigit():
            raise SchedulerError(f"no id in {stdout!r}")
        return stdout.strip()

    def query(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        self.queries.append(list(job_ids))
        if self.down:
            raise SchedulerError("controller down")
        return {j: self.states[j] for j in job_ids if j in self.states}

    def cancel_argv(self, job_ids: Sequence[str]) -> list[str]:
        return ["true", *job_ids]


def spec(tmp_path: Path, name: str) -> JobSpec:
    return JobSpec(name, ["true"], {}, tmp_path, tmp_path / "logs" / f"{name}.log")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sched(tmp_path: Path, clock: Clock) -> Scripted:
    return Scripted(tmp_path / "jobs", clock)


def test_submit_writes_a_private_script(sched: Scripted, tmp_path: Path) -> None:
    assert sched.submit(spec(tmp_path, "a")) == "1"
    script = tmp_path / "jobs" / "a.sh"
    assert script.read_text() == "#!/bin/sh\nexec true\n"
    assert script.stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "logs").is_dir()


def test_submission_errors_name_the_job_and_script(sched: Scripted, tmp_path: Path) -> None:
    sched.parse_job_id = lambda stdout: (_ for _ in ()).throw(  # type: ignore[method-assign]
        SchedulerError("sbatch printed no job id"))
    with pytest.raises(SubmissionError, match=r"cannot submit job a \(.*/jobs/a.sh\): sbatch "
                                              "printed no job id"):
        sched.submit(spec(tmp_path, "a"))


def test_one_query_per_interval_for_every_unfinished_job(
        sched: Scripted, tmp_path: Path, clock: Clock) -> None:
    a, b = sched.submit(spec(tmp_path, "a")), sched.submit(spec(tmp_path, "b"))
    sched.states = {a: JobStatus(JobState.RUNNING), b: JobStatus(JobState.COMPLETED, 0)}
    assert sched.poll([a]) == {a: JobStatus(JobState.RUNNING)}
    assert sched.poll([b]) == {b: JobStatus(JobState.COMPLETED, 0)}  # from the same query
    assert sched.queries == [[a, b]]
    clock.now += 1.0
    sched.poll([a, b])
    assert sched.queries == [[a, b], [a]]  # a finished job is never asked about again


def test_a_failed_query_keeps_the_last_states_until_the_limit(
        sched: Scripted, tmp_path: Path, clock: Clock) -> None:
    a = sched.submit(spec(tmp_path, "a"))
    sched.states = {a: JobStatus(JobState.RUNNING)}
    sched.poll([a])
    sched.down = True
    for _ in range(59):
        clock.now += 1.0
        assert sched.poll([a]) == {a: JobStatus(JobState.RUNNING)}
    clock.now += 2.0
    with pytest.raises(SchedulerError, match="scripted has not answered a status query for 61 s: "
                                             "controller down"):
        sched.poll([a])


def test_unknown_and_forgotten_jobs_fail(sched: Scripted, tmp_path: Path, clock: Clock) -> None:
    a = sched.submit(spec(tmp_path, "a"))
    assert sched.poll(["77"])["77"] == JobStatus(
        JobState.FAILED, None, "unknown job (not submitted by this launcher)")
    clock.now += 1.0
    assert sched.poll([a])[a] == JobStatus(JobState.FAILED, None, "scripted no longer knows job 1")


def test_who_cancelled(sched: Scripted, tmp_path: Path, clock: Clock) -> None:
    ours, theirs, done = (sched.submit(spec(tmp_path, n)) for n in "abc")
    sched.states = {j: JobStatus(JobState.RUNNING) for j in (ours, theirs, done)}
    sched.poll([ours])
    sched.cancel([ours, done, "unknown"])
    sched.states = {ours: JobStatus(JobState.FAILED, -15, "killed by signal SIGTERM"),
                    theirs: JobStatus(JobState.CANCELLED, None, "cancelled (Slurm CANCELLED)"),
                    done: JobStatus(JobState.COMPLETED, 0)}
    clock.now += 1.0
    assert sched.poll([ours, theirs, done]) == {
        ours: JobStatus(JobState.CANCELLED, -15, "cancelled"),
        theirs: JobStatus(JobState.FAILED, None, "cancelled (Slurm CANCELLED), not by Melissa "
                                                 "(a user or an administrator?)"),
        done: JobStatus(JobState.COMPLETED, 0),  # it finished before the cancel took effect
    }


def test_adopted_jobs_are_followed(sched: Scripted, clock: Clock) -> None:
    """A resumed launcher follows the jobs of the one before by their ids."""
    assert sched.adopt(["41", "42"], "token") == ["41", "42"]
    sched.states = {"41": JobStatus(JobState.RUNNING), "42": JobStatus(JobState.COMPLETED, 0)}
    assert sched.poll(["41", "42"]) == {"41": JobStatus(JobState.RUNNING),
                                        "42": JobStatus(JobState.COMPLETED, 0)}
    sched.cancel(["41"])
    sched.states["41"] = JobStatus(JobState.CANCELLED, None, "cancelled")
    clock.now += 2
    assert sched.poll(["41"])["41"].state == JobState.CANCELLED
