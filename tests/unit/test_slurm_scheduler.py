"""Slurm backend without a cluster: batch scripts against golden files, parsers on captured
squeue/sacct/sbatch text, the state mapping. (Live Slurm: tests/cluster/.)"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from melissa.errors import SchedulerError, SubmissionError
from melissa.launcher.schedulers.base import JobSpec, JobState, JobStatus
from melissa.launcher.schedulers.slurm import (
    SlurmRecord,
    parse_sacct,
    parse_sbatch,
    parse_squeue,
    slurm_script,
    slurm_status,
)
from tests.unit.golden import check_golden

CAPTURED = Path(__file__).parent / "captured"
TIMEOUT_MESSAGE = ("killed at its time limit (Slurm TIMEOUT): ask for more with --time in "
                   "launcher_config.scheduler_arg_client (or _server)")


SPEC = JobSpec(
    name="simulation_000003",
    argv=["python3", "sim.py", "0.25", "it's 1%"],
    env={"MELISSA_STUDY_TOKEN": "00" * 16},
    cwd=Path("/home/me/study"),
    log_path=Path("/home/me/study/out/logs/simulation_000003.log"),
)


def spec(**changes: Any) -> JobSpec:
    return replace(SPEC, **changes)


def test_simulation_script_matches_golden() -> None:
    script = slurm_script(spec(scheduler_args=("--time=0:10:00", "--partition=short",
                                               "--comment=a study")))
    check_golden("slurm_simulation.sh", script)
    assert "MELISSA_STUDY_TOKEN" not in script  # the environment travels with sbatch


def test_mpi_server_script_matches_golden() -> None:
    script = slurm_script(
        spec(name="server", argv=["/venv/bin/python", "-m", "melissa.server", "/s/out"],
             log_path=Path("/s/out dir/logs/server%.log"), cwd=Path("/s"), ranks=4,
             scheduler_args=("--nodes=2",)),
        mpi_launcher_args=["--mpi=pmi2"],
    )
    check_golden("slurm_mpi_server.sh", script)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"log_path": Path('/s/"quoted"/x.log')}, "the log path '/s/\"quoted\"/x.log' holds '\"'"),
        ({"cwd": Path("/s/new\nline")}, "the working directory '/s/new\\nline' holds '\\n'"),
        ({"scheduler_args": ("--comment=a\\b",)}, "scheduler argument '--comment=a\\\\b'"),
    ],
)
def test_what_sbatch_lines_cannot_carry_is_refused(changes: dict[str, object],
                                                   message: str) -> None:
    with pytest.raises(SubmissionError, match="cannot carry: rename it") as info:
        slurm_script(spec(**changes))
    assert message in str(info.value)


def test_sbatch_parsable_output() -> None:
    assert parse_sbatch("1234\n") == "1234"
    assert parse_sbatch("1234;cluster\n") == "1234"
    with pytest.raises(SchedulerError, match="printed no job id: 'Submitted batch job 12'"):
        parse_sbatch("Submitted batch job 12\n")
    with pytest.raises(SchedulerError, match="no job id"):
        parse_sbatch("")


def captured(name: str, parse: Callable[[str], list[SlurmRecord]]) -> list[JobStatus]:
    """Statuses of the jobs in captured/<name>.txt, in the order of captured/<name>_ids.txt:
    jobs that completed, exited 3, died of SIGSEGV (in a shell), hit their time limit, were
    cancelled, run, wait on a dependency. Captured from Slurm 22.05 on the test cluster
    (scripts/slurm-cluster.sh start --accounting)."""
    by_id = {r.job_id: slurm_status(r) for r in parse((CAPTURED / f"{name}.txt").read_text())}
    return [by_id[job_id] for job_id in (CAPTURED / f"{name}_ids.txt").read_text().split()]


def test_squeue_captured() -> None:
    ok, bad, segv, timeout, cancelled, running, pending = captured("squeue", parse_squeue)
    assert ok == JobStatus(JobState.COMPLETED, 0)
    assert bad == JobStatus(JobState.FAILED, 3, "exited with status 3")
    assert segv == JobStatus(JobState.FAILED, 139, "exited with status 139")
    assert timeout == JobStatus(JobState.FAILED, -15, TIMEOUT_MESSAGE)
    assert cancelled == JobStatus(JobState.CANCELLED, -15, "cancelled (Slurm CANCELLED)")
    assert running == JobStatus(JobState.RUNNING)
    assert pending == JobStatus(JobState.PENDING)


def test_sacct_captured() -> None:
    ok, bad, segv, timeout, cancelled, running, pending = captured("sacct", parse_sacct)
    assert ok == JobStatus(JobState.COMPLETED, 0)
    assert bad == JobStatus(JobState.FAILED, 3, "exited with status 3")
    # What slurmdbd keeps of a shell's 139 (128 + SIGSEGV) is 11.
    assert segv == JobStatus(JobState.FAILED, 11, "exited with status 11")
    assert timeout == JobStatus(JobState.FAILED, None, TIMEOUT_MESSAGE)
    assert cancelled == JobStatus(JobState.CANCELLED, None, "cancelled (Slurm CANCELLED)")
    assert running == JobStatus(JobState.RUNNING)
    assert pending == JobStatus(JobState.PENDING)
    with pytest.raises(SchedulerError, match="cannot read this sacct line"):
        parse_sacct("27|FAILED|x|None\n")


def test_squeue_wait_status_and_reasons() -> None:
    [launch, killed] = parse_squeue("10|FAILED|JobLaunchFailure|4021|\n4|FAILED|None|9|\n")
    assert launch == SlurmRecord("10", "FAILED", "JobLaunchFailure", 15, 53)
    assert slurm_status(launch).message == (
        "killed by signal number 53 (Slurm reason: JobLaunchFailure)")
    assert slurm_status(killed) == JobStatus(JobState.FAILED, -9, "killed by signal SIGKILL")
    with pytest.raises(SchedulerError, match="cannot read this squeue line: '12|RUNNING'"):
        parse_squeue("12|RUNNING\n")


@pytest.mark.parametrize(
    ("state", "expected", "words"),
    [
        ("NODE_FAIL", JobState.FAILED, "its node failed (Slurm NODE_FAIL)"),
        ("OUT_OF_MEMORY", JobState.FAILED, "--mem"),
        ("PREEMPTED", JobState.FAILED, "preempted"),
        ("BOOT_FAIL", JobState.FAILED, "BOOT_FAIL"),
        ("SOMETHING_NEW", JobState.FAILED, "ended in Slurm state SOMETHING_NEW"),
        ("REQUEUED", JobState.PENDING, ""),
        ("CONFIGURING", JobState.PENDING, ""),
        ("SUSPENDED", JobState.RUNNING, ""),
    ],
)
def test_state_mapping(state: str, expected: JobState, words: str) -> None:
    status = slurm_status(SlurmRecord("1", state, "None", 0, 0))
    assert status.state == expected and words in status.message
