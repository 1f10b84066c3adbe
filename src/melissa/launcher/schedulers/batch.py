"""What the batch schedulers (Slurm, OAR) share, behind the Scheduler protocol.

A backend fills five hooks: the batch script of a JobSpec, the submit command, the job id in its
output, one batched status query, and the cancel command. This class does the rest:
- each job's script goes to `jobs_dir/<job name>.sh` (readable by the user only: an OAR script
  holds the job's environment, study token included) and the log's directory is created;
- every poll answers from a cache refreshed by one query for all unfinished jobs at most every
  `query_interval_s`, however often and for however few jobs the launcher asks: a cluster's
  controller must not be asked for each job, five times a second;
- a failed status query is logged and the last known states are kept; only when the scheduler
  has not answered for `query_failure_limit_s` does poll raise SchedulerError;
- finished states are final and never queried again;
- a job that ends cancelled without Melissa asking (an administrator's scancel) is FAILED, and a
  job Melissa cancelled that ends in any way but success is CANCELLED.
"""

from __future__ import annotations

import logging
import math
import re
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from melissa.atomic import atomic_write
from melissa.errors import SchedulerError, SubmissionError
from melissa.launcher.schedulers.base import JobSpec, JobState, JobStatus
from melissa.launcher.schedulers.command import DEFAULT_RETRY, RetryPolicy, run_command

log = logging.getLogger("melissa.launcher")


class BatchScheduler(ABC):
    name: str
    transient: re.Pattern[str]  # failures of its commands worth retrying (see run_command)

    def __init__(
        self,
        jobs_dir: Path,
        *,
        query_interval_s: float = 1.0,
        query_failure_limit_s: float = 600.0,
        close_wait_s: float = 15.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.jobs_dir = jobs_dir
        self.retry = retry
        self._interval = query_interval_s
        self._failure_limit = query_failure_limit_s
        self._close_wait = close_wait_s
        self._clock = clock
        self._jobs: dict[str, JobStatus] = {}  # every job submitted here: last known status
        self._cancel_requested: set[str] = set()
        self._last_query = -math.inf
        self._last_answer = clock()

    # -- hooks ---------------------------------------------------------------------------------
    @abstractmethod
    def script(self, spec: JobSpec) -> str:
        """The batch script of `spec` (raises SubmissionError for what the scheduler can't take)."""

    @abstractmethod
    def submit_argv(self, spec: JobSpec, script: Path) -> list[str]:
        """The command that submits `script`, the batch script of `spec`."""

    def submit_env(self, spec: JobSpec) -> Mapping[str, str] | None:
        """The environment of the submit command (None: the launcher's)."""
        return None

    @abstractmethod
    def parse_job_id(self, stdout: str) -> str:
        """The job id in the submit command's output (raises SchedulerError if there is none)."""

    @abstractmethod
    def query(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """The status of the given jobs in as few commands as possible; a job the scheduler does
        not know is left out. CANCELLED means cancelled, by whoever."""

    @abstractmethod
    def cancel_argv(self, job_ids: Sequence[str]) -> list[str]:
        """The command that cancels the given jobs."""

    # -- Scheduler protocol --------------------------------------------------------------------
    def submit(self, spec: JobSpec) -> str:
        path = self.jobs_dir / f"{spec.name}.sh"
        try:
            text = self.script(spec)
            self.jobs_dir.mkdir(parents=True, exist_ok=True)
            spec.log_path.parent.mkdir(parents=True, exist_ok=True)
            _write_private(path, text)
            job_id = self.parse_job_id(self.run(self.submit_argv(spec, path), env=self.submit_env(spec)))
        except (SchedulerError, OSError) as exc:
            raise SubmissionError(f"cannot submit job {spec.name} ({path}): {exc}") from exc
        self._jobs[job_id] = JobStatus(JobState.PENDING)
        log.debug("%s job %s submitted: %s", self.name, job_id, path)
        return job_id

    def poll(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        self._refresh(force=False)
        unknown = JobStatus(JobState.FAILED, None, "unknown job (not submitted by this launcher)")
        return {job_id: self._jobs.get(job_id, unknown) for job_id in job_ids}

    def cancel(self, job_ids: Sequence[str]) -> None:
        ids = [j for j in job_ids if j in self._jobs and not self._jobs[j].state.is_final
               and j not in self._cancel_requested]
        if not ids:
            return
        self._cancel_requested.update(ids)
        try:
            self.run(self.cancel_argv(ids))
        except SchedulerError as exc:
            log.warning("could not cancel %s jobs %s: %s", self.name, ", ".join(ids), exc)

    def close(self) -> None:
        self.cancel(self._active())
        give_up = self._clock() + self._close_wait
        while self._active() and self._clock() < give_up:
            time.sleep(min(self._interval, 0.5))
            try:
                self._refresh(force=True)
            except SchedulerError as exc:
                log.warning("%s", exc)
                break
        if self._active():
            log.warning("%s jobs %s were cancelled but had not ended %g s later",
                        self.name, ", ".join(self._active()), self._close_wait)

    def adopt(self, job_ids: Sequence[str], token: str) -> list[str]:
        # Job ids outlive the launcher: the next query says what became of them.
        for job_id in job_ids:
            self._jobs.setdefault(job_id, JobStatus(JobState.PENDING))
        return list(job_ids)

    # -- internals -----------------------------------------------------------------------------
    def run(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
            retry: RetryPolicy | None = None) -> str:
        return run_command(argv, self.transient, env=env, policy=retry or self.retry)

    def _active(self) -> list[str]:
        return [job_id for job_id, status in self._jobs.items() if not status.state.is_final]

    def _refresh(self, force: bool) -> None:
        active = self._active()
        now = self._clock()
        if not active or (not force and now - self._last_query < self._interval):
            return
        self._last_query = now
        try:
            found = self.query(active)
        except SchedulerError as exc:
            silent = now - self._last_answer
            if silent > self._failure_limit:
                raise SchedulerError(
                    f"{self.name} has not answered a status query for {silent:.0f} s: {exc}"
                ) from exc
            log.warning("%s status query failed, keeping the last known states: %s",
                        self.name, exc)
            return
        self._last_answer = now
        for job_id in active:
            status = found.get(job_id) or JobStatus(
                JobState.FAILED, None, f"{self.name} no longer knows job {job_id}")
            self._jobs[job_id] = self._attribute_cancellation(job_id, status)

    def _attribute_cancellation(self, job_id: str, status: JobStatus) -> JobStatus:
        asked = job_id in self._cancel_requested
        if asked and status.state in (JobState.FAILED, JobState.CANCELLED):
            return JobStatus(JobState.CANCELLED, status.exit_code, "cancelled")
        if not asked and status.state == JobState.CANCELLED:
            return JobStatus(JobState.FAILED, status.exit_code,
                             f"{status.message}, not by Melissa (a user or an administrator?)")
        return status


def _write_private(path: Path, text: str) -> None:
    """Write `path` atomically, readable and executable by its owner only."""
    with atomic_write(path, durable=False, mode=0o700) as tmp:
        tmp.write_text(text, encoding="utf-8")


def describe_exit(code: int | None) -> str:
    """'exited with status N' or 'killed by signal NAME' (code -N), as LocalScheduler says it."""
    if code is None:
        return "ended with an unknown status"
    if code >= 0:
        return f"exited with status {code}"
    try:
        return f"killed by signal {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal number {-code}"
