"""Jobs as OAR batch jobs: oarsub -S, oarstat -f -J, oardel.

Each job is a script (`output_dir/jobs/<name>.sh`, mode 0700) with `#OAR` lines for its name, log
and, unless `launcher_config.scheduler_arg_client` / `_server` ask for resources themselves,
`-l /core=<ranks>`; then the job's environment as `export` lines (OAR does not pass the
submitter's environment on, hence the private script: it holds the study token); then the
command. A job of several ranks starts it with `mpirun -np <ranks> -machinefile "$OAR_NODE_FILE"`
(plus `launcher_config.mpi_launcher_args`). The scheduler arguments go on oarsub's command line,
not in the script: oarsub reads only its own few options from `#OAR` lines, and takes their
values verbatim (no quoting), so paths there must be plain (letters, digits, `_./%+,:=@-`).

States come from one `oarstat -f -J -j ID -j ID ...` per poll: OAR keeps finished jobs in its
database, with `exit_code` (the script's wait status) and the job's events (WALLTIME, ...).
Tested on a live OAR 2.5.9 cluster (scripts/oar-cluster.sh, tests/cluster/test_oar.py) and on
outputs captured from it: an oardel-ed job ends in state Error with exit_code null and event
FRAG_JOB_REQUEST, one killed at its walltime carries FRAG_JOB_REQUEST too, hence WALLTIME first.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from melissa.errors import SchedulerError, SubmissionError
from melissa.launcher.schedulers.base import JobSpec, JobState, JobStatus
from melissa.launcher.schedulers.batch import BatchScheduler, describe_exit

TRANSIENT = re.compile(
    r"DB connection error|Connection refused|timed out|Temporary failure|"
    r"Resource temporarily unavailable|cannot connect",
    re.IGNORECASE,
)
_WAITING = {"Waiting", "Hold", "toLaunch", "toAckReservation", "Launching"}
_ACTIVE = {"Running", "Finishing", "Suspended", "Resuming"}
_CANCEL_EVENTS = {"FRAG_JOB_REQUEST", "EXTERMINATE_JOB"}  # oardel
# Variables a job must get from OAR or from its own shell, never from the launcher.
_NOT_EXPORTED = {"PWD", "OLDPWD", "SHLVL", "_", "HOSTNAME"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLAIN = re.compile(r"[\w./%+,:=@-]+", re.ASCII)


@dataclass(frozen=True)
class OarRecord:
    """One job as `oarstat -f -J` reports it."""

    job_id: str
    state: str
    exit_code: int | None  # the wait status of the job's script (status * 256 + signal)
    message: str
    events: tuple[str, ...] = field(default=())  # event types, oldest first


def parse_oarsub(stdout: str) -> str:
    """The job id in oarsub's output ("OAR_JOB_ID=1234", after any admission rule messages)."""
    match = re.search(r"^OAR_JOB_ID=(\d+)\s*$", stdout, re.MULTILINE)
    if match is None:
        raise SchedulerError(f"oarsub printed no OAR_JOB_ID: {stdout.strip()!r}")
    return match[1]


def parse_oarstat(text: str) -> list[OarRecord]:
    """The JSON of `oarstat -f -J -j ID ...`: {"ID": {"state": ..., "exit_code": ..., ...}}."""
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise SchedulerError(f"oarstat printed no JSON ({exc}): {text[:200]!r}") from None
    if data is None:  # no job found
        return []
    if not isinstance(data, dict):
        raise SchedulerError(f"oarstat printed {type(data).__name__}, expected an object")
    records = []
    for job_id, job in data.items():
        if not isinstance(job, dict) or not isinstance(job.get("state"), str):
            raise SchedulerError(f"oarstat: job {job_id} has no state: {job!r}")
        exit_code = job.get("exit_code")
        events = tuple(str(e.get("type", "")) for e in job.get("events") or []
                       if isinstance(e, dict))
        records.append(OarRecord(str(job_id), job["state"],
                                 int(exit_code) if exit_code is not None else None,
                                 str(job.get("message") or ""), events))
    return records


def oar_status(record: OarRecord) -> JobStatus:
    """The Scheduler view of an OAR job state."""
    if record.state in _WAITING:
        return JobStatus(JobState.PENDING)
    if record.state in _ACTIVE:
        return JobStatus(JobState.RUNNING)
    wait = record.exit_code
    code = None if wait is None else (-(wait & 0x7F) if wait & 0x7F else wait >> 8)
    if "WALLTIME" in record.events:
        return JobStatus(JobState.FAILED, code, "killed at its walltime (OAR WALLTIME event): "
                         "ask for more with -l ...,walltime=H:MM:SS in "
                         "launcher_config.scheduler_arg_client (or _server)")
    if _CANCEL_EVENTS & set(record.events):
        return JobStatus(JobState.CANCELLED, code, "deleted (oardel)")
    if record.state == "Terminated" and code in (0, None):
        return JobStatus(JobState.COMPLETED, code)
    if record.state == "Terminated":
        return JobStatus(JobState.FAILED, code, describe_exit(code))
    events = f"; events: {', '.join(record.events)}" if record.events else ""
    why = f": {record.message}" if record.message else ""
    return JobStatus(JobState.FAILED, code, f"ended in OAR state {record.state}{why}{events}")


def oar_script(spec: JobSpec, mpi_launcher_args: Sequence[str] = ()) -> str:
    """The batch script of `spec` (with its environment: keep it private)."""
    log = _plain(str(spec.log_path), "the log path")
    directives = [f"-n {_plain(spec.name, 'the job name')}", f"-O {log}", f"-E {log}"]
    if not any(arg.startswith(("-l", "--resource")) for arg in spec.scheduler_args):
        directives.append(f"-l /core={spec.ranks}")
    exports = [f"export {name}={shlex.quote(value)}" for name, value in sorted(spec.env.items())
               if _NAME.fullmatch(name) and name not in _NOT_EXPORTED
               and not name.startswith("OAR_")]
    command = shlex.join(spec.argv)
    if spec.ranks > 1:
        mpirun = shlex.join(["mpirun", "-np", str(spec.ranks), *mpi_launcher_args])
        command = f'{mpirun} -machinefile "$OAR_NODE_FILE" {command}'
    return "\n".join([
        "#!/bin/bash",
        f"# Melissa job {spec.name}, submitted by the launcher with",
        f"# {shlex.join(['oarsub', *spec.scheduler_args, '-S'])} <this file>",
        *(f"#OAR {d}" for d in directives),
        *exports,
        f"cd {shlex.quote(str(spec.cwd))} || exit 1",
        f"exec {command}",
        "",
    ])


def oarsub_argv(spec: JobSpec, script: Path) -> list[str]:
    """oarsub with the scheduler arguments, then the script (whose path oarsub splits at spaces
    and passes through a shell)."""
    return ["oarsub", *spec.scheduler_args, "-S", _plain(str(script), "the job script path")]


def _plain(value: str, what: str) -> str:
    if not _PLAIN.fullmatch(value):
        raise SubmissionError(
            f"{what} {value!r} holds characters OAR takes literally or splits at (only letters, "
            "digits and _./%+,:=@- pass): choose a plainer output_dir or name"
        )
    return value


class OarScheduler(BatchScheduler):
    name = "oar"
    transient = TRANSIENT

    def __init__(self, jobs_dir: Path, *, mpi_launcher_args: Sequence[str] = (),
                 **kwargs: Any) -> None:
        super().__init__(jobs_dir, **kwargs)
        self.mpi_launcher_args = list(mpi_launcher_args)

    def script(self, spec: JobSpec) -> str:
        return oar_script(spec, self.mpi_launcher_args)

    def submit_argv(self, spec: JobSpec, script: Path) -> list[str]:
        return oarsub_argv(spec, script)

    def parse_job_id(self, stdout: str) -> str:
        return parse_oarsub(stdout)

    def cancel_argv(self, job_ids: Sequence[str]) -> list[str]:
        return ["oardel", *job_ids]

    def query(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        argv = ["oarstat", "-f", "-J"] + [a for j in job_ids for a in ("-j", j)]
        return {r.job_id: oar_status(r) for r in parse_oarstat(self.run(argv))}
