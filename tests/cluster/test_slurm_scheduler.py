"""SlurmScheduler against the live cluster: scripts sbatch accepts (odd paths, srun for several
ranks, MPI), refused options, cancellation by Melissa or by someone else, sacct and squeue
agreeing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from melissa.errors import SubmissionError
from melissa.launcher.schedulers.base import JobSpec, JobState, JobStatus
from melissa.launcher.schedulers.slurm import SlurmScheduler
from tests.cluster.conftest import accounting_unavailable, require

pytestmark = pytest.mark.slurm


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "it's a study %j"  # a quote, spaces and a Slurm file-name pattern
    path.mkdir()
    return path


@pytest.fixture
def slurm(workdir: Path) -> Iterator[SlurmScheduler]:
    scheduler = SlurmScheduler(workdir / "jobs", mpi_launcher_args=["--mpi=pmi2"],
                               query_interval_s=0.2)
    yield scheduler
    scheduler.close()


def job(workdir: Path, name: str, argv: Sequence[str], **kw: object) -> JobSpec:
    return JobSpec(name, list(argv), {**os.environ, "GREETING": "hello 'you'"}, workdir,
                   workdir / "logs" / f"{name}.log", **kw)  # type: ignore[arg-type]


def wait_final(scheduler: SlurmScheduler, ids: Sequence[str], timeout: float = 60
               ) -> dict[str, JobStatus]:
    deadline = time.monotonic() + timeout
    while True:
        statuses = scheduler.poll(ids)
        if all(s.state.is_final for s in statuses.values()):
            return statuses
        assert time.monotonic() < deadline, statuses
        time.sleep(0.2)


def test_jobs_run_where_and_as_asked(slurm: SlurmScheduler, workdir: Path) -> None:
    ok = slurm.submit(job(workdir, "ok", ["sh", "-c", 'echo "$GREETING from $(pwd)"'],
                          scheduler_args=("--time=2", "--comment=melissa test")))
    tasks = slurm.submit(job(workdir, "tasks", ["sh", "-c", 'echo "task $SLURM_PROCID"'],
                             ranks=2))
    bad = slurm.submit(job(workdir, "bad", ["sh", "-c", "exit 3"]))
    assert wait_final(slurm, [ok, tasks, bad]) == {
        ok: JobStatus(JobState.COMPLETED, 0), tasks: JobStatus(JobState.COMPLETED, 0),
        bad: JobStatus(JobState.FAILED, 3, "exited with status 3")}
    logs = workdir / "logs"
    assert (logs / "ok.log").read_text() == f"hello 'you' from {workdir}\n"
    assert sorted((logs / "tasks.log").read_text().split("\n")) == ["", "task 0", "task 1"]
    shown = subprocess.run(["scontrol", "show", "job", ok], capture_output=True, text=True,
                           check=True).stdout
    assert "TimeLimit=00:02:00" in shown and "Comment=melissa test" in shown


def test_mpi_job_through_srun(slurm: SlurmScheduler, workdir: Path) -> None:
    pytest.importorskip("mpi4py", reason="the MPI extra is not installed (pip install .[mpi])")
    code = "from mpi4py import MPI; c = MPI.COMM_WORLD; print(c.rank, c.size, c.allreduce(1))"
    mpi = slurm.submit(job(workdir, "mpi", [sys.executable, "-c", code], ranks=3))
    assert wait_final(slurm, [mpi])[mpi] == JobStatus(JobState.COMPLETED, 0)
    assert sorted((workdir / "logs" / "mpi.log").read_text().splitlines()) == [
        "0 3 3", "1 3 3", "2 3 3"]


def test_a_refused_option_fails_the_submission_at_once(
        slurm: SlurmScheduler, workdir: Path) -> None:
    started = time.monotonic()
    with pytest.raises(SubmissionError) as info:
        slurm.submit(job(workdir, "nope", ["true"], scheduler_args=("--partition=nope",)))
    assert time.monotonic() - started < 5  # not retried: it is not transient
    message = str(info.value)
    assert "cannot submit job nope" in message and "`sbatch --parsable" in message
    assert "exited with status 1" in message and "invalid partition specified: nope" in message


def test_who_cancelled(slurm: SlurmScheduler, workdir: Path) -> None:
    ours = slurm.submit(job(workdir, "ours", ["sleep", "300"]))
    theirs = slurm.submit(job(workdir, "theirs", ["sleep", "300"]))
    deadline = time.monotonic() + 30
    while any(s.state != JobState.RUNNING for s in slurm.poll([ours, theirs]).values()):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    slurm.cancel([ours])
    subprocess.run(["scancel", theirs], check=True)
    statuses = wait_final(slurm, [ours, theirs])
    assert (statuses[ours].state, statuses[ours].message) == (JobState.CANCELLED, "cancelled")
    assert statuses[theirs].state == JobState.FAILED
    assert "cancelled (Slurm CANCELLED), not by Melissa" in statuses[theirs].message


def test_sacct_and_squeue_agree(slurm: SlurmScheduler, workdir: Path) -> None:
    require(accounting_unavailable())
    ids = [slurm.submit(job(workdir, f"j{code}", ["sh", "-c", f"exit {code}"]))
           for code in (0, 4)]
    wait_final(slurm, ids)
    expected = {ids[0]: JobStatus(JobState.COMPLETED, 0),
                ids[1]: JobStatus(JobState.FAILED, 4, "exited with status 4")}
    assert slurm.query_squeue(ids) == expected
    deadline = time.monotonic() + 30
    while (by_sacct := slurm.query_sacct(ids)) != expected:  # slurmdbd lags behind slurmctld
        assert time.monotonic() < deadline, by_sacct
        time.sleep(0.5)
