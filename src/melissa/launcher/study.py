"""The study state machine: start the server, submit simulations within job_limit, watch, finish.

The launcher owns the truth about jobs; the server owns the truth about data. A simulation is
COMPLETED only when the server said so (all its data arrived), whatever its exit code says.

Faults (docs/fault-tolerance.md): a failed or hung simulation is resubmitted with MELISSA_ATTEMPT
+ 1, then its parameters are redrawn under new ids; a dead or silent server is restarted from its
checkpoint; a launcher that died is resumed from study.db. Every change is in study.db first, so a
resumed launcher finds the study as this one left it.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import secrets
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from melissa.config import LoadedConfig
from melissa.errors import StudyError, SubmissionError
from melissa.launcher.breeding import COLUMNS as BREED_COLUMNS
from melissa.launcher.breeding import Breeder
from melissa.launcher.channel import ServerChannel
from melissa.launcher.control import JobLimitControl
from melissa.launcher.display import StudyDisplay
from melissa.launcher.report import write_parameters_csv
from melissa.launcher.schedulers.base import JobSpec, JobState, JobStatus, Scheduler
from melissa.launcher.state import SimulationRecord, SimulationStatus, StateStore
from melissa.launcher.status import RunningJob, StatusBoard, build_snapshot
from melissa.paths import StudyPaths
from melissa.protocol import token_from_hex
from melissa.sampling import Sampler

log = logging.getLogger("melissa.launcher")

# A client that exited 0 is given this long for the server's completion event to arrive.
_COMPLETION_GRACE_S = 5.0
_REPORT_PERIOD_S = 5.0
_FINISHED = "finished"  # the study status in study.db once the results are written


@dataclass
class _Running:
    job_id: str
    started: float  # submission; then, while the scheduler queues the job, the latest poll
    complete: bool = False  # the server has all its data
    queued: bool = True  # the scheduler has not started the job yet
    exited_at: float | None = None  # exit 0 seen, completion event not yet
    seen: bool = False  # the server knows the simulation (it said HELLO, now or before)


@dataclass
class StudyOutcome:
    completed: int
    failed: int
    results: list[Path] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)


class Study:
    def __init__(self, loaded: LoadedConfig, scheduler: Scheduler) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.paths = StudyPaths(loaded.output_dir)
        self.scheduler = scheduler
        self.store: StateStore | None = None
        self.sampler: Sampler | None = None  # continued by redraws
        self.breeder: Breeder | None = None  # sampling.method "breed"
        self.token_hex = secrets.token_hex(16)
        self.job_limit = JobLimitControl(self.paths.job_limit,
                                         self.config.launcher_config.job_limit)
        self.server_job: str | None = None
        self.server_address = ""  # the server's rendezvous address, once it started
        self.server_key: str | None = None  # rank 0's CURVE public key (server_config.encryption)
        self.server_restarts: list[str] = []  # why the server was restarted, each time
        self.channel: ServerChannel | None = None
        self.running: dict[int, _Running] = {}
        self.stopping: set[str] = set()  # cancelled client jobs not ended yet (they hold slots)
        self.server_status: dict[str, object] = {}
        self.last_heard = time.monotonic()  # the latest event from the server
        self.last_status = -math.inf  # the latest status event: what the server knew then
        self.board = StatusBoard()  # what the status API serves (melissa-monitor)
        self.phase = "starting"
        self.started = time.monotonic()

    # -- set-up --------------------------------------------------------------------------------
    def prepare(self, overwrite: bool) -> None:
        root = self.paths.root
        if self.paths.state_db.exists():
            if not overwrite:
                raise StudyError(
                    f"output_dir {root} already holds a study (study.db): pass --resume to "
                    "continue it, --overwrite to replace it, or set another output_dir"
                )
            self.paths.remove_study()
        elif root.exists() and any(root.iterdir()):
            raise StudyError(
                f"output_dir {root} exists and is not empty: choose another output_dir"
            )
        self.paths.make_dirs()
        self._log_to_file()
        # Read again: a replaced study's job_limit file is gone, its limit must be too.
        self.job_limit = JobLimitControl(self.paths.job_limit,
                                         self.config.launcher_config.job_limit)

        study_json = self.config.model_dump(mode="json")
        study_json["output_dir"] = str(root)
        tmp = self.paths.study_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(study_json, indent=2))
        os.replace(tmp, self.paths.study_file)

        self.sampler = self._new_sampler()
        breeding = self.config.sampling.method == "breed"
        draws: Sequence[Sequence[float]] = self.sampler.draw(
            0 if breeding else self.config.study_options.parameter_sweep_size).tolist()
        self.store = StateStore(self.paths.state_db)
        self.store.init_study(self.token_hex, json.dumps(study_json), self.sampler.names,
                              str(self.loaded.path.resolve()))
        self.store.set_groups_drawn(self.sampler.drawn)
        if breeding:  # the first generation now, the others as the fitness comes in
            self.breeder = Breeder(self.config, self.paths.state_db)
            draws = [row for _, row in self.breeder.first_generation()]
        self.store.add_simulations([(i, tuple(row)) for i, row in enumerate(draws)])
        log.info("study prepared in %s: %d simulations", root, len(draws))

    def resume(self) -> bool:
        """Continue the study of output_dir from its study.db: same token, same draws; the jobs
        an earlier launcher left are stopped, their simulations submitted again. False if the
        study had already finished."""
        if not self.paths.state_db.is_file():
            raise StudyError(f"no study to resume in {self.paths.root} (no study.db): "
                             "start it without --resume")
        self.store = StateStore(self.paths.state_db)
        info = self.store.study()
        if info["status"] == _FINISHED:
            return False
        self._check_same_study(json.loads(info["config_json"]))
        self._log_to_file()
        self.token_hex = info["token_hex"]
        self.sampler = self._new_sampler()
        self.sampler.draw(info["groups_drawn"])  # what was drawn already, to continue after it
        if self.config.sampling.method == "breed":
            self.breeder = Breeder(self.config, self.paths.state_db)
            self.breeder.recover(self.store)
        self._stop_earlier_jobs(info["server_job"])
        counts = self.store.counts()
        log.info("study in %s resumed: %d simulations completed, %d to run", self.paths.root,
                 counts[SimulationStatus.COMPLETED], counts[SimulationStatus.PENDING])
        return True

    def _check_same_study(self, stored: dict[str, Any]) -> None:
        """Only launcher_config may change between a study's start and its resume."""
        current = self.config.model_dump(mode="json")
        changed = sorted(key for key in stored.keys() | current.keys()
                         if key not in ("launcher_config", "output_dir")
                         and stored.get(key) != current.get(key))
        if changed:
            raise StudyError(
                f"this config differs from the study in {self.paths.root} in "
                f"{', '.join(changed)}: resume with the config that started it (only "
                "launcher_config may change)"
            )

    def _stop_earlier_jobs(self, server_job: str | None) -> None:
        """Stop what the dead launcher left running: the server (it checkpoints on SIGTERM; the
        new one restores that checkpoint) and the simulations, which talked to it. They stay
        running in study.db until the new server said which of them it holds complete."""
        assert self.store is not None
        running = self.store.simulations(SimulationStatus.RUNNING)
        clients = [r.job_id for r in running if r.job_id is not None]
        followed = self.scheduler.adopt([*clients, *([server_job] if server_job else [])],
                                        self.token_hex)
        self.scheduler.cancel(followed)
        if server_job in followed:
            self._wait_ended([server_job])
        self.stopping.update(job for job in followed if job != server_job)
        self.paths.rendezvous.unlink(missing_ok=True)

    def _new_sampler(self) -> Sampler:
        size = self.config.study_options.parameter_sweep_size
        # Breeding draws its own points; redraws after failures are random.
        sampling = (self.config.sampling.model_copy(update={"method": "random"})
                    if self.config.sampling.method == "breed" else self.config.sampling)
        return Sampler(self.config.parameters, sampling,
                       self.config.study_options.seed, planned_size=size,
                       pick_freeze=self.config.group_size > 1)

    def _log_to_file(self) -> None:
        handler = logging.FileHandler(self.paths.launcher_log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logging.getLogger("melissa").addHandler(handler)
        logging.getLogger("melissa").setLevel(logging.INFO)

    # -- server --------------------------------------------------------------------------------
    def start_server(self) -> None:
        assert self.store is not None
        env = _job_environment(MELISSA_STUDY_TOKEN=self.token_hex)
        spec = JobSpec(
            name="server",
            argv=[sys.executable, "-m", "melissa.server", str(self.paths.root)],
            env=env,
            cwd=self.loaded.base_dir,
            log_path=self.paths.server_log,
            ranks=self.config.server_config.ranks,
            scheduler_args=tuple(self.config.launcher_config.scheduler_arg_server),
        )
        self.server_job = self.scheduler.submit(spec)
        self.store.set_server_job(self.server_job)
        timeout = self.config.launcher_config.server_timeout
        rendezvous = self._wait_rendezvous(timeout)
        address = str(rendezvous["address"])
        key = rendezvous.get("public_key")
        # A restarted server has a new keypair: later submissions get the new key.
        self.server_key = None if key is None else str(key)
        self.channel = ServerChannel(address, token_from_hex(self.token_hex), self.server_key)
        events = self.channel.attach(timeout)
        self.last_heard = time.monotonic()
        log.info("server job %s ready at %s", self.server_job, address)
        self.server_address = address
        restored = [e for e in events if e.get("event") == "restored"]
        self._align_with_server(restored[0] if restored else None)
        self._on_events([e for e in events if e.get("event") != "restored"])

    def _align_with_server(self, restored: dict[str, Any] | None) -> None:
        """After the server started (None: without a checkpoint), what it holds complete is
        completed; any other simulation runs again, be it completed here (the checkpoint is
        older than its completion), or running without a job here (stopped by the restart)."""
        assert self.store is not None
        complete = {int(s) for s in (restored or {}).get("complete", [])}
        if restored is not None:
            log.info("the server restored checkpoint %s: %d simulations complete",
                     restored.get("checkpoint"), len(complete))
        for record in self.store.simulations():
            sim = record.simulation_id
            if sim in complete:
                self._completed(sim)
            elif record.status == SimulationStatus.COMPLETED:
                self._requeue(sim, "completed, but the restarted server lost its data (its "
                              "checkpoint is older), resubmitted", failed=False)
            elif record.status == SimulationStatus.RUNNING and sim not in self.running:
                self._requeue(sim, "stopped, the server was restarted", failed=False)

    def _wait_rendezvous(self, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._check_server_alive().state == JobState.PENDING:
                deadline = time.monotonic() + timeout_s  # time in the scheduler's queue is free
            self.publish_status()
            try:
                rendezvous = json.loads(self.paths.rendezvous.read_text())
                if "address" in rendezvous:
                    return dict(rendezvous)
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise StudyError(
            f"the server did not start within {timeout_s:g} s of its job starting "
            "(launcher_config.server_timeout); "
            f"see {self.paths.server_log}"
        )

    def _check_server_alive(self) -> JobStatus:
        assert self.server_job is not None
        status = self.scheduler.poll([self.server_job])[self.server_job]
        if status.state.is_final:
            raise StudyError(
                f"the server stopped ({_describe(status)}) before the study finished; "
                f"see {self.paths.server_log}"
            )
        return status

    def watch_server(self) -> None:
        """Restart a server whose job ended or that has sent nothing for server_timeout (it
        sends a status event every second)."""
        assert self.server_job is not None
        status = self.scheduler.poll([self.server_job])[self.server_job]
        silent = time.monotonic() - self.last_heard
        timeout = self.config.launcher_config.server_timeout
        if status.state.is_final:
            self.restart_server(f"the server stopped ({_describe(status)})")
        elif silent > timeout:
            self.restart_server(f"the server sent nothing for {silent:.0f} s "
                                "(launcher_config.server_timeout)")

    def restart_server(self, reason: str) -> None:
        """Stop the server and every simulation, then start a server that restores its latest
        checkpoint; the simulations it does not hold complete are submitted again. Raises
        StudyError past launcher_config.max_restarts."""
        limit = self.config.launcher_config.max_restarts
        while True:
            self.server_restarts.append(reason)
            if len(self.server_restarts) > limit:
                raise StudyError(
                    f"{reason}, and it was restarted {limit} times already "
                    f"(launcher_config.max_restarts); see {self.paths.server_log}"
                )
            log.warning("%s: restarting it (restart %d of at most %d)", reason,
                        len(self.server_restarts), limit)
            self._stop_server()
            for sim in list(self.running):  # they talked to the old server
                self._cancel(sim)
            try:
                self.start_server()
            except StudyError as exc:  # it did not come up: that is one more restart
                reason = str(exc)
                continue
            return

    def _stop_server(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.server_job is not None:
            self.scheduler.cancel([self.server_job])  # SIGTERM: it writes a checkpoint
            self._wait_ended([self.server_job])
        self.paths.rendezvous.unlink(missing_ok=True)  # the next server writes its own

    def _wait_ended(self, job_ids: Sequence[str]) -> None:
        """Wait until the cancelled jobs ended (a server's checkpoint is complete then, and no
        two servers ever write checkpoints at once), at most max(server_timeout, 60 s)."""
        patience = max(self.config.launcher_config.server_timeout, 60.0)
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            if all(s.state.is_final for s in self.scheduler.poll(job_ids).values()):
                return
            time.sleep(0.1)
        log.warning("jobs %s were cancelled but had not ended after %g s", ", ".join(job_ids),
                    patience)

    # -- simulations ---------------------------------------------------------------------------
    def client_spec(self, record: SimulationRecord) -> JobSpec:
        cfg = self.config.client_config
        params = [repr(float(v)) for v in record.parameters]
        command = shlex.split(cfg.executable_command) + params
        if cfg.preprocessing_commands:
            script = " && ".join([*cfg.preprocessing_commands, "exec " + shlex.join(command)])
            command = ["/bin/sh", "-c", script]
        env = _job_environment(**cfg.environment)
        names = self.store.study()["parameter_names"] if self.store else []
        env.update(
            MELISSA_SERVER=self.server_address,
            MELISSA_SIMULATION_ID=str(record.simulation_id),
            MELISSA_STUDY_TOKEN=self.token_hex,
            MELISSA_ATTEMPT=str(record.attempt),
            MELISSA_PARAMETERS=json.dumps(dict(zip(names, record.parameters))),
        )
        if self.server_key is not None:
            env["MELISSA_SERVER_KEY"] = self.server_key
        return JobSpec(
            name=f"simulation_{record.simulation_id:06d}",
            argv=command,
            env=env,
            cwd=self.loaded.base_dir,
            log_path=self.paths.simulation_log(record.simulation_id),
            ranks=cfg.ranks,
            scheduler_args=tuple(self.config.launcher_config.scheduler_arg_client),
        )

    def submit_pending(self) -> None:
        assert self.store is not None
        # Cancelled jobs hold their slot until they ended: the limit counts what runs.
        free = self.job_limit.limit - len(self.running) - len(self.stopping)
        if free <= 0:
            return
        for record in self._next_submissions(free):
            try:
                job_id = self.scheduler.submit(self.client_spec(record))
            except SubmissionError as exc:  # a refused job is refused again: no resubmission
                self._give_up(record.simulation_id, None, str(exc))
                continue
            self.store.mark_running(record.simulation_id, job_id)
            self.running[record.simulation_id] = _Running(job_id, time.monotonic())
            log.info("simulation %d (attempt %d) submitted as job %s", record.simulation_id,
                     record.attempt, job_id)

    def _next_submissions(self, free: int) -> list[SimulationRecord]:
        """Pending simulations to submit in `free` slots, by id. The members of a Sobol' group go
        together: a group is submitted when all its pending members fit (so the server joins
        them while they run, holding little), or member by member when the group is larger
        than job_limit."""
        assert self.store is not None
        pending = self.store.simulations(SimulationStatus.PENDING)
        size = self.config.group_size
        if size == 1:
            return pending[:free]
        whole_groups = self.job_limit.limit >= size
        chosen: list[SimulationRecord] = []
        for _, members in itertools.groupby(pending, key=lambda r: r.simulation_id // size):
            group = list(members)
            if len(chosen) + len(group) > free:
                if not whole_groups:
                    chosen += group[: free - len(chosen)]
                break
            chosen += group
        return chosen

    def apply_job_limit(self) -> None:
        """Take a new job_limit (status API or file); above a lowered limit, the newest jobs are
        preempted (back to pending, not a failure: the server drops what it already holds)."""
        change = self.job_limit.poll()
        if change is None:
            return
        limit, source = change
        log.info("job_limit is now %d (from %s)", limit, source)
        # Jobs whose data is all in go first (nothing is lost), then the newest.
        newest_first = sorted(self.running.items(),
                              key=lambda item: (not item[1].complete, -item[1].started))
        for sim, run in newest_first[: max(0, len(self.running) - limit)]:
            self._cancel(sim)
            if not run.complete:
                self._requeue(sim, f"preempted (job_limit lowered to {limit})", failed=False)

    def _cancel(self, sim: int) -> None:
        run = self.running.pop(sim)
        self.scheduler.cancel([run.job_id])
        self.stopping.add(run.job_id)

    def _requeue(self, sim: int, why: str, *, failed: bool, exit_code: int | None = None) -> None:
        assert self.store is not None
        attempt = self.store.simulation(sim).attempt
        self.store.requeue(sim, f"attempt {attempt}: {why}", failed=failed, exit_code=exit_code)
        log.log(logging.WARNING if failed else logging.INFO, "simulation %d attempt %d: %s",
                sim, attempt, why)

    def _give_up(self, sim: int, exit_code: int | None, message: str) -> None:
        """The simulation failed for good: recorded, and the server told to drop it."""
        assert self.store is not None
        self.running.pop(sim, None)
        self.store.mark_finished(sim, SimulationStatus.FAILED, exit_code, message)
        log.warning("simulation %d failed: %s", sim, message)
        if self.channel is not None:
            self.channel.abandon([sim])

    def simulation_failed(self, sim: int, exit_code: int | None, reason: str) -> None:
        """An attempt failed (its job ended or was cancelled): resubmit the simulation, redraw
        its parameters after crashes_before_redraw resubmissions, or give up."""
        assert self.store is not None
        self.running.pop(sim, None)
        record = self.store.simulation(sim)
        if not self.config.launcher_config.fault_tolerance:
            self._give_up(sim, exit_code, reason)
        elif record.failures < self.config.study_options.crashes_before_redraw:
            self._requeue(sim, f"{reason}, resubmitted", failed=True, exit_code=exit_code)
        else:
            self._redraw(record, f"attempt {record.attempt}: {reason}", exit_code)

    def _redraw(self, record: SimulationRecord, note: str, exit_code: int | None) -> None:
        """Replace the simulation (for Sobol' indices, its whole group) by new parameters from
        the same sequence, under new ids: the server may hold part of the old ones' data."""
        assert self.store is not None and self.sampler is not None
        sim, size = record.simulation_id, self.config.group_size
        failures = record.failures + 1
        sweep = self.config.study_options.parameter_sweep_size
        if self.sampler.drawn - sweep >= sweep:
            self._give_up(sim, exit_code, f"{note}; failed {failures} times, not redrawn: the "
                          f"study already redrew {sweep} groups (parameter_sweep_size)")
            return
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
        if self.channel is not None:
            self.channel.abandon(sorted(replaced))

    # -- events from the server ----------------------------------------------------------------
    def handle_events(self, timeout_s: float) -> None:
        assert self.channel is not None
        events = self.channel.wait(timeout_s)
        if events:
            self.last_heard = time.monotonic()
        self._on_events(events)

    def _on_events(self, events: Sequence[dict[str, Any]]) -> None:
        for event in events:
            kind = event.get("event")
            if kind == "simulation_complete":
                self._completed(int(event["simulation_id"]))
            elif kind == "fitness" and self.breeder is not None:
                self.breeder.on_fitness(int(event["simulation_id"]), float(event["fitness"]))
            elif kind == "simulation_silent":
                self._silent(int(event["simulation_id"]), float(event.get("silent_s", 0.0)))
            elif kind == "status":
                self.server_status = event
                self.last_status = time.monotonic()
                known = event.get("chunks_received") or {}
                for sim, run in self.running.items():
                    run.seen = run.seen or str(sim) in known

    def _completed(self, sim: int) -> None:
        assert self.store is not None
        record = self.store.simulation(sim)
        if record.status == SimulationStatus.COMPLETED:
            return
        if record.status == SimulationStatus.REDRAWN:  # its data came in after all
            log.warning("simulation %d completed after it was redrawn", sim)
        self.store.mark_finished(sim, SimulationStatus.COMPLETED, None,
                                 record.message if record.status == SimulationStatus.REDRAWN
                                 else "")
        log.info("simulation %d completed", sim)
        if sim in self.running:  # its job still counts against job_limit until it exits
            self.running[sim].complete = True
            self.running[sim].seen = True

    def _silent(self, sim: int, silent_s: float) -> None:
        """The server heard nothing of the simulation for simulation_timeout: hung."""
        run = self.running.get(sim)
        timeout = self.config.study_options.simulation_timeout
        # A silence longer than this job has been running began with an earlier attempt.
        if run is None or run.complete or run.queued or time.monotonic() - run.started < timeout:
            return
        self._cancel(sim)
        self.simulation_failed(sim, None, f"sent nothing for {silent_s:.0f} s "
                               "(study_options.simulation_timeout), cancelled")

    # -- jobs ----------------------------------------------------------------------------------
    def poll_jobs(self) -> None:
        assert self.store is not None
        now = time.monotonic()
        ids = [r.job_id for r in self.running.values()] + sorted(self.stopping)
        statuses = self.scheduler.poll(ids) if ids else {}
        self.stopping = {j for j in self.stopping if not statuses[j].state.is_final}
        timeout = self.config.study_options.simulation_timeout
        for sim, run in list(self.running.items()):
            if sim not in self.running:  # cancelled meanwhile with its redrawn group
                continue
            status = statuses[run.job_id]
            if status.state == JobState.PENDING:
                run.started = now  # simulation_timeout counts from the job's start
            else:
                run.queued = False
            if run.complete and status.state.is_final:
                del self.running[sim]
                message = "" if status.state == JobState.COMPLETED else (
                    f"{_describe(status)} after sending all its data")
                self.store.mark_finished(sim, SimulationStatus.COMPLETED, status.exit_code,
                                         message)
            elif status.state == JobState.COMPLETED:
                if run.exited_at is None:
                    run.exited_at = now
                elif now - run.exited_at > _COMPLETION_GRACE_S:
                    self.simulation_failed(
                        sim, status.exit_code,
                        "exited with status 0 but the server did not receive all its data "
                        "(melissa.finalize() not called?)",
                    )
            elif status.state in (JobState.FAILED, JobState.CANCELLED):
                self.simulation_failed(sim, status.exit_code, _describe(status))
            # Judged on what the server said since: a frozen server is not the client's fault.
            elif not run.seen and not run.queued and self.last_status - run.started > timeout:
                self._cancel(sim)
                self.simulation_failed(
                    sim, None, f"did not reach the server within {timeout:g} s of starting "
                    "(study_options.simulation_timeout), cancelled")

    # -- main loop -----------------------------------------------------------------------------
    def run(self, display: StudyDisplay) -> StudyOutcome:
        assert self.store is not None
        self.start_server()
        self.phase = "running"
        interval = self.config.launcher_config.poll_interval
        next_report = time.monotonic() + _REPORT_PERIOD_S
        while True:
            self.apply_job_limit()
            self.submit_pending()
            self.handle_events(interval)
            self.poll_jobs()
            self.watch_server()
            counts = self.store.counts()
            display.update(counts, self.server_status,
                           sum(counts.values()) - counts[SimulationStatus.REDRAWN])
            self.publish_status()
            if time.monotonic() > next_report:
                self.write_report()  # a user can follow the study in parameters.csv
                next_report = time.monotonic() + _REPORT_PERIOD_S
            if self.breeder is not None and self.breeder.step(self.store):
                continue  # a new generation to submit
            if counts[SimulationStatus.PENDING] == 0 and not self.running and (
                    self.breeder is None or self.breeder.done):
                break
        return self.finish()

    def finish(self) -> StudyOutcome:
        assert self.store is not None and self.channel is not None
        self.channel.finish()
        self.phase = "finishing"
        self.publish_status(force=True)
        results: list[Path] = []
        patience = max(self.config.launcher_config.server_timeout, 60.0)
        deadline = time.monotonic() + patience
        written = False
        while not written:
            if time.monotonic() > deadline:
                raise StudyError(f"the server did not write its results; see {self.paths.server_log}")
            for event in self.channel.wait(0.5):
                if event.get("event") == "results_written":
                    results = [Path(f) for f in event.get("files", [])]
                    written = True
                elif event.get("event") == "status":
                    self.server_status = event
                    # A server still working (a surrogate training on its buffer) gets more time.
                    deadline = max(deadline, time.monotonic() + patience)
                else:
                    self._on_events([event])  # e.g. the last generation's fitness
            if not written:
                self._check_server_alive()
        self._wait_server_exit(deadline)
        self.store.set_study_status(_FINISHED)
        counts = self.store.counts()
        self.write_report()
        plots = [self.breeder.plot(self.paths.root / "breed.png")] if self.breeder else []
        return StudyOutcome(
            counts[SimulationStatus.COMPLETED], counts[SimulationStatus.FAILED], results, plots
        )

    def _wait_server_exit(self, deadline: float) -> None:
        assert self.server_job is not None
        while time.monotonic() < deadline:
            status = self.scheduler.poll([self.server_job])[self.server_job]
            if status.state == JobState.COMPLETED:
                return
            if status.state in (JobState.FAILED, JobState.CANCELLED):
                raise StudyError(
                    f"the server failed while finishing ({_describe(status)}); "
                    f"see {self.paths.server_log}"
                )
            time.sleep(0.05)
        raise StudyError(f"the server did not exit after writing results; see {self.paths.server_log}")

    def publish_status(self, force: bool = False) -> None:
        """Give the status API a fresh snapshot (at most once a second unless forced)."""
        if self.store is None or not (force or self.board.due()):
            return
        now = time.monotonic()
        cfg = self.config
        chunks = (len(cfg.study_options.field_names) * cfg.study_options.nb_time_steps
                  * max(cfg.client_config.ranks, cfg.server_config.ranks))
        server_state = "" if self.server_job is None else (
            self.scheduler.poll([self.server_job])[self.server_job].state.value)
        self.board.publish(build_snapshot(
            output_dir=self.paths.root,
            scheduler=self.scheduler.name,
            state=self.phase,
            elapsed_s=now - self.started,
            job_limit=self.job_limit.limit,
            records=self.store.simulations(),
            running=[RunningJob(sim, run.job_id, run.queued, now - run.started)
                     for sim, run in self.running.items() if not run.complete],
            server_job={"job_id": self.server_job, "state": server_state,
                        "address": self.server_address or None,
                        "restarts": len(self.server_restarts)},
            server=self.server_status,
            chunks_expected=chunks,
            recent_mb_s=self.board.recent_rate(self.server_status),
            log_of=self.paths.simulation_log,
        ))

    def write_report(self) -> None:
        assert self.store is not None
        write_parameters_csv(
            self.paths.parameters_csv,
            self.store.study()["parameter_names"],
            self.store.simulations(),
            group_size=self.config.group_size,
            extra=(BREED_COLUMNS, self.breeder.columns()) if self.breeder else None,
        )

    def close(self) -> None:
        """Cancel whatever still runs (also on errors and Ctrl-C)."""
        self.scheduler.close()
        if self.channel is not None:
            self.channel.close()
        if self.store is not None:
            self.write_report()
            self.store.close()
        if self.breeder is not None:
            self.breeder.close()


def _job_environment(**extra: str) -> dict[str, str]:
    """The launcher's environment, with the directory of the interpreter running it first on
    PATH (so "python3 sim.py" and "mpiexec" are those of Melissa's installation)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra)
    return env


def _describe(status: JobStatus) -> str:
    if status.message:
        return status.message
    if status.exit_code is not None:
        return f"exit status {status.exit_code}"
    return status.state.value
