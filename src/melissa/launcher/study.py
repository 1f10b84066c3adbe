"""The study state machine: start the server, submit simulations within job_limit, watch, finish.

The launcher owns the truth about jobs; the server owns the truth about data. A simulation is
COMPLETED only when the server said so (all its data arrived), whatever its exit code says.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import secrets
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from melissa.config import LoadedConfig
from melissa.errors import StudyError, SubmissionError
from melissa.launcher.channel import ServerChannel
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


@dataclass
class _Running:
    job_id: str
    started: float  # submission; then, while the scheduler queues the job, the latest poll
    complete: bool = False  # the server has all its data
    queued: bool = True  # the scheduler has not started the job yet
    exited_at: float | None = None  # exit 0 seen, completion event not yet


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
        self.token_hex = secrets.token_hex(16)
        self.server_job: str | None = None
        self.server_address = ""  # the server's rendezvous address, once it started
        self.channel: ServerChannel | None = None
        self.running: dict[int, _Running] = {}
        self.server_status: dict[str, object] = {}
        self.board = StatusBoard()  # what the status API serves (melissa-monitor)
        self.phase = "starting"
        self.started = time.monotonic()

    # -- set-up --------------------------------------------------------------------------------
    def prepare(self, overwrite: bool) -> None:
        root = self.paths.root
        if self.paths.state_db.exists():
            if not overwrite:
                raise StudyError(
                    f"output_dir {root} already holds a study (study.db): pass --overwrite to "
                    "replace it, or set another output_dir"
                )
            self.paths.remove_study()
        elif root.exists() and any(root.iterdir()):
            raise StudyError(
                f"output_dir {root} exists and is not empty: choose another output_dir"
            )
        self.paths.make_dirs()
        handler = logging.FileHandler(self.paths.launcher_log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logging.getLogger("melissa").addHandler(handler)
        logging.getLogger("melissa").setLevel(logging.INFO)

        study_json = self.config.model_dump(mode="json")
        study_json["output_dir"] = str(root)
        tmp = self.paths.study_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(study_json, indent=2))
        os.replace(tmp, self.paths.study_file)

        size = self.config.study_options.parameter_sweep_size
        sampler = Sampler(self.config.parameters, self.config.sampling,
                          self.config.study_options.seed, planned_size=size,
                          pick_freeze=self.config.group_size > 1)
        draws = sampler.draw(size)
        self.store = StateStore(self.paths.state_db)
        self.store.init_study(self.token_hex, json.dumps(study_json), sampler.names)
        self.store.add_simulations([(i, tuple(row)) for i, row in enumerate(draws)])
        log.info("study prepared in %s: %d simulations", root, len(draws))

    # -- server --------------------------------------------------------------------------------
    def start_server(self) -> None:
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
        address = self._wait_rendezvous(self.config.launcher_config.server_timeout)
        self.channel = ServerChannel(address, token_from_hex(self.token_hex))
        self.channel.attach(self.config.launcher_config.server_timeout)
        log.info("server job %s ready at %s", self.server_job, address)
        self.server_address = address

    def _wait_rendezvous(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._check_server_alive().state == JobState.PENDING:
                deadline = time.monotonic() + timeout_s  # time in the scheduler's queue is free
            self.publish_status()
            try:
                return str(json.loads(self.paths.rendezvous.read_text())["address"])
            except (OSError, ValueError, KeyError):
                time.sleep(0.05)
        raise StudyError(
            f"the server did not start within {timeout_s:g} s of its job starting "
            "(launcher_config.server_timeout); "
            f"see {self.paths.server_log}"
        )

    def _check_server_alive(self) -> JobStatus:
        assert self.server_job is not None
        status = self.scheduler.poll([self.server_job])[self.server_job]
        if status.state not in (JobState.PENDING, JobState.RUNNING):
            raise StudyError(
                f"the server stopped ({_describe(status)}) before the study finished; "
                f"see {self.paths.server_log}"
            )
        return status

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
        free = self.config.launcher_config.job_limit - len(self.running)
        if free <= 0:
            return
        for record in self._next_submissions(free):
            try:
                job_id = self.scheduler.submit(self.client_spec(record))
            except SubmissionError as exc:
                self.finish_simulation(record.simulation_id, SimulationStatus.FAILED, None, str(exc))
                continue
            self.store.mark_running(record.simulation_id, job_id)
            self.running[record.simulation_id] = _Running(job_id, time.monotonic())
            log.info("simulation %d submitted as job %s", record.simulation_id, job_id)

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
        whole_groups = self.config.launcher_config.job_limit >= size
        chosen: list[SimulationRecord] = []
        for _, members in itertools.groupby(pending, key=lambda r: r.simulation_id // size):
            group = list(members)
            if len(chosen) + len(group) > free:
                if not whole_groups:
                    chosen += group[: free - len(chosen)]
                break
            chosen += group
        return chosen

    def finish_simulation(
        self, sim: int, status: SimulationStatus, exit_code: int | None, message: str
    ) -> None:
        assert self.store is not None
        self.running.pop(sim, None)
        self.store.mark_finished(sim, status, exit_code, message)
        level = logging.INFO if status == SimulationStatus.COMPLETED else logging.WARNING
        log.log(level, "simulation %d %s%s", sim, status.value, f": {message}" if message else "")

    def handle_events(self, timeout_s: float) -> None:
        assert self.channel is not None
        for event in self.channel.wait(timeout_s):
            kind = event.get("event")
            if kind == "simulation_complete":
                sim = int(event["simulation_id"])
                assert self.store is not None
                self.store.mark_finished(sim, SimulationStatus.COMPLETED, None, "")
                log.info("simulation %d completed", sim)
                if sim in self.running:  # its job still counts against job_limit until it exits
                    self.running[sim].complete = True
            elif kind == "status":
                self.server_status = event

    def poll_jobs(self) -> None:
        assert self.store is not None
        now = time.monotonic()
        ids = [r.job_id for r in self.running.values()]
        statuses = self.scheduler.poll(ids) if ids else {}
        timeout = self.config.study_options.simulation_timeout
        for sim, run in list(self.running.items()):
            status = statuses.get(run.job_id)
            if status is None:
                continue
            if status.state == JobState.PENDING:
                run.started = now  # simulation_timeout counts from the job's start
            else:
                run.queued = False
            if run.complete and status.state not in (JobState.PENDING, JobState.RUNNING):
                del self.running[sim]
                message = "" if status.state == JobState.COMPLETED else (
                    f"{_describe(status)} after sending all its data")
                self.store.mark_finished(sim, SimulationStatus.COMPLETED, status.exit_code, message)
            elif status.state == JobState.COMPLETED:
                if run.exited_at is None:
                    run.exited_at = now
                elif now - run.exited_at > _COMPLETION_GRACE_S:
                    self.finish_simulation(
                        sim, SimulationStatus.FAILED, status.exit_code,
                        "exited with status 0 but the server did not receive all its data "
                        "(melissa.finalize() not called?)",
                    )
            elif status.state in (JobState.FAILED, JobState.CANCELLED):
                self.finish_simulation(sim, SimulationStatus.FAILED, status.exit_code,
                                       _describe(status))
            elif not run.complete and now - run.started > timeout:
                self.scheduler.cancel([run.job_id])
                self.finish_simulation(
                    sim, SimulationStatus.FAILED, None,
                    f"cancelled after {timeout:g} s (study_options.simulation_timeout)",
                )

    # -- main loop -----------------------------------------------------------------------------
    def run(self, display: StudyDisplay) -> StudyOutcome:
        assert self.store is not None
        self.start_server()
        self.phase = "running"
        interval = self.config.launcher_config.poll_interval
        total = self.config.nb_simulations
        next_report = time.monotonic() + _REPORT_PERIOD_S
        while True:
            self.submit_pending()
            self.handle_events(interval)
            self.poll_jobs()
            self._check_server_alive()
            counts = self.store.counts()
            display.update(counts, self.server_status, total)
            self.publish_status()
            if time.monotonic() > next_report:
                self.write_report()  # a user can follow the study in parameters.csv
                next_report = time.monotonic() + _REPORT_PERIOD_S
            if counts[SimulationStatus.PENDING] == 0 and not self.running:
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
            if not written:
                self._check_server_alive()
        self._wait_server_exit(deadline)
        counts = self.store.counts()
        self.write_report()
        return StudyOutcome(
            counts[SimulationStatus.COMPLETED], counts[SimulationStatus.FAILED], results
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
            records=self.store.simulations(),
            running=[RunningJob(sim, run.job_id, run.queued, now - run.started)
                     for sim, run in self.running.items() if not run.complete],
            server_job={"job_id": self.server_job, "state": server_state,
                        "address": self.server_address or None},
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
        )

    def close(self) -> None:
        """Cancel whatever still runs (also on errors and Ctrl-C)."""
        self.scheduler.close()
        if self.channel is not None:
            self.channel.close()
        if self.store is not None:
            self.write_report()
            self.store.close()


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
