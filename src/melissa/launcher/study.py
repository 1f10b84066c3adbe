"""The study state machine: start the server, submit simulations within job_limit, watch, finish.

The launcher owns the truth about jobs; the server owns the truth about data. A simulation is
COMPLETED only when the server said so (all its data arrived), whatever its exit code says.

Faults (docs/fault-tolerance.md): a failed or hung simulation is resubmitted with MELISSA_ATTEMPT
+ 1, then its parameters are redrawn under new ids; a dead or silent server is restarted from its
checkpoint; a launcher that died is resumed from study.db. Every change is in study.db first, so a
resumed launcher finds the study as this one left it. What to do about a fault is decided in
launcher/policy.py; the server's job is followed by launcher/server_job.py.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from melissa.atomic import atomic_write
from melissa.config import LoadedConfig
from melissa.errors import StudyError, SubmissionError
from melissa.launcher import interrupt
from melissa.launcher.breeding import COLUMNS as BREED_COLUMNS
from melissa.launcher.breeding import Breeder
from melissa.launcher.client_job import ClientJobs
from melissa.launcher.control import JobLimitControl
from melissa.launcher.display import StudyDisplay
from melissa.launcher.policy import (
    Action,
    FailFast,
    Failure,
    FaultPolicy,
    Run,
    Verdict,
    fail_fast_message,
    next_submissions,
    preempted,
    realign,
    wait_s,
)
from melissa.launcher.report import write_parameters_csv
from melissa.launcher.schedulers.base import JobSpec, JobStatus, Scheduler
from melissa.launcher.server_job import ServerJob, wait_ended
from melissa.launcher.simlog import command_line, last_lines, open_attempt
from melissa.launcher.state import SimulationRecord, SimulationStatus, StateStore
from melissa.launcher.status import RECENT_FAILURES, RunningJob, StatusBoard, build_snapshot
from melissa.paths import StudyPaths
from melissa.protocol.events import (
    Event,
    Fitness,
    Restored,
    ServerStatus,
    SimulationComplete,
    SimulationRefused,
    SimulationSilent,
    StopWhenReached,
)
from melissa.sampling import Sampler

log = logging.getLogger("melissa.launcher")

_REPORT_PERIOD_S = 5.0
_REPORT_SHARE = 50  # parameters.csv takes at most 1/50 of the launcher's time (write_report)
_FINISHED = "finished"  # the study status in study.db once the results are written
_STOPPED = "stopped"  # sa_config.stop_when was reached: no more submissions, even on --resume


@dataclass
class StudyOutcome:
    completed: int
    failed: int
    results: list[Path] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)


class Study:
    """One study, ready to run: built by `Study.create` (a new study in output_dir) or
    `Study.resume` (the study a dead launcher left there), then `run`, and `close` always."""

    def __init__(self, loaded: LoadedConfig, scheduler: Scheduler, store: StateStore,
                 sampler: Sampler, token_hex: str) -> None:
        """Use `create` or `resume`. `store`: the study's study.db, holding its simulations;
        `sampler`: positioned after the parameter sets drawn so far (redraws continue it)."""
        self.loaded = loaded
        self.config = loaded.config
        self.paths = StudyPaths(loaded.output_dir)
        self.scheduler = scheduler
        self.store = store
        self.sampler = sampler
        self.token_hex = token_hex
        self.parameter_names: list[str] = store.study()["parameter_names"]
        # What every simulation's job shares, built once.
        self.client_jobs = ClientJobs(loaded, self.parameter_names)
        # sampling.method "breed": generations bred from the server's fitness (breeding.py).
        self.breeder = (Breeder(self.config, store.connection)
                        if self.config.sampling.method == "breed" else None)
        self.policy = FaultPolicy.from_config(self.config)
        self.job_limit = JobLimitControl(self.paths.job_limit,
                                         self.config.launcher_config.job_limit)
        self.server = ServerJob(scheduler, self.paths, self.config, loaded.base_dir, token_hex)
        self.server_restarts: list[str] = []  # why the server was restarted, each time
        self.running: dict[int, Run] = {}
        self.stopping: set[str] = set()  # cancelled client jobs not ended yet (they hold slots)
        self.server_status = ServerStatus()  # the latest, summed over the server's ranks
        self.last_status = -math.inf  # the latest status event: what the server knew then
        self.board = StatusBoard()  # what the status API serves (melissa-monitor)
        self.phase = "starting"
        self.started = time.monotonic()
        self.fail_fast = FailFast(self.config.launcher_config.fail_fast)
        self.refusals: dict[int, str] = {}  # simulation -> why the server refused its attempt
        self.next_report = self.started + _REPORT_PERIOD_S  # parameters.csv (write_report)
        self.stopped = ""  # why no more simulations are submitted (sa_config.stop_when)

    # -- set-up --------------------------------------------------------------------------------
    @classmethod
    def create(cls, loaded: LoadedConfig, scheduler: Scheduler, *,
               overwrite: bool = False) -> Study:
        """A new study in output_dir (which must be empty, or hold a study and `overwrite`):
        study.json written, the planned parameter sets drawn into a new study.db."""
        paths = StudyPaths(loaded.output_dir)
        config = loaded.config
        root = paths.root
        if paths.state_db.exists():
            if not overwrite:
                raise StudyError(
                    f"output_dir {root} already holds a study (study.db): pass --resume to "
                    "continue it, --overwrite to replace it, or set another output_dir"
                )
            _stop_replaced_study(loaded, scheduler, paths)
            paths.remove_study()
        elif root.exists() and any(p != paths.lock for p in root.iterdir()):
            raise StudyError(
                f"output_dir {root} exists and is not empty: choose another output_dir"
            )
        paths.make_dirs()
        _log_to_file(paths, config.launcher_config.log_level)

        study_json = config.model_dump(mode="json")
        study_json["output_dir"] = str(root)
        with atomic_write(paths.study_file, durable=True) as tmp:
            tmp.write_text(json.dumps(study_json, indent=2))

        sampler = _new_sampler(loaded)
        breeding = config.sampling.method == "breed"  # draws generation 0 once study.db exists
        draws = sampler.draw(0 if breeding else config.study_options.parameter_sweep_size)
        token_hex = secrets.token_hex(16)
        store = StateStore(paths.state_db)
        try:
            store.init_study(token_hex, json.dumps(study_json), sampler.names,
                             str(loaded.path.resolve()))
            store.set_groups_drawn(sampler.drawn)
            store.add_simulations([(i, tuple(row)) for i, row in enumerate(draws)])
        except BaseException:
            store.close()
            raise
        study = cls(loaded, scheduler, store, sampler, token_hex)
        if study.breeder is not None:
            store.add_simulations(study.breeder.first_generation())
        log.info("study prepared in %s: %d simulations", root, len(store.simulations()))
        return study

    @classmethod
    def resume(cls, loaded: LoadedConfig, scheduler: Scheduler) -> Study | None:
        """The study of output_dir continued from its study.db: same token, same draws; the jobs
        an earlier launcher left are stopped, their simulations submitted again. None if the
        study had already finished."""
        paths = StudyPaths(loaded.output_dir)
        if not paths.state_db.is_file():
            raise StudyError(f"no study to resume in {paths.root} (no study.db): "
                             "start it without --resume")
        store = StateStore(paths.state_db)
        try:
            info = store.study()
            if info["status"] == _FINISHED:
                store.close()
                return None
            _check_same_study(loaded, paths, json.loads(info["config_json"]))
            _log_to_file(paths, loaded.config.launcher_config.log_level)
            sampler = _new_sampler(loaded)
            sampler.draw(info["groups_drawn"])  # what was drawn already, to continue after it
            study = cls(loaded, scheduler, store, sampler, info["token_hex"])
            if info["status"] == _STOPPED:
                study.stopped = info["message"]
        except BaseException:
            store.close()
            raise
        if study.breeder is not None:
            study.breeder.recover(store)  # a generation recorded but not yet added
        study._stop_earlier_jobs(info["server_job"])
        counts = store.counts()
        if counts[SimulationStatus.COMPLETED]:
            study.fail_fast.completed()
        log.info("study in %s resumed: %d simulations completed, %d to run", paths.root,
                 counts[SimulationStatus.COMPLETED], counts[SimulationStatus.PENDING])
        return study

    def _stop_earlier_jobs(self, server_job: str | None) -> None:
        """Stop what the dead launcher left running: the server (it checkpoints on SIGTERM; the
        new one restores that checkpoint) and the simulations, which talked to it. They stay
        running in study.db until the new server said which of them it holds complete."""
        followed = _stop_jobs(self.scheduler, self.store, self.token_hex, server_job,
                              self.server.patience_s)
        self.stopping.update(followed)
        self.paths.rendezvous.unlink(missing_ok=True)

    # -- server --------------------------------------------------------------------------------
    def start_server(self) -> None:
        restored, events = self.server.start(self.store.set_server_job, self.publish_status)
        self._align_with_server(restored)
        self._on_events(events)

    def _align_with_server(self, restored: Restored | None) -> None:
        """After the server started (None: without a checkpoint), what it holds complete is
        completed; any other simulation runs again (see policy.realign)."""
        complete = set(restored.complete) if restored is not None else set()
        if restored is not None:
            log.info("the server restored checkpoint %s: %d simulations complete",
                     restored.checkpoint, len(complete))
        completed, again = realign(self.store.simulations(), complete, self.running)
        for sim in completed:
            self._completed(sim)
        for sim, why in again:
            self._requeue(sim, why, failed=False)

    def watch_server(self) -> None:
        """Restart a server whose job ended or that has sent nothing for server_timeout (it
        sends a status event every second)."""
        reason = self.policy.server_fault(self.server.poll(), self.server.silent_s())
        if reason is not None:
            self.restart_server(reason)

    def restart_server(self, reason: str) -> None:
        """Stop the server and every simulation, then start a server that restores its latest
        checkpoint; the simulations it does not hold complete are submitted again. Raises
        StudyError past launcher_config.max_restarts."""
        while True:
            if not self.policy.may_restart(len(self.server_restarts)):
                raise StudyError(
                    f"{reason}, and it was restarted {self.policy.max_restarts} times already "
                    f"(launcher_config.max_restarts); see {self.paths.server_log}"
                )
            self.server_restarts.append(reason)
            log.warning("%s: restarting it (restart %d of at most %d)", reason,
                        len(self.server_restarts), self.policy.max_restarts)
            self.server.stop()
            for sim in list(self.running):  # they talked to the old server
                self._cancel(sim)
            try:
                self.start_server()
            except StudyError as exc:  # it did not come up: that is one more restart
                reason = str(exc)
                continue
            return

    # -- simulations ---------------------------------------------------------------------------
    def client_spec(self, record: SimulationRecord) -> JobSpec:
        return self.client_jobs.spec(record.simulation_id, record.attempt, record.parameters,
                                     self.server.address, self.token_hex, self.server.key,
                                     self.paths.simulation_log(record.simulation_id))

    def submit_pending(self) -> None:
        # Cancelled jobs hold their slot until they ended: the limit counts what runs.
        free = self.job_limit.limit - len(self.running) - len(self.stopping)
        if free <= 0 or self.stopped:
            return
        # A whole group more than fits: next_submissions sees where the last group ends.
        pending = self.store.pending(free + self.config.group_size)
        for record in next_submissions(pending, free, self.config.group_size,
                                       self.job_limit.limit):
            spec = self.client_spec(record)
            open_attempt(spec.log_path, record.simulation_id, record.attempt,
                         command_line(spec.argv, spec.cwd))
            self.refusals.pop(record.simulation_id, None)  # of an earlier attempt
            try:
                job_id = self.scheduler.submit(spec)
            except SubmissionError as exc:  # a refused job is refused again: no resubmission
                self._give_up(record.simulation_id, None, str(exc))
                continue
            self.store.mark_running(record.simulation_id, job_id)
            self.running[record.simulation_id] = Run(job_id, time.monotonic())
            log.info("simulation %d (attempt %d) submitted as job %s", record.simulation_id,
                     record.attempt, job_id)

    def apply_job_limit(self) -> None:
        """Take a new job_limit (status API or file); above a lowered limit, jobs are preempted
        (back to pending, not a failure: the server drops what it already holds)."""
        change = self.job_limit.poll()
        if change is None:
            return
        limit, source = change
        log.info("job_limit is now %d (from %s)", limit, source)
        for sim in preempted(self.running, limit):
            complete = self.running[sim].complete
            self._cancel(sim)
            if not complete:
                self._requeue(sim, f"preempted (job_limit lowered to {limit})", failed=False)

    def _cancel(self, sim: int) -> None:
        run = self.running.pop(sim)
        self.scheduler.cancel([run.job_id])
        self.stopping.add(run.job_id)

    def _requeue(self, sim: int, why: str, *, failed: bool, exit_code: int | None = None) -> None:
        attempt = self.store.simulation(sim).attempt
        self.store.requeue(sim, f"attempt {attempt}: {why}", failed=failed, exit_code=exit_code)
        log.log(logging.WARNING if failed else logging.INFO, "simulation %d attempt %d: %s",
                sim, attempt, why)

    def _give_up(self, sim: int, exit_code: int | None, message: str) -> None:
        """The simulation failed for good: recorded, and the server told to drop it."""
        self.running.pop(sim, None)
        self.store.mark_finished(sim, SimulationStatus.FAILED, exit_code, message)
        log.warning("simulation %d failed: %s", sim, message)
        self.server.abandon([sim])

    def simulation_failed(self, sim: int, exit_code: int | None, reason: str, *,
                          sent_data: bool) -> None:
        """An attempt failed (its job ended or was cancelled): resubmit the simulation, redraw
        its parameters, or give up, as the fault policy decides; stop the study when the
        failures say its set-up is broken (fail-fast)."""
        self.running.pop(sim, None)
        if sim in self.refusals:
            reason = f"{reason}; the server refused it: {self.refusals.pop(sim)}"
        record = self.store.simulation(sim)
        decision = self.policy.after_failure(record.failures, self.sampler.drawn)
        if decision.action == Action.RESUBMIT:
            self._requeue(sim, f"{reason}, resubmitted", failed=True, exit_code=exit_code)
        elif decision.action == Action.REDRAW:
            self._redraw(record, f"attempt {record.attempt}: {reason}", exit_code)
        elif decision.why:  # a redraw refused
            self._give_up(sim, exit_code, f"attempt {record.attempt}: {reason}; {decision.why}")
        else:
            self._give_up(sim, exit_code, reason)
        log_path = self.paths.simulation_log(sim)
        stop = self.fail_fast.failed(Failure(sim, reason, tuple(last_lines(log_path)), sent_data))
        if stop is not None:
            spec = self.client_spec(record)
            raise StudyError(fail_fast_message(stop, command_line(spec.argv, spec.cwd),
                                               str(log_path), str(self.loaded.path)))

    def _redraw(self, record: SimulationRecord, note: str, exit_code: int | None) -> None:
        """Replace the simulation (for Sobol' indices, its whole group) by new parameters from
        the same sequence, under new ids: the server may hold part of the old ones' data."""
        sim, size = record.simulation_id, self.config.group_size
        failures = record.failures + 1
        group = sim // size
        members = [self.store.simulation(i) for i in range(group * size, (group + 1) * size)]
        first = self.store.last_id() + 1
        new_ids = range(first, first + size)
        rows = list(zip(new_ids, self.sampler.draw(1).tolist()))
        named = f"simulation {first}" if size == 1 else (
            f"group {first // size} (simulations {first}-{first + size - 1})")
        why = f"failed {failures} times, redrawn as {named}"
        replaced = {
            m.simulation_id: f"{note}; {why}" if m.simulation_id == sim
            else f"group {group} redrawn as {named}: simulation {sim} failed {failures} times"
            for m in members
            if m.status in (SimulationStatus.PENDING, SimulationStatus.RUNNING)
        }
        self.store.redraw(replaced, rows, self.sampler.drawn, failed=sim, exit_code=exit_code)
        for other in replaced:
            if other in self.running:
                self._cancel(other)
        log.warning("simulation %d %s: %s", sim, why, note)
        self.server.abandon(sorted(replaced))

    # -- events from the server ----------------------------------------------------------------
    def handle_events(self, timeout_s: float) -> None:
        events = self.server.events(timeout_s)
        with self.store.batch():  # a resumed launcher learns them again from the checkpoint
            self._on_events(events)

    def _on_events(self, events: Sequence[Event]) -> None:
        for event in events:
            if isinstance(event, SimulationComplete):
                self._completed(event.simulation_id)
            elif isinstance(event, SimulationSilent):
                self._silent(event.simulation_id, event.silent_s)
            elif isinstance(event, SimulationRefused):
                self._refused(event)
            elif isinstance(event, ServerStatus):
                self._status(event)
            elif isinstance(event, Fitness) and self.breeder is not None:
                self.breeder.on_fitness(event.simulation_id, event.fitness)
            elif isinstance(event, StopWhenReached):
                self._stop_when(event)

    def _stop_when(self, event: StopWhenReached) -> None:
        """The figure reached its target: submit nothing more (recorded, so that --resume does
        not either); the running simulations finish and count."""
        pending = self.store.counts()[SimulationStatus.PENDING]
        if self.stopped or self.phase != "running" or pending == 0:
            return  # nothing left to hold back
        self.stopped = (
            f"stopped early: {event.figure} {event.value:.4g} below {event.below:.4g} "
            f"(sa_config.stop_when) with {event.simulations} simulations in the statistics; "
            f"{pending} planned simulations not started"
        )
        self.store.set_study_status(_STOPPED, self.stopped)
        log.warning("%s", self.stopped)

    def _status(self, status: ServerStatus) -> None:
        self.server_status = status
        self.last_status = time.monotonic()
        known = status.chunks_received
        for sim, run in self.running.items():
            run.seen = run.seen or str(sim) in known

    def _completed(self, sim: int) -> None:
        record = self.store.simulation(sim)
        if record.status == SimulationStatus.COMPLETED:
            return
        if record.status == SimulationStatus.REDRAWN:  # its data came in after all
            log.warning("simulation %d completed after it was redrawn", sim)
        self.store.mark_finished(sim, SimulationStatus.COMPLETED, None,
                                 record.message if record.status == SimulationStatus.REDRAWN
                                 else "")
        log.info("simulation %d completed", sim)
        self.fail_fast.completed()
        if sim in self.running:  # its job still counts against job_limit until it exits
            self.running[sim].completed_at = time.monotonic()
            self.running[sim].seen = True

    def _refused(self, event: SimulationRefused) -> None:
        """The server refused a message of the simulation (a wrong field size, ...): kept to
        explain its failure."""
        sim = event.simulation_id
        if sim in self.running and event.attempt == self.store.simulation(sim).attempt:
            self.refusals.setdefault(sim, event.reason)
            log.warning("simulation %d attempt %d: the server refused it: %s", sim,
                        event.attempt, event.reason)

    def _silent(self, sim: int, silent_s: float) -> None:
        """The server heard nothing of the simulation for simulation_timeout: hung?"""
        if not self.policy.is_hung(self.running.get(sim), time.monotonic()):
            return
        self._cancel(sim)
        self.simulation_failed(sim, None, f"sent nothing for {silent_s:.0f} s "
                               "(study_options.simulation_timeout), cancelled", sent_data=True)

    # -- jobs ----------------------------------------------------------------------------------
    def poll_jobs(self) -> None:
        now = time.monotonic()
        ids = [r.job_id for r in self.running.values()] + sorted(self.stopping)
        statuses = self.scheduler.poll(ids) if ids else {}
        self.stopping = {j for j in self.stopping if not statuses[j].state.is_final}
        with self.store.batch():  # a resumed launcher adopts these jobs and learns their end
            self._judge_jobs(statuses, now)

    def _judge_jobs(self, statuses: Mapping[str, JobStatus], now: float) -> None:
        for sim, run in list(self.running.items()):
            if sim not in self.running:  # cancelled meanwhile with its redrawn group
                continue
            status = statuses[run.job_id]
            run.observe(status.state, now)
            judgement = self.policy.judge(run, status, now, self.last_status)
            if judgement.verdict == Verdict.DONE:
                del self.running[sim]
                self.store.mark_finished(sim, SimulationStatus.COMPLETED, status.exit_code,
                                         judgement.reason)
            elif judgement.verdict == Verdict.FAILED:
                self.simulation_failed(sim, status.exit_code, judgement.reason,
                                       sent_data=run.seen)
            elif judgement.verdict == Verdict.CANCEL:  # it never reached the server
                self._cancel(sim)
                self.simulation_failed(sim, None, judgement.reason, sent_data=False)

    # -- main loop -----------------------------------------------------------------------------
    def run(self, display: StudyDisplay) -> StudyOutcome:
        self.start_server()
        self.phase = "running"
        interval = self.config.launcher_config.poll_interval
        self.next_report = time.monotonic() + _REPORT_PERIOD_S
        while True:
            interrupt.check()
            self.apply_job_limit()
            self.submit_pending()
            heard = self.last_status
            self.handle_events(wait_s(self.running.values(), time.monotonic(), interval))
            self.poll_jobs()
            self.watch_server()
            counts = self.store.counts()
            display.update(counts, self.server_status,
                           sum(counts.values()) - counts[SimulationStatus.REDRAWN])
            self.publish_status(force=self.last_status != heard)  # fresh server figures
            if time.monotonic() > self.next_report:
                self.write_report()  # a user can follow the study in parameters.csv
            if self.breeder is not None and self.breeder.step(self.store):
                continue  # a new generation to submit
            if (counts[SimulationStatus.PENDING] == 0 or self.stopped) and not self.running and (
                    self.breeder is None or self.breeder.done):
                break
        return self.finish()

    def finish(self) -> StudyOutcome:
        self.server.request_finish()
        self.phase = "finishing"
        self.publish_status(force=True)
        results = self.server.results(self._finishing_status,
                                      lambda event: self._on_events([event]))
        self.store.set_study_status(_FINISHED, self.stopped)
        self.phase = _FINISHED
        self.publish_status(force=True)
        counts = self.store.counts()
        self.write_report()
        plots = [self.breeder.plot(self.paths.root / "breed.png")] if self.breeder else []
        return StudyOutcome(
            counts[SimulationStatus.COMPLETED], counts[SimulationStatus.FAILED], results, plots
        )

    def _finishing_status(self, status: ServerStatus) -> None:
        self.server_status = status
        self.publish_status(force=True)  # the monitor's totals: the final figures

    def publish_status(self, force: bool = False) -> None:
        """Give the status API a fresh snapshot (at most once a second unless forced)."""
        if not (force or self.board.due()):
            return
        now = time.monotonic()
        cfg = self.config
        chunks = (len(cfg.study_options.field_names) * cfg.study_options.nb_time_steps
                  * max(cfg.client_config.ranks, cfg.server_config.ranks))
        self.board.publish(build_snapshot(
            output_dir=self.paths.root,
            scheduler=self.scheduler.name,
            state=self.phase,
            elapsed_s=now - self.started,
            job_limit=self.job_limit.limit,
            counts=self.store.counts(),
            failures=self.store.recent_failures(RECENT_FAILURES),
            running=[RunningJob(sim, run.job_id, run.queued, now - run.started)
                     for sim, run in self.running.items() if not run.complete],
            server_job={"job_id": self.server.job_id, "state": self.server.state(),
                        "address": self.server.address or None,
                        "restarts": len(self.server_restarts)},
            server=self.server_status,
            chunks_expected=chunks,
            recent_mb_s=self.board.recent_rate(self.server_status),
            log_of=self.paths.simulation_log,
        ))

    def write_report(self) -> None:
        """Rewrite parameters.csv; the main loop waits _REPORT_SHARE times as long as this took
        (at least _REPORT_PERIOD_S) before the next, so a large study spends at most 1 /
        _REPORT_SHARE of its time on it."""
        started = time.monotonic()
        write_parameters_csv(
            self.paths.parameters_csv,
            self.parameter_names,
            self.store.simulations(),
            group_size=self.config.group_size,
            extra=(BREED_COLUMNS, self.breeder.columns()) if self.breeder else None,
        )
        self.next_report = time.monotonic() + max(
            _REPORT_PERIOD_S, _REPORT_SHARE * (time.monotonic() - started))

    def close(self) -> None:
        """Cancel whatever still runs (also on errors and Ctrl-C)."""
        self.scheduler.close()
        self.server.close()
        self.write_report()
        self.store.close()


def _stop_jobs(scheduler: Scheduler, store: StateStore, token_hex: str, server_job: str | None,
               patience_s: float) -> list[str]:
    """Stop the jobs a dead launcher left running (its server, once ended: its checkpoint is
    complete then); returns the simulation jobs the scheduler follows, cancelled, not ended."""
    running = store.simulations(SimulationStatus.RUNNING)
    clients = [r.job_id for r in running if r.job_id is not None]
    followed = scheduler.adopt([*clients, *([server_job] if server_job else [])], token_hex)
    scheduler.cancel(followed)
    if server_job in followed:
        wait_ended(scheduler, [server_job], patience_s)
    return [job for job in followed if job != server_job]


def _stop_replaced_study(loaded: LoadedConfig, scheduler: Scheduler, paths: StudyPaths) -> None:
    """--overwrite: stop what the replaced study's dead launcher left running (its server and
    simulations) before its files are deleted."""
    try:
        store = StateStore(paths.state_db)
        try:
            info = store.study()
            patience = max(loaded.config.launcher_config.server_timeout, 60.0)
            _stop_jobs(scheduler, store, info["token_hex"], info["server_job"], patience)
        finally:
            store.close()
    except (StudyError, ValueError) as exc:  # unreadable: nothing can be found to stop
        log.warning("the replaced study's jobs were not looked for: %s", exc)


def _new_sampler(loaded: LoadedConfig) -> Sampler:
    config = loaded.config
    size = config.study_options.parameter_sweep_size
    # Breeding draws its own points; redraws after failures are random.
    sampling = (config.sampling.model_copy(update={"method": "random"})
                if config.sampling.method == "breed" else config.sampling)
    return Sampler(config.parameters, sampling, config.study_options.seed,
                   planned_size=size, pick_freeze=config.group_size > 1,
                   second_order=config.sa_config is not None and config.sa_config.second_order)


def _check_same_study(loaded: LoadedConfig, paths: StudyPaths, stored: dict[str, Any]) -> None:
    """Only launcher_config may change between a study's start and its resume."""
    current = loaded.config.model_dump(mode="json")
    changed = sorted(key for key in stored.keys() | current.keys()
                     if key not in ("launcher_config", "output_dir")
                     and stored.get(key) != current.get(key))
    if changed:
        raise StudyError(
            f"this config differs from the study in {paths.root} in "
            f"{', '.join(changed)}: resume with the config that started it (only "
            "launcher_config may change)"
        )


def _log_to_file(paths: StudyPaths, level: int) -> None:
    """logs/launcher.log, at launcher_config.verbosity's level."""
    handler = logging.FileHandler(paths.launcher_log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger("melissa").addHandler(handler)
    logging.getLogger("melissa").setLevel(level)
