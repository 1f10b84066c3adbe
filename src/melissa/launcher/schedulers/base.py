"""The Scheduler protocol: what the launcher needs from any backend (local, Slurm, OAR, ...)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class JobState(str, enum.Enum):
    PENDING = "pending"  # accepted, waiting for resources
    RUNNING = "running"
    COMPLETED = "completed"  # exited with status 0
    FAILED = "failed"  # non-zero exit, killed by a signal, lost by the scheduler, ...
    CANCELLED = "cancelled"  # ended because Scheduler.cancel (or close) was called

    @property
    def is_final(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class JobSpec:
    name: str  # e.g. "server" or "simulation_000012"
    argv: list[str]  # the command, no shell; the caller composes any preprocessing into it
    env: dict[str, str]  # the job's full environment (argv[0] is looked up in its PATH)
    cwd: Path
    log_path: Path  # the job's stdout and stderr, appended
    ranks: int = 1  # MPI processes; with ranks > 1 the scheduler starts argv through MPI
    scheduler_args: tuple[str, ...] = ()  # launcher_config.scheduler_arg_client / _server


@dataclass(frozen=True)
class JobStatus:
    state: JobState
    exit_code: int | None = None  # negative -N: killed by signal N (subprocess convention)
    message: str = ""  # why it failed or was cancelled, for humans


class Scheduler(Protocol):
    name: str

    def submit(self, spec: JobSpec) -> str:
        """Start (or queue) a job; return its id. Raises SubmissionError naming the command
        and the reason when the job cannot be submitted."""
        ...

    def poll(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """The status of every id in one batched query. An id this scheduler does not know is
        reported FAILED."""
        ...

    def cancel(self, job_ids: Sequence[str]) -> None:
        """Ask the jobs to stop; returns without waiting. Idempotent, never raises for jobs
        that already finished or ids it does not know."""
        ...

    def close(self) -> None:
        """Cancel every job still running and wait (bounded) until they are gone."""
        ...

    def adopt(self, job_ids: Sequence[str], token: str) -> list[str]:
        """Take over the jobs an earlier launcher of this study submitted (--resume). Returns
        those this scheduler follows from now on (poll and cancel work on them); the others
        it cannot follow, so it stops them: none may run beside its resubmission. `token`,
        the study token of their environment, keeps a reused process id from hitting a
        stranger."""
        ...
