"""The launcher's fault policy as pure decisions: no process, no socket, no database.

`Study` observes (scheduler polls, server events, clocks) and acts (submit, cancel, record); what
to do about what it observed is decided here, so every rule of docs/fault-tolerance.md is unit
tested on plain values (tests/unit/test_policy.py). A new rule (e.g. fail fast) is one more
decision here and one more branch where `Study` acts on it.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from melissa.config import StudyConfig
from melissa.launcher.schedulers.base import JobState, JobStatus
from melissa.launcher.state import SimulationRecord, SimulationStatus

# A client that exited 0 is given this long for the server's completion event to arrive.
COMPLETION_GRACE_S = 5.0
# A job whose data is all in usually exits within milliseconds, freeing its slot: the main loop
# looks again after EXIT_POLL_S (instead of poll_interval) for EXIT_WATCH_S after that.
EXIT_POLL_S = 0.005
EXIT_WATCH_S = 1.0


@dataclass
class Run:
    """One submitted attempt of a simulation, as the launcher follows it (times: monotonic)."""

    job_id: str
    started: float  # submission; then, while the scheduler queues the job, the latest poll
    completed_at: float | None = None  # when the server said it has all its data
    queued: bool = True  # the scheduler has not started the job yet
    exited_at: float | None = None  # exit 0 seen, completion event not yet
    seen: bool = False  # the server knows the simulation (it said HELLO, now or before)

    @property
    def complete(self) -> bool:
        """The server has all the simulation's data (its job may still run)."""
        return self.completed_at is not None

    def observe(self, state: JobState, now: float) -> None:
        """Take the scheduler's latest state of the job into account."""
        if state == JobState.PENDING:
            self.started = now  # simulation_timeout counts from the job's start
        else:
            self.queued = False
        if state == JobState.COMPLETED and self.exited_at is None:
            self.exited_at = now


class Verdict(enum.Enum):
    WAIT = "wait"  # nothing to do yet
    DONE = "done"  # complete, and its job ended: the simulation is completed for good
    FAILED = "failed"  # the attempt failed (its job ended): see `FaultPolicy.after_failure`
    CANCEL = "cancel"  # the attempt hangs: cancel its job, then it failed


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    reason: str = ""  # what happened, for the record (FAILED, CANCEL; DONE: a non-zero end)


class Action(enum.Enum):
    RESUBMIT = "resubmit"  # same parameters, MELISSA_ATTEMPT + 1
    REDRAW = "redraw"  # new parameters (for Sobol' indices, a new group) under new ids
    GIVE_UP = "give_up"  # failed for good


@dataclass(frozen=True)
class Decision:
    action: Action
    why: str = ""  # GIVE_UP after a refused redraw: what to add to the failure's note


@dataclass(frozen=True)
class FaultPolicy:
    """The fault-tolerance settings of a study, and the decisions they imply."""

    fault_tolerance: bool
    crashes_before_redraw: int
    simulation_timeout: float
    parameter_sweep_size: int
    max_restarts: int
    server_timeout: float

    @classmethod
    def from_config(cls, config: StudyConfig) -> FaultPolicy:
        launcher, study = config.launcher_config, config.study_options
        return cls(launcher.fault_tolerance, study.crashes_before_redraw,
                   study.simulation_timeout, study.parameter_sweep_size,
                   launcher.max_restarts, launcher.server_timeout)

    def judge(self, run: Run, status: JobStatus, now: float, last_status: float) -> Judgement:
        """What the job's state (after `run.observe`) says of the attempt. `last_status`: when
        the latest status event of the server arrived (what the server knew then)."""
        state = status.state
        if run.complete and state.is_final:
            return Judgement(Verdict.DONE, "" if state == JobState.COMPLETED else
                             f"{describe(status)} after sending all its data")
        if state == JobState.COMPLETED:
            if run.exited_at is not None and now - run.exited_at > COMPLETION_GRACE_S:
                return Judgement(Verdict.FAILED, "exited with status 0 but the server did not "
                                 "receive all its data (melissa.finalize() not called?)")
            return Judgement(Verdict.WAIT)
        if state in (JobState.FAILED, JobState.CANCELLED):
            return Judgement(Verdict.FAILED, describe(status))
        # Judged on what the server said since: a frozen server is not the client's fault.
        if not run.seen and not run.queued and last_status - run.started > self.simulation_timeout:
            return Judgement(Verdict.CANCEL, f"did not reach the server within "
                             f"{self.simulation_timeout:g} s of starting "
                             "(study_options.simulation_timeout), cancelled")
        return Judgement(Verdict.WAIT)

    def is_hung(self, run: Run | None, now: float) -> bool:
        """The server reported the simulation silent: is this attempt to blame? (A silence
        longer than this job has been running began with an earlier attempt.)"""
        return (run is not None and not run.complete and not run.queued
                and now - run.started >= self.simulation_timeout)

    def after_failure(self, failures: int, groups_drawn: int) -> Decision:
        """An attempt failed; `failures`: the simulation's failures before this one,
        `groups_drawn`: the parameter sets drawn so far (the planned ones and the redraws)."""
        if not self.fault_tolerance:
            return Decision(Action.GIVE_UP)
        if failures < self.crashes_before_redraw:
            return Decision(Action.RESUBMIT)
        sweep = self.parameter_sweep_size
        if groups_drawn - sweep >= sweep:
            return Decision(Action.GIVE_UP, f"failed {failures + 1} times, not redrawn: the study "
                            f"already redrew {sweep} groups (parameter_sweep_size)")
        return Decision(Action.REDRAW)

    def server_fault(self, status: JobStatus, silent_s: float) -> str | None:
        """Why the running server must be restarted, if it must."""
        if status.state.is_final:
            return f"the server stopped ({describe(status)})"
        if silent_s > self.server_timeout:
            return (f"the server sent nothing for {silent_s:.0f} s "
                    "(launcher_config.server_timeout)")
        return None

    def may_restart(self, restarts: int) -> bool:
        """Whether the server may be restarted once more after `restarts` restarts."""
        return restarts < self.max_restarts


def wait_s(running: Iterable[Run], now: float, poll_interval: float) -> float:
    """How long the main loop may wait for the server's events before it polls the jobs again:
    briefly while a job whose data came in less than EXIT_WATCH_S ago has yet to end (its slot
    is about to free: a batch scheduler answers such polls from its cache), else poll_interval."""
    if any(run.completed_at is not None and now - run.completed_at < EXIT_WATCH_S
           for run in running):
        return min(EXIT_POLL_S, poll_interval)
    return poll_interval


def preempted(running: Mapping[int, Run], limit: int) -> list[int]:
    """The simulations to stop when job_limit drops to `limit`: those whose data is all in first
    (nothing is lost), then the newest."""
    newest_first = sorted(running.items(), key=lambda item: (not item[1].complete,
                                                             -item[1].started))
    return [sim for sim, _ in newest_first[: max(0, len(running) - limit)]]


def next_submissions(pending: Iterable[SimulationRecord], free: int, group_size: int,
                     job_limit: int) -> list[SimulationRecord]:
    """Pending simulations (by id) to submit in `free` slots. The members of a Sobol' group go
    together: a group is submitted when all its pending members fit (so the server joins them
    while they run, holding little), or member by member when the group is larger than
    job_limit."""
    if group_size == 1:
        return list(itertools.islice(pending, free))
    chosen: list[SimulationRecord] = []
    for _, members in itertools.groupby(pending, key=lambda r: r.simulation_id // group_size):
        group = list(members)
        if len(chosen) + len(group) > free:
            if job_limit < group_size:
                chosen += group[: free - len(chosen)]
            break
        chosen += group
    return chosen


def realign(records: Iterable[SimulationRecord], complete: set[int],
            running: Mapping[int, Run]) -> tuple[list[int], list[tuple[int, str]]]:
    """After a server started (complete: what it restored as complete; empty without a
    checkpoint): the simulations now completed, and those to run again with why. A simulation
    completed here but not in the checkpoint (older than its completion) runs again, as does
    one running without a job here (stopped by the restart)."""
    completed: list[int] = []
    again: list[tuple[int, str]] = []
    for record in records:
        sim = record.simulation_id
        if sim in complete:
            completed.append(sim)
        elif record.status == SimulationStatus.COMPLETED:
            why = "completed, but the restarted server lost its data (its checkpoint is older)"
            again.append((sim, f"{why}, resubmitted"))
        elif record.status == SimulationStatus.RUNNING and sim not in running:
            again.append((sim, "stopped, the server was restarted"))
    return completed, again


def describe(status: JobStatus) -> str:
    """A job's end in words: the scheduler's message, else its exit status, else its state."""
    if status.message:
        return status.message
    if status.exit_code is not None:
        return f"exit status {status.exit_code}"
    return status.state.value
