"""Jobs as `srun` job steps inside the Slurm allocation the launcher runs in (`salloc -N 4
melissa-launcher ...`, or an sbatch script that calls it): a study of any size is one job for
the site's scheduler, however many simulations it runs.

Each job is one `srun --exact` child process (`--ntasks=<ranks>`, the job's name and a serial as
the step name, `launcher_config.scheduler_arg_client` / `_server` and, for several ranks,
`mpi_launcher_args`): Slurm packs the steps onto the allocation's free CPUs, and an srun whose
step does not fit yet waits for one to end. The srun process is what the launcher follows: its
exit status is the step's (a step Slurm killed, e.g. an `scancel` of the step, ends with a
non-zero status: a failure). One `squeue --steps` per poll interval, for all jobs, tells which
sruns hold a running step and which still wait for CPUs (PENDING), and gives the step ids that
`scancel` needs. An srun that fails before its step starts with one of Slurm's transient errors
(a busy controller) is restarted with the back-off of launcher commands (RetryPolicy).

Job ids are "<allocation>/<step name>", so that a launcher resumed in a new allocation can tell
the earlier one's steps and cancel those still running.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from melissa.errors import SchedulerError, SubmissionError
from melissa.launcher.schedulers.base import JobSpec, JobState, JobStatus
from melissa.launcher.schedulers.batch import describe_exit
from melissa.launcher.schedulers.command import DEFAULT_RETRY, RetryPolicy, run_command
from melissa.launcher.schedulers.slurm import TRANSIENT

log = logging.getLogger("melissa.launcher")

# srun's input environment variables that the batch step sets for the whole allocation and that
# would otherwise size every step like it (`sbatch -N 3` sets SLURM_NNODES=3).
_ALLOCATION_SIZE_ENV = ("SLURM_NNODES", "SLURM_NTASKS", "SLURM_NPROCS", "SLURM_NTASKS_PER_NODE",
                        "SLURM_TASKS_PER_NODE", "SLURM_CPUS_PER_TASK", "SLURM_DISTRIBUTION")
_KILL_WAIT_S = 5.0  # close(): after SIGKILL and scancel, how long to wait for sruns to exit


@dataclass
class _Step:
    spec: JobSpec
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_offset: int  # the log's size when this srun started: what follows is its output
    attempt: int = 1  # srun starts, the first included
    step_id: str | None = None  # "<job>.<step>", once squeue lists it
    started: bool = False  # squeue listed it: it ran, so it is never restarted
    cancel_deadline: float | None = None  # time.monotonic() for SIGKILL, once cancelled
    retry_at: float | None = None  # when to restart an srun that failed transiently
    killed: bool = False


@dataclass
class _Queries:
    """When the last squeue answered, and which steps it listed."""

    at: float = -float("inf")
    steps: dict[str, str] = field(default_factory=dict)  # step name -> step id


class SlurmStepsScheduler:
    name = "slurm-steps"

    def __init__(
        self,
        *,
        mpi_launcher_args: Sequence[str] = (),
        allocation: str | None = None,
        grace_period: float = 5.0,
        query_interval_s: float = 1.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """allocation: the Slurm job id whose steps these are (default: $SLURM_JOB_ID)."""
        allocation = allocation or os.environ.get("SLURM_JOB_ID")
        if not allocation:
            raise SubmissionError(
                "launcher_config.scheduler is slurm-steps, which starts every job as a step of "
                "the Slurm allocation the launcher runs in, but SLURM_JOB_ID is not set: start "
                "the launcher inside one (salloc -N 4 melissa-launcher -c config.json, or an "
                "sbatch script), or use scheduler slurm"
            )
        self.allocation = allocation
        self.mpi_launcher_args = list(mpi_launcher_args)
        self.retry = retry
        self._grace = grace_period
        self._interval = query_interval_s
        self._clock = clock
        self._serial = itertools.count(1)
        self._live: dict[str, _Step] = {}
        self._finished: dict[str, JobStatus] = {}
        self._queries = _Queries()

    # -- Scheduler protocol --------------------------------------------------------------------
    def submit(self, spec: JobSpec) -> str:
        if not spec.argv:
            raise SubmissionError(f"cannot start job {spec.name}: its command is empty")
        step_name = f"{spec.name}.{next(self._serial)}"
        argv = ["srun", f"--jobid={self.allocation}", f"--job-name={step_name}", "--exact",
                f"--ntasks={spec.ranks}", f"--nodes=1-{spec.ranks}", "--kill-on-bad-exit=1",
                f"--chdir={spec.cwd}", *spec.scheduler_args,
                *(self.mpi_launcher_args if spec.ranks > 1 else []), *spec.argv]
        env = {k: v for k, v in spec.env.items() if k not in _ALLOCATION_SIZE_ENV}
        job_id = f"{self.allocation}/{step_name}"
        self._live[job_id] = self._start(spec, argv, env)
        log.debug("slurm-steps job %s: %s", job_id, shlex.join(argv))
        return job_id

    def poll(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        self._refresh()
        return {job_id: self._status(job_id) for job_id in job_ids}

    def cancel(self, job_ids: Sequence[str]) -> None:
        deadline = self._clock() + self._grace
        for job_id in job_ids:
            step = self._live.get(job_id)
            if step is None or step.cancel_deadline is not None:
                continue
            step.cancel_deadline = deadline
            if step.retry_at is None:
                # srun passes SIGTERM on to the step's tasks (a server checkpoints on it).
                _signal(step.process, signal.SIGTERM)

    def close(self) -> None:
        self.cancel(list(self._live))
        give_up = self._clock() + self._grace + _KILL_WAIT_S
        self._refresh()
        while self._live and self._clock() < give_up:
            time.sleep(0.05)
            self._refresh()
        for job_id, step in self._live.items():
            log.warning("slurm-steps job %s (srun pid %d) did not end", job_id, step.process.pid)

    def adopt(self, job_ids: Sequence[str], token: str) -> list[str]:
        # An earlier launcher's sruns are not our children: their steps cannot be followed, and
        # those still running (in this allocation or in an earlier one that outlived that
        # launcher) are cancelled so that none runs beside its resubmission.
        by_allocation: dict[str, set[str]] = {}
        for job_id in job_ids:
            allocation, _, name = job_id.partition("/")
            if allocation.isdigit() and name:
                by_allocation.setdefault(allocation, set()).add(name)
        for allocation, names in by_allocation.items():
            try:
                running = self._list_steps(allocation)
            except SchedulerError as exc:  # the allocation has ended: so have its steps
                log.debug("steps of allocation %s: %s", allocation, exc)
                continue
            ids = [step_id for name, step_id in running.items() if name in names]
            if ids:
                self._scancel(ids)
                log.info("cancelled %d steps of an earlier launcher: %s", len(ids),
                         ", ".join(ids))
        return []

    # -- internals -----------------------------------------------------------------------------
    def _start(self, spec: JobSpec, argv: list[str], env: dict[str, str],
               attempt: int = 1) -> _Step:
        try:
            spec.log_path.parent.mkdir(parents=True, exist_ok=True)
            with spec.log_path.open("ab") as log_file:
                offset = log_file.tell()
                process = subprocess.Popen(
                    argv, env=env, cwd=spec.cwd, stdin=subprocess.DEVNULL, stdout=log_file,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )
        except FileNotFoundError:
            raise SubmissionError(
                f"cannot start job {spec.name}: srun not found on PATH (is Slurm's client "
                "installed on this node?)") from None
        except OSError as exc:
            raise SubmissionError(
                f"cannot start job {spec.name}: {shlex.join(argv)} (in {spec.cwd}): {exc}"
            ) from exc
        return _Step(spec, argv, env, process, offset, attempt)

    def _refresh(self) -> None:
        now = self._clock()
        if self._live and now - self._queries.at >= self._interval:
            self._queries.at = now
            try:
                self._queries.steps = self._list_steps(self.allocation)
            except SchedulerError as exc:  # states then come from the sruns alone
                log.warning("squeue --steps failed, keeping the last known steps: %s", exc)
        for job_id, step in list(self._live.items()):
            name = job_id.partition("/")[2]
            if name in self._queries.steps:
                step.step_id = self._queries.steps[name]
                step.started = True
            if step.retry_at is not None:
                if step.cancel_deadline is not None:
                    self._end(job_id, JobStatus(JobState.CANCELLED, None, "cancelled"))
                elif now >= step.retry_at:
                    self._live[job_id] = self._start(step.spec, step.argv, step.env,
                                                     step.attempt + 1)
                continue
            returncode = step.process.poll()
            if returncode is None:
                if step.cancel_deadline is not None and now >= step.cancel_deadline \
                        and not step.killed:
                    self._kill(step)
                continue
            self._finish(job_id, step, returncode, now)

    def _finish(self, job_id: str, step: _Step, returncode: int, now: float) -> None:
        if step.cancel_deadline is not None:
            how = f", killed after {self._grace:g} s" if step.killed else ""
            self._end(job_id, JobStatus(JobState.CANCELLED, returncode, f"cancelled{how}"))
            return
        if returncode == 0:
            self._end(job_id, JobStatus(JobState.COMPLETED, 0))
            return
        said = _srun_lines(step.spec.log_path, step.log_offset)
        if not step.started and TRANSIENT.search(said) and step.attempt < self.retry.attempts:
            delay = self.retry.delay(step.attempt)
            log.warning("srun of job %s failed before its step started (%s); retry %d of %d "
                        "in %g s", job_id, said.replace("\n", " | "), step.attempt,
                        self.retry.attempts - 1, delay)
            step.retry_at = now + delay
            return
        message = describe_exit(returncode)
        if re.search(r"\*\*\* STEP \S+ ON \S+ CANCELLED", said):
            message = "its step was cancelled by Slurm, not by Melissa (an scancel?)"
        elif "DUE TO TIME LIMIT" in said:
            message = "its step was killed at the allocation's time limit (Slurm TIMEOUT)"
        elif said.strip():
            message += f"; srun: {said.strip().splitlines()[-1]}"
        self._end(job_id, JobStatus(JobState.FAILED, returncode, message))

    def _end(self, job_id: str, status: JobStatus) -> None:
        self._finished[job_id] = status
        del self._live[job_id]

    def _kill(self, step: _Step) -> None:
        step.killed = True
        _signal(step.process, signal.SIGKILL)
        if step.step_id is not None:  # a killed srun may leave its step behind
            self._scancel([step.step_id])

    def _status(self, job_id: str) -> JobStatus:
        step = self._live.get(job_id)
        if step is not None:
            return JobStatus(JobState.RUNNING if step.started else JobState.PENDING)
        if job_id in self._finished:
            return self._finished[job_id]
        return JobStatus(JobState.FAILED, None, f"unknown job {job_id} (not started here)")

    def _list_steps(self, allocation: str) -> dict[str, str]:
        """The running steps of `allocation`: step name -> step id."""
        out = run_command(["squeue", "--steps", f"--jobs={allocation}", "--noheader",
                           "--format=%i|%j"], TRANSIENT, policy=self.retry)
        steps = {}
        for line in out.splitlines():
            step_id, _, name = line.strip().partition("|")
            if step_id and name:
                steps[name] = step_id
        return steps

    def _scancel(self, step_ids: Sequence[str]) -> None:
        try:
            run_command(["scancel", *step_ids], TRANSIENT, policy=self.retry)
        except SchedulerError as exc:
            log.warning("could not cancel steps %s: %s", ", ".join(step_ids), exc)


def _signal(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass


def _srun_lines(log_path: Path, offset: int) -> str:
    """What srun and slurmstepd themselves wrote to the log since `offset` (not the tasks)."""
    try:
        with log_path.open("rb") as f:
            f.seek(offset)
            text = f.read(1 << 20).decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(line for line in text.splitlines()
                     if line.startswith(("srun:", "slurmstepd")))
