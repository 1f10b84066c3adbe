"""Jobs as processes on this machine.

Each job is the leader of its own session and process group, so cancelling signals the whole
tree it started: SIGTERM, then SIGKILL once the grace period has passed. Like a batch job, a job
ends when its leader exits; anything it left running in its group is killed then.

Job ids are "<serial>-<pid>": the serial keeps ids unique when the OS reuses a pid, the pid
(also the process group id) names the processes for humans and for a launcher that lost them.
"""

from __future__ import annotations

import itertools
import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from melissa.errors import SubmissionError
from melissa.launcher.schedulers.base import JobSpec, JobState, JobStatus

log = logging.getLogger("melissa.launcher")

# How long close() waits, after the grace period and SIGKILL, for processes to disappear
# (one stuck in uninterruptible I/O may never do so; close must still return).
_KILL_WAIT_S = 5.0


# What an exit status or signal usually means, in words (the shell's and the kernel's).
_MEANING = {
    126: " (the command is not executable)",
    127: " (command not found)",
    -signal.SIGSEGV: " (segmentation fault: an invalid memory access)",
    -signal.SIGBUS: " (bus error: an invalid memory access)",
    -signal.SIGFPE: " (arithmetic error, e.g. an integer division by zero)",
    -signal.SIGABRT: " (aborted, e.g. by a failed assertion)",
}


@dataclass
class _Live:
    process: subprocess.Popen[bytes]
    cancel_deadline: float | None = None  # time.monotonic() at which to SIGKILL, once cancelled
    killed: bool = False  # SIGKILL sent after the grace period


class LocalScheduler:
    name = "local"

    def __init__(
        self,
        grace_period: float = 5.0,
        mpi_launcher: Sequence[str] = ("mpiexec", "-n", "{ranks}"),
        mpi_env: Mapping[str, str] | None = None,
    ) -> None:
        """mpi_launcher: the command prefix for jobs of more than one rank ({ranks} replaced);
        its program is looked up in the job's PATH."""
        if grace_period < 0:
            raise ValueError(f"grace_period must be >= 0 seconds, got {grace_period}")
        self._grace = grace_period
        self._mpi_launcher = list(mpi_launcher)
        self._mpi_env = dict(mpi_env or {})
        self._serial = itertools.count(1)
        self._live: dict[str, _Live] = {}
        self._finished: dict[str, JobStatus] = {}

    def submit(self, spec: JobSpec) -> str:
        if not spec.argv:
            raise SubmissionError(f"cannot start job {spec.name}: its command is empty")
        argv, env = list(spec.argv), spec.env
        if spec.ranks > 1:
            argv = [a.format(ranks=spec.ranks) for a in self._mpi_launcher] + argv
            env = {**env, **self._mpi_env}
        try:
            spec.log_path.parent.mkdir(parents=True, exist_ok=True)
            with spec.log_path.open("ab") as log_file:
                process = subprocess.Popen(
                    argv,
                    env=env,
                    cwd=spec.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except (OSError, ValueError) as exc:
            raise SubmissionError(
                f"cannot start job {spec.name}: {shlex.join(argv)} (in {spec.cwd}): {exc}"
            ) from exc
        job_id = f"{next(self._serial)}-{process.pid}"
        self._live[job_id] = _Live(process)
        return job_id

    def poll(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        # Every live job is checked, not only those asked for: that reaps every exited child
        # and sends every due SIGKILL, even for jobs the caller no longer polls.
        self._refresh()
        return {job_id: self._status(job_id) for job_id in job_ids}

    def cancel(self, job_ids: Sequence[str]) -> None:
        deadline = time.monotonic() + self._grace
        for job_id in job_ids:
            job = self._live.get(job_id)
            if job is None or job.cancel_deadline is not None or _has_exited(job.process):
                continue  # finished, unknown or already cancelled: nothing to do
            _signal_group(job.process.pid, signal.SIGTERM)
            job.cancel_deadline = deadline

    def close(self) -> None:
        self.cancel(list(self._live))
        give_up = time.monotonic() + self._grace + _KILL_WAIT_S
        self._refresh()
        while self._live and time.monotonic() < give_up:
            time.sleep(0.01)
            self._refresh()
        for job_id, job in self._live.items():
            log.warning("job %s (pid %d) did not die on SIGKILL", job_id, job.process.pid)

    def adopt(self, job_ids: Sequence[str], token: str) -> list[str]:
        # Another launcher's processes are not our children: their exit status would be lost,
        # so they cannot be followed. Stop them as cancel does: SIGTERM, SIGKILL after the grace.
        groups = [pid for pid in map(_pid_of, job_ids) if pid is not None and _carries(pid, token)]
        for pgid in groups:
            _signal_group(pgid, signal.SIGTERM)
        give_up = time.monotonic() + self._grace
        while any(map(_is_running, groups)) and time.monotonic() < give_up:
            time.sleep(0.05)
        for pgid in groups:  # whatever the leaders left behind in their groups, too
            _signal_group(pgid, signal.SIGKILL)
        if groups:
            log.info("stopped %d jobs of an earlier launcher: %s", len(groups),
                     ", ".join(map(str, groups)))
        return []

    def _refresh(self) -> None:
        now = time.monotonic()
        for job_id, job in list(self._live.items()):
            if _has_exited(job.process):
                # The leader is a zombie until reaped, so its pid cannot be reused yet and
                # signalling its group cannot hit a stranger.
                _signal_group(job.process.pid, signal.SIGKILL)
                returncode = job.process.wait()
                self._finished[job_id] = self._final_status(job, returncode)
                del self._live[job_id]
            elif job.cancel_deadline is not None and now >= job.cancel_deadline and not job.killed:
                _signal_group(job.process.pid, signal.SIGKILL)
                job.killed = True

    def _final_status(self, job: _Live, returncode: int) -> JobStatus:
        if job.cancel_deadline is not None:
            how = f", killed with SIGKILL after {self._grace:g} s" if job.killed else ""
            return JobStatus(JobState.CANCELLED, returncode, f"cancelled{how}")
        if returncode == 0:
            return JobStatus(JobState.COMPLETED, 0)
        if returncode > 0:
            return JobStatus(JobState.FAILED, returncode, f"exited with status {returncode}"
                             f"{_MEANING.get(returncode, '')}")
        signal_name = _signal_name(-returncode)
        return JobStatus(JobState.FAILED, returncode, f"killed by signal {signal_name}"
                         f"{_MEANING.get(returncode, '')}")

    def _status(self, job_id: str) -> JobStatus:
        if job_id in self._live:
            return JobStatus(JobState.RUNNING)
        if job_id in self._finished:
            return self._finished[job_id]
        return JobStatus(JobState.FAILED, None, f"unknown job {job_id} (not started here)")


def _has_exited(process: subprocess.Popen[bytes]) -> bool:
    """Whether the process has exited, without reaping it (WNOWAIT keeps its pid reserved)."""
    if process.returncode is not None:
        return True
    try:
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        return os.waitid(os.P_PID, process.pid, flags) is not None
    except ChildProcessError:  # reaped behind our back: Popen.wait reports it
        return True


def _pid_of(job_id: str) -> int | None:
    """The pid (and process group id) in a job id "<serial>-<pid>"."""
    _, _, pid = job_id.rpartition("-")
    return int(pid) if pid.isdigit() else None


def _carries(pid: int, token: str) -> bool:
    """Whether process `pid` is ours to stop: one of this study's jobs (its token in its
    environment)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, or another user's
        return False
    return f"MELISSA_STUDY_TOKEN={token}".encode() in environ.split(b"\0")


def _is_running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (a non-child's exit is reaped by init)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the whole group is already gone
    except PermissionError as exc:  # e.g. a member changed user (setuid): not ours to kill
        log.warning("cannot send %s to process group %d: %s", sig.name, pgid, exc)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"number {number}"
