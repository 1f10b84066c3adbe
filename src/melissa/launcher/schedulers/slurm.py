"""Jobs as Slurm batch jobs: sbatch, squeue or sacct, scancel.

Each job is a batch script (`output_dir/jobs/<name>.sh`) with `#SBATCH` lines for its name, log,
working directory and tasks, then `launcher_config.scheduler_arg_client` / `_server` verbatim.
A job of several ranks starts its command with `srun` (plus
`launcher_config.mpi_launcher_args`, e.g. `--mpi=pmi2` for the pip MPICH wheel). The job's environment (study token included) travels
with sbatch (its default `--export=ALL`), never in the script.

States come from one command per poll for every unfinished job: `sacct` while accounting works
(it remembers jobs forever), else `squeue --states=all`, which sees finished jobs for MinJobAge
seconds (300 by default) and reports each job's wait status (`exit_code`), so no per-job
`scontrol show job` is needed.
"""

from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from melissa.errors import SchedulerError, SubmissionError
from melissa.launcher.schedulers.base import JobSpec, JobState, JobStatus
from melissa.launcher.schedulers.batch import BatchScheduler, describe_exit
from melissa.launcher.schedulers.command import CommandError, RetryPolicy

log = logging.getLogger("melissa.launcher")

# Failures of a busy or restarting controller (or slurmdbd): worth retrying.
TRANSIENT = re.compile(
    r"Socket timed out|Unable to contact slurm controller|Connection refused|"
    r"Resource temporarily unavailable|temporarily unable|Zero Bytes were transmitted|"
    r"Communication connection failure|Transport endpoint|backup controller in standby|"
    r"Problem talking to the database",
    re.IGNORECASE,
)
SQUEUE_FORMAT = "JobID:|,State:|,Reason:|,exit_code:|"
SACCT_FORMAT = "JobID,State,ExitCode,Reason"
_SACCT_RETRY = RetryPolicy(attempts=1, timeout_s=30.0)

_WAITING = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "CONFIGURING"}
_ACTIVE = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING", "SUSPENDED", "STOPPED"}
_FAILURES = {
    "TIMEOUT": "killed at its time limit (Slurm TIMEOUT): ask for more with --time in "
               "launcher_config.scheduler_arg_client (or _server)",
    "NODE_FAIL": "its node failed (Slurm NODE_FAIL)",
    "BOOT_FAIL": "its node failed to boot (Slurm BOOT_FAIL)",
    "OUT_OF_MEMORY": "ran out of memory (Slurm OUT_OF_MEMORY): ask for more with --mem in "
                     "launcher_config.scheduler_arg_client (or _server)",
    "PREEMPTED": "preempted (Slurm PREEMPTED)",
    "DEADLINE": "missed its deadline (Slurm DEADLINE)",
    "REVOKED": "revoked by a federated cluster (Slurm REVOKED)",
    "SPECIAL_EXIT": "requeued in special exit state (Slurm SPECIAL_EXIT)",
}
# Reasons that say nothing more than the state itself.
_PLAIN_REASONS = {"", "None", "NonZeroExitCode", "TimeLimit"}


@dataclass(frozen=True)
class SlurmRecord:
    """One job as squeue or sacct reports it."""

    job_id: str
    state: str  # e.g. "COMPLETED"; sacct's "CANCELLED by 0" becomes "CANCELLED"
    reason: str
    exit_status: int | None  # of the batch script; None while unknown
    signal: int  # that ended the batch script, 0 if none


def parse_sbatch(stdout: str) -> str:
    """The job id printed by `sbatch --parsable`: "12" or "12;cluster"."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    job_id = lines[-1].split(";")[0] if lines else ""
    if not job_id.isdigit():
        raise SchedulerError(f"sbatch --parsable printed no job id: {stdout.strip()!r}")
    return job_id


def parse_squeue(text: str) -> list[SlurmRecord]:
    """Lines of `squeue --noheader --Format=JobID:|,State:|,Reason:|,exit_code:|`, where
    exit_code is the batch script's wait status (exit status * 256 + signal)."""
    records = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) < 4 or not fields[3].strip().isdigit():
            raise SchedulerError(f"cannot read this squeue line: {line!r}")
        wait_status = int(fields[3])
        records.append(SlurmRecord(fields[0].strip(), fields[1].strip(), fields[2].strip(),
                                   wait_status >> 8, wait_status & 0x7F))
    return records


def parse_sacct(text: str) -> list[SlurmRecord]:
    """Lines of `sacct --allocations --noheader --parsable2 --format=JobID,State,ExitCode,Reason`,
    where ExitCode is "status:signal"."""
    records = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        match = re.fullmatch(r"(\d+):(\d+)", fields[2].strip()) if len(fields) >= 4 else None
        if match is None:
            raise SchedulerError(f"cannot read this sacct line: {line!r}")
        records.append(SlurmRecord(fields[0].strip(), fields[1].split()[0] if fields[1] else "",
                                   fields[3].strip(), int(match[1]), int(match[2])))
    return records


def slurm_status(record: SlurmRecord) -> JobStatus:
    """The Scheduler view of a Slurm job state."""
    state = record.state
    if state in _WAITING:
        return JobStatus(JobState.PENDING)
    if state in _ACTIVE:
        return JobStatus(JobState.RUNNING)
    code = -record.signal if record.signal else record.exit_status
    if state == "COMPLETED":
        return JobStatus(JobState.COMPLETED, code)
    if state != "FAILED" and code == 0:
        code = None  # sacct's "0:0" for a job Slurm ended (TIMEOUT, CANCELLED, ...)
    if state == "CANCELLED":
        return JobStatus(JobState.CANCELLED, code, "cancelled (Slurm CANCELLED)")
    if state == "FAILED":
        message = describe_exit(code) if code else "failed"
    else:
        message = _FAILURES.get(state, f"ended in Slurm state {state}")
    if record.reason not in _PLAIN_REASONS:
        message += f" (Slurm reason: {record.reason})"
    return JobStatus(JobState.FAILED, code, message)


def slurm_script(spec: JobSpec, mpi_launcher_args: Sequence[str] = ()) -> str:
    """The batch script of `spec`."""
    directives = [
        f"--job-name={_sbatch_value(spec.name, 'the job name')}",
        # %% is "%" in Slurm's file name patterns (which expand %j and the like).
        f"--output={_sbatch_value(str(spec.log_path), 'the log path').replace('%', '%%')}",
        "--open-mode=append",
        f"--chdir={_sbatch_value(str(spec.cwd), 'the working directory')}",
        f"--ntasks={spec.ranks}",
        *(_sbatch_value(arg, "scheduler argument") for arg in spec.scheduler_args),
    ]
    command = ["srun", *mpi_launcher_args, *spec.argv] if spec.ranks > 1 else list(spec.argv)
    return "\n".join([
        "#!/bin/bash",
        f"# Melissa job {spec.name}: `sbatch --parsable` this file with the job's environment",
        "# (sbatch passes it on); the launcher does it for you.",
        *(f"#SBATCH {d}" for d in directives),
        "exec " + shlex.join(command),
        "",
    ])


class SlurmScheduler(BatchScheduler):
    name = "slurm"
    transient = TRANSIENT

    def __init__(
        self, jobs_dir: Path, *, mpi_launcher_args: Sequence[str] = (),
        accounting: bool | None = None, **kwargs: Any,
    ) -> None:
        """accounting: query sacct (True), squeue (False), or sacct until Slurm says accounting
        is disabled (None). Other keyword arguments: see BatchScheduler."""
        super().__init__(jobs_dir, **kwargs)
        self.mpi_launcher_args = list(mpi_launcher_args)
        self.accounting = accounting
        self._sacct_failing = False

    def script(self, spec: JobSpec) -> str:
        return slurm_script(spec, self.mpi_launcher_args)

    def submit_argv(self, spec: JobSpec, script: Path) -> list[str]:
        return ["sbatch", "--parsable", str(script)]

    def submit_env(self, spec: JobSpec) -> Mapping[str, str]:
        return spec.env

    def parse_job_id(self, stdout: str) -> str:
        return parse_sbatch(stdout)

    def cancel_argv(self, job_ids: Sequence[str]) -> list[str]:
        return ["scancel", *job_ids]

    def query(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        found: dict[str, JobStatus] = {}
        if self.accounting is not False:
            try:
                found = self.query_sacct(job_ids)
                self.accounting = True
                self._sacct_failing = False
            except CommandError as exc:
                if "accounting storage is disabled" in exc.output:
                    log.info("Slurm accounting is disabled: job states come from squeue")
                    self.accounting = False
                elif not self._sacct_failing:  # logged once per outage
                    log.warning("sacct failed, asking squeue until it works again: %s", exc)
                    self._sacct_failing = True
        # Jobs sacct does not know yet (slurmdbd lags behind slurmctld), or all of them.
        missing = [job_id for job_id in job_ids if job_id not in found]
        if missing:
            found.update(self.query_squeue(missing))
        return found

    def query_sacct(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """From the accounting database (for a job id Slurm reused, the last line wins)."""
        # No retries: squeue is the fallback, and a slurmdbd that is down must not slow polls.
        out = self.run(["sacct", "--allocations", "--noheader", "--parsable2",
                        f"--jobs={','.join(job_ids)}", f"--format={SACCT_FORMAT}"],
                       retry=_SACCT_RETRY)
        return {r.job_id: slurm_status(r) for r in parse_sacct(out)}

    def query_squeue(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """From slurmctld, which forgets finished jobs MinJobAge seconds after their end."""
        out = self.run(["squeue", "--noheader", "--states=all", f"--jobs={','.join(job_ids)}",
                        f"--Format={SQUEUE_FORMAT}"])
        return {r.job_id: slurm_status(r) for r in parse_squeue(out)}


def _sbatch_value(value: str, what: str) -> str:
    """`value` as sbatch reads it from an #SBATCH line (double quotes keep spaces together)."""
    bad = sorted({c for c in value if c in '"\\\n\r'})
    if bad:
        raise SubmissionError(
            f"{what} {value!r} holds {' and '.join(map(repr, bad))}, which #SBATCH lines cannot "
            "carry: rename it"
        )
    return f'"{value}"' if any(c.isspace() or c == "#" for c in value) else value
