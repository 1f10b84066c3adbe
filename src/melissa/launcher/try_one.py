"""`melissa-launcher --try-one -c config.json [--parameters V ...]`: run one simulation against a
throwaway server with the study's config, and say what arrived and what went wrong, before
launching the whole ensemble. Nothing is written to output_dir.

The throwaway server is the real receive loop (same handshake, same checks of field names,
sizes, time steps and ranks) in a thread of this process, recording what it accepts instead of
computing statistics; the simulation runs on this machine (mpiexec for client_config.ranks > 1),
whatever launcher_config.scheduler says.
"""

from __future__ import annotations

import math
import secrets
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from melissa.config import LoadedConfig, StudyConfig
from melissa.errors import ConfigError
from melissa.launcher.client_job import ClientJobs
from melissa.launcher.schedulers import make_scheduler
from melissa.launcher.schedulers.base import JobState, JobStatus, Scheduler
from melissa.launcher.schedulers.local import LocalScheduler
from melissa.launcher.simlog import command_line, last_lines
from melissa.paths import StudyPaths
from melissa.protocol import token_from_hex
from melissa.sampling import Sampler
from melissa.server.base import Server
from melissa.server.launcher_watch import LauncherWatch
from melissa.server.registry import FieldInfo

_COMPLETION_GRACE_S = 5.0  # after exit 0, for the END to be handled
_SIMULATION_ID = 0


@dataclass
class FieldSeen:
    name: str
    global_size: int
    shape: tuple[int, ...] | None
    steps: set[int] = field(default_factory=set)
    dtypes: set[str] = field(default_factory=set)
    nbytes: int = 0


class ProbeServer(Server):
    """The base server's receive loop, recording what the one simulation sends."""

    def __init__(self, config: StudyConfig, paths: StudyPaths, token: bytes) -> None:
        super().__init__(config, paths, token)
        self.checkpointing = False
        self.launcher_watch = LauncherWatch(math.inf, 0.0)  # no launcher attaches
        self.fields_seen: dict[str, FieldSeen] = {}
        self.first_message: float | None = None  # time.monotonic()
        self.last_message: float | None = None
        self.refusals: list[str] = []

    def on_hello(self, simulation_id: int, body: dict[str, Any]) -> None:
        self._heard()

    def on_field(self, info: FieldInfo) -> None:
        self.fields_seen[info.name] = FieldSeen(info.name, info.global_size, info.shape)

    def on_data(self, info: FieldInfo, simulation_id: int, time_step: int, local_start: int,
                data: np.ndarray) -> None:
        self._heard()
        seen = self.fields_seen[info.name]
        seen.steps.add(time_step)
        seen.dtypes.add(str(data.dtype))
        seen.nbytes += data.nbytes

    def on_refused(self, simulation_id: int, attempt: int, reason: str) -> None:
        self._heard()
        if len(self.refusals) < 5:
            self.refusals.append(reason)

    def _heard(self) -> None:
        self.last_message = time.monotonic()
        if self.first_message is None:
            self.first_message = self.last_message

    @property
    def complete(self) -> bool:
        sim = self.registry.simulations.get(_SIMULATION_ID)
        return sim is not None and sim.complete


@dataclass
class Attempt:
    status: JobStatus
    started: float
    ended: float
    hung: bool  # cancelled after simulation_timeout without a message


def first_parameters(config: StudyConfig) -> list[float]:
    """The design's first parameter set (simulation 0's)."""
    size = config.study_options.parameter_sweep_size
    sampler = Sampler(config.parameters, config.sampling, config.study_options.seed,
                      planned_size=size, pick_freeze=config.group_size > 1,
                      second_order=config.sa_config is not None
                      and config.sa_config.second_order)
    return [float(v) for v in sampler.draw(1)[0]]


def try_one(loaded: LoadedConfig, values: Sequence[float] | None, console: Console) -> int:
    """Run one simulation and report; 0 if everything the study expects arrived."""
    config = loaded.config
    names = [p.name for p in config.parameters]
    if values is None:
        values, origin = first_parameters(config), "the design's first parameters"
    elif len(values) != len(names):
        raise ConfigError(f"--parameters gives {len(values)} values, the study has "
                          f"{len(names)} parameters ({', '.join(names)})")
    else:
        origin = "from --parameters"
    probe_config = config.model_copy(update={
        "server_config": config.server_config.model_copy(update={"port": 0})})
    token_hex = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="melissa-try-one-") as tmp:
        paths = StudyPaths(Path(tmp))
        server = ProbeServer(probe_config, paths, token_from_hex(token_hex))
        address = server.bind()
        thread = threading.Thread(target=server.run, name="melissa-try-one-server", daemon=True)
        thread.start()
        public_key = server.transport.public_key
        key = None if public_key is None else public_key.decode()
        spec = ClientJobs(loaded, names).spec(_SIMULATION_ID, 0, values, address, token_hex, key,
                                              paths.simulation_log(_SIMULATION_ID))
        shown = ", ".join(f"{n}={v:.6g}" for n, v in zip(names, values))
        console.print(f"Trying one simulation ({shown}, {origin}):", soft_wrap=True,
                      highlight=False)
        console.print(f"  command: {command_line(spec.argv, spec.cwd)}", soft_wrap=True,
                      highlight=False, markup=False)
        scheduler = _scheduler(loaded, paths)
        try:
            attempt = _run(scheduler, scheduler.submit(spec), server,
                           config.study_options.simulation_timeout)
        finally:
            scheduler.close()
            server.stop("--try-one is done")
            thread.join(timeout=10)
        output = last_lines(spec.log_path, 10)
    problems = _report(console, config, server, attempt)
    if problems:
        if output:
            console.print("  its last lines of output:", highlight=False)
            for line in output:
                console.print(f"    | {line}", soft_wrap=True, highlight=False, markup=False)
        for problem in problems:
            console.print(f"[red]problem:[/red] {problem}", soft_wrap=True, highlight=False)
        return 1
    console.print("[green]OK[/green]: this simulation sends what the study expects.",
                  highlight=False)
    return 0


def _scheduler(loaded: LoadedConfig, paths: StudyPaths) -> Scheduler:
    launcher = loaded.config.launcher_config
    if launcher.scheduler in ("local", "openmpi"):
        return make_scheduler(launcher, paths)
    return LocalScheduler(mpi_launcher=["mpiexec", "-n", "{ranks}"])  # not a batch job


def _run(scheduler: Scheduler, job: str, server: ProbeServer, timeout_s: float) -> Attempt:
    started = time.monotonic()
    hung = False
    while True:
        status = scheduler.poll([job])[job]
        now = time.monotonic()
        if status.state.is_final:
            break
        if not hung and now - (server.last_message or started) > timeout_s:
            hung = True  # like a study: silent for simulation_timeout
            scheduler.cancel([job])
        time.sleep(0.05)
    ended = time.monotonic()
    grace = ended + _COMPLETION_GRACE_S
    while status.state == JobState.COMPLETED and not server.complete and time.monotonic() < grace:
        time.sleep(0.05)
    return Attempt(status, started, ended, hung)


def _report(console: Console, config: StudyConfig, server: ProbeServer,
            attempt: Attempt) -> list[str]:
    """Print what arrived; return what is wrong (nothing: the simulation is fine)."""
    status, run_s = attempt.status, attempt.ended - attempt.started
    how = "exited with status 0" if status.state == JobState.COMPLETED else (
        status.message or f"exit status {status.exit_code}")
    console.print(f"  it {how} after {run_s:.2f} s", soft_wrap=True, highlight=False)
    if server.first_message is not None and server.last_message is not None:
        console.print(f"  first message {server.first_message - attempt.started:.2f} s after "
                      f"its start, last message after {server.last_message - attempt.started:.2f}"
                      " s", highlight=False)
    steps_expected = config.study_options.nb_time_steps
    for name, seen in server.fields_seen.items():
        shape = f", shape {seen.shape}" if seen.shape else ""
        dtypes = "/".join(sorted(seen.dtypes)) or "no data"
        console.print(f"  field {name}: {seen.global_size} cells{shape}, {dtypes}, "
                      f"{len(seen.steps)} of {steps_expected} time steps, "
                      f"{_size(seen.nbytes)}", soft_wrap=True, highlight=False)
    problems = [f"the server refused a message: {r}" for r in server.refusals]
    if attempt.hung:
        problems.append(f"it sent nothing for {config.study_options.simulation_timeout:g} s "
                        "(study_options.simulation_timeout) and was stopped")
    elif status.state != JobState.COMPLETED:
        problems.append(f"it {how}")
    if server.first_message is None:
        problems.append("nothing reached the server: does it call melissa.init() for each "
                        "field (and is the executable_command right)?")
        return problems
    for name in config.study_options.field_names:
        arrived = server.fields_seen.get(name)
        if arrived is None:
            problems.append(f"field {name!r} (study_options.field_names) was never "
                            "initialised (melissa.init)")
        elif len(arrived.steps) != steps_expected:
            problems.append(f"field {name!r}: {len(arrived.steps)} time steps arrived, "
                            f"study_options.nb_time_steps is {steps_expected}")
    if status.state == JobState.COMPLETED and not server.complete and not problems:
        problems.append("it exited with status 0 but never said it was done: call "
                        "melissa.finalize() at its end")
    return problems


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e6:.1f} MB" if nbytes >= 1e6 else f"{nbytes / 1e3:.1f} kB"
