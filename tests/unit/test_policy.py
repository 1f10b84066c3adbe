"""The launcher's fault policy, decided on plain values (no process, no socket, no database)."""

from __future__ import annotations

import pytest

from melissa.launcher.policy import (
    COMPLETION_GRACE_S,
    Action,
    Decision,
    FaultPolicy,
    Run,
    Verdict,
    next_submissions,
    preempted,
    realign,
    wait_s,
)
from melissa.launcher.schedulers.base import JobState, JobStatus
from melissa.launcher.state import SimulationRecord, SimulationStatus

POLICY = FaultPolicy(fault_tolerance=True, crashes_before_redraw=2, simulation_timeout=30.0,
                     parameter_sweep_size=10, max_restarts=2, server_timeout=60.0)
RUNNING, PENDING = JobStatus(JobState.RUNNING), JobStatus(JobState.PENDING)


def record(sim: int, status: SimulationStatus = SimulationStatus.PENDING) -> SimulationRecord:
    return SimulationRecord(sim, (0.5,), status, 0, 0, "", None, None, "", None, None)


def started_run(at: float = 0.0) -> Run:
    run = Run("7", at)
    run.observe(JobState.RUNNING, at)
    return run


def test_queue_time_is_not_run_time() -> None:
    run = Run("7", 0.0)
    run.observe(JobState.PENDING, 100.0)
    assert run.queued and run.started == 100.0
    # The server has not heard of it for longer than simulation_timeout, but it is queued.
    assert POLICY.judge(run, PENDING, 200.0, last_status=200.0).verdict == Verdict.WAIT
    assert not POLICY.is_hung(run, 200.0)
    run.observe(JobState.RUNNING, 200.0)
    assert not run.queued and run.started == 100.0


def test_a_client_that_never_reaches_the_server_is_cancelled() -> None:
    run = started_run()
    assert POLICY.judge(run, RUNNING, 31.0, last_status=29.0).verdict == Verdict.WAIT
    judged = POLICY.judge(run, RUNNING, 31.0, last_status=31.0)
    assert judged.verdict == Verdict.CANCEL
    assert "did not reach the server within 30 s" in judged.reason
    run.seen = True  # the server knows it: the silence rule judges it instead
    assert POLICY.judge(run, RUNNING, 99.0, last_status=99.0).verdict == Verdict.WAIT


def test_exit_zero_without_data_fails_after_the_grace_period() -> None:
    run = started_run()
    done = JobStatus(JobState.COMPLETED, 0)
    run.observe(JobState.COMPLETED, 10.0)
    assert POLICY.judge(run, done, 10.0 + COMPLETION_GRACE_S, 0.0).verdict == Verdict.WAIT
    judged = POLICY.judge(run, done, 10.1 + COMPLETION_GRACE_S, 0.0)
    assert judged.verdict == Verdict.FAILED and "finalize() not called" in judged.reason


@pytest.mark.parametrize(("status", "reason"), [
    (JobStatus(JobState.COMPLETED, 0), ""),
    (JobStatus(JobState.FAILED, 3), "exit status 3 after sending all its data"),
    (JobStatus(JobState.CANCELLED, None, "killed by the OOM killer"),
     "killed by the OOM killer after sending all its data"),
])
def test_complete_data_means_done_whatever_the_exit(status: JobStatus, reason: str) -> None:
    run = started_run()
    run.completed_at = 1.0
    judged = POLICY.judge(run, status, 1.0, 0.0)
    assert (judged.verdict, judged.reason) == (Verdict.DONE, reason)


def test_a_failed_job_is_a_failed_attempt() -> None:
    judged = POLICY.judge(started_run(), JobStatus(JobState.FAILED, -9), 1.0, 0.0)
    assert (judged.verdict, judged.reason) == (Verdict.FAILED, "exit status -9")


def test_silence_blames_only_a_running_attempt_older_than_the_timeout() -> None:
    run = started_run(at=100.0)
    assert not POLICY.is_hung(None, 200.0)
    assert not POLICY.is_hung(run, 129.0)  # the silence began with an earlier attempt
    assert POLICY.is_hung(run, 130.0)
    run.completed_at = 1.0
    assert not POLICY.is_hung(run, 300.0)


def test_resubmit_then_redraw_then_give_up() -> None:
    assert POLICY.after_failure(failures=0, groups_drawn=10) == Decision(Action.RESUBMIT)
    assert POLICY.after_failure(failures=1, groups_drawn=10) == Decision(Action.RESUBMIT)
    assert POLICY.after_failure(failures=2, groups_drawn=10) == Decision(Action.REDRAW)
    assert POLICY.after_failure(failures=2, groups_drawn=19) == Decision(Action.REDRAW)
    refused = POLICY.after_failure(failures=2, groups_drawn=20)
    assert refused.action == Action.GIVE_UP
    assert refused.why == ("failed 3 times, not redrawn: the study already redrew 10 groups "
                           "(parameter_sweep_size)")
    strict = FaultPolicy(False, 2, 30.0, 10, 2, 60.0)
    assert strict.after_failure(failures=0, groups_drawn=10) == Decision(Action.GIVE_UP)


def test_server_faults_and_restart_budget() -> None:
    assert POLICY.server_fault(RUNNING, silent_s=59.0) is None
    assert POLICY.server_fault(RUNNING, silent_s=61.0) == (
        "the server sent nothing for 61 s (launcher_config.server_timeout)")
    assert POLICY.server_fault(JobStatus(JobState.FAILED, 1), 0.0) == (
        "the server stopped (exit status 1)")
    assert [POLICY.may_restart(n) for n in range(4)] == [True, True, False, False]


def test_preemption_stops_complete_jobs_then_the_newest() -> None:
    running = {1: Run("a", 1.0), 2: Run("b", 2.0), 3: Run("c", 3.0), 4: Run("d", 0.5)}
    running[4].completed_at = 1.0
    assert preempted(running, 4) == []
    assert preempted(running, 2) == [4, 3]
    assert preempted(running, 0) == [4, 3, 2, 1]


def test_sobol_groups_are_submitted_whole() -> None:
    pending = [record(i) for i in (0, 1, 2, 4, 5, 6, 8)]
    ids = lambda chosen: [r.simulation_id for r in chosen]
    assert ids(next_submissions(iter(pending), 2, 1, job_limit=4)) == [0, 1]
    # Groups of 4: group 0 has 3 pending members left, group 1 all 3 others pending too.
    assert ids(next_submissions(pending, 5, 4, job_limit=8)) == [0, 1, 2]
    assert ids(next_submissions(pending, 6, 4, job_limit=8)) == [0, 1, 2, 4, 5, 6]
    # job_limit below the group's size: member by member.
    assert ids(next_submissions(pending, 2, 4, job_limit=2)) == [0, 1]


def test_realign_with_a_restored_server() -> None:
    records = [record(0, SimulationStatus.COMPLETED), record(1, SimulationStatus.COMPLETED),
               record(2, SimulationStatus.RUNNING), record(3, SimulationStatus.RUNNING),
               record(4)]
    completed, again = realign(records, {0, 3}, running={2: Run("x", 0.0)})
    assert completed == [0, 3]
    assert [sim for sim, _ in again] == [1]  # 2 still runs; 4 was never submitted
    assert "checkpoint is older" in again[0][1]
    _, again = realign(records, set(), running={})
    assert [(sim, why) for sim, why in again if sim != 0 and sim != 1] == [
        (2, "stopped, the server was restarted"), (3, "stopped, the server was restarted")]


def test_the_loop_looks_again_soon_while_a_slot_is_about_to_free() -> None:
    running = [started_run(), started_run()]
    assert wait_s(running, 10.0, 0.2) == 0.2
    running[1].completed_at = 9.5  # its job should exit within milliseconds
    assert wait_s(running, 10.0, 0.2) == 0.005
    assert wait_s(running, 10.0, 0.001) == 0.001
    assert wait_s(running, 10.6, 0.2) == 0.2  # a job that lingers: back to poll_interval
