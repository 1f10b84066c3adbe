"""The server's job through its life: submitted, found (server.json), attached (control channel),
watched, stopped for a restart, asked to finish.

`ServerJob` knows the scheduler, the study's paths and the control channel, nothing of the
simulations: `Study` decides what a restart means for them (launcher/policy.py says when).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from melissa.config import StudyConfig
from melissa.errors import StudyError
from melissa.launcher.channel import ServerChannel
from melissa.launcher.policy import describe
from melissa.launcher.schedulers.base import JobSpec, JobState, JobStatus, Scheduler
from melissa.paths import StudyPaths
from melissa.protocol import token_from_hex
from melissa.protocol.events import Event, Restored, ResultsWritten, ServerStatus

log = logging.getLogger("melissa.launcher")


class ServerJob:
    def __init__(self, scheduler: Scheduler, paths: StudyPaths, config: StudyConfig,
                 base_dir: Path, token_hex: str) -> None:
        self.scheduler = scheduler
        self.paths = paths
        self.config = config
        self.base_dir = base_dir  # the simulations' and the server's working directory
        self.token_hex = token_hex
        self.job_id: str | None = None
        self.address = ""  # the server's rendezvous address, once it started
        self.key: str | None = None  # rank 0's CURVE public key (server_config.encryption)
        self.channel: ServerChannel | None = None
        self.last_heard = time.monotonic()  # the latest event from the server

    @property
    def patience_s(self) -> float:
        """How long a stopping or finishing server is waited for."""
        return max(self.config.launcher_config.server_timeout, 60.0)

    def start(self, on_submitted: Callable[[str], None],
              idle: Callable[[], None]) -> tuple[Restored | None, list[Event]]:
        """Submit the server's job and attach to it once it wrote server.json. `on_submitted`
        gets the job id at once (study.db must know it before anything can go wrong), `idle`
        is called while waiting. Returns the "restored" event, if the server restored a
        checkpoint, and the events that followed its answer. StudyError if it did not come up
        within launcher_config.server_timeout of its job starting."""
        spec = JobSpec(
            name="server",
            argv=[sys.executable, "-m", "melissa.server", str(self.paths.root)],
            env=job_environment(MELISSA_STUDY_TOKEN=self.token_hex),
            cwd=self.base_dir,
            log_path=self.paths.server_log,
            ranks=self.config.server_config.ranks,
            scheduler_args=tuple(self.config.launcher_config.scheduler_arg_server),
        )
        self.job_id = self.scheduler.submit(spec)
        on_submitted(self.job_id)
        timeout = self.config.launcher_config.server_timeout
        rendezvous = self._wait_rendezvous(timeout, idle)
        address = str(rendezvous["address"])
        key = rendezvous.get("public_key")
        # A restarted server has a new keypair: later submissions get the new key.
        self.key = None if key is None else str(key)
        self.channel = ServerChannel(address, token_from_hex(self.token_hex), self.key)
        events = self.channel.attach(timeout)
        self.last_heard = time.monotonic()
        log.info("server job %s ready at %s", self.job_id, address)
        self.address = address
        restored = next((e for e in events if isinstance(e, Restored)), None)
        return restored, [e for e in events if not isinstance(e, Restored)]

    def _wait_rendezvous(self, timeout_s: float, idle: Callable[[], None]) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.check_alive().state == JobState.PENDING:
                deadline = time.monotonic() + timeout_s  # time in the scheduler's queue is free
            idle()
            try:
                rendezvous = json.loads(self.paths.rendezvous.read_text())
                if "address" in rendezvous:
                    return dict(rendezvous)
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        raise StudyError(
            f"the server did not start within {timeout_s:g} s of its job starting "
            "(launcher_config.server_timeout); "
            f"see {self.paths.server_log}"
        )

    def poll(self) -> JobStatus:
        assert self.job_id is not None
        return self.scheduler.poll([self.job_id])[self.job_id]

    def state(self) -> str:
        """The job's state in words, "" before it was submitted."""
        return "" if self.job_id is None else self.poll().state.value

    def check_alive(self) -> JobStatus:
        """The job's status; StudyError if it ended."""
        status = self.poll()
        if status.state.is_final:
            raise StudyError(
                f"the server stopped ({describe(status)}) before the study finished; "
                f"see {self.paths.server_log}"
            )
        return status

    def events(self, timeout_s: float) -> list[Event]:
        """The server's events within `timeout_s` (returns as soon as some arrived)."""
        assert self.channel is not None
        events = self.channel.wait(timeout_s)
        if events:
            self.last_heard = time.monotonic()
        return events

    def silent_s(self) -> float:
        return time.monotonic() - self.last_heard

    def abandon(self, simulations: Sequence[int]) -> None:
        """Tell the server to drop these simulations (nothing to tell while it restarts)."""
        if self.channel is not None:
            self.channel.abandon(simulations)

    def stop(self) -> None:
        """Stop the server (SIGTERM: it writes a checkpoint) and wait until its job ended."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.job_id is not None:
            self.scheduler.cancel([self.job_id])
            wait_ended(self.scheduler, [self.job_id], self.patience_s)
        self.paths.rendezvous.unlink(missing_ok=True)  # the next server writes its own

    def request_finish(self) -> None:
        """Tell the server no simulation is left: it writes its results and exits."""
        assert self.channel is not None
        self.channel.finish()

    def results(self, on_status: Callable[[ServerStatus], None]) -> list[Path]:
        """After `request_finish`: the files the server wrote, once its job ended. A server
        still working (a surrogate training on its buffer) gets more time while it sends
        status events, which go to `on_status`."""
        assert self.channel is not None
        deadline = time.monotonic() + self.patience_s
        while True:
            if time.monotonic() > deadline:
                raise StudyError(f"the server did not write its results; see {self.paths.server_log}")
            written: list[Path] | None = None
            for event in self.channel.wait(0.5):
                if isinstance(event, ResultsWritten):
                    written = [Path(f) for f in event.files]
                elif isinstance(event, ServerStatus):
                    on_status(event)
                    deadline = max(deadline, time.monotonic() + self.patience_s)
            if written is not None:
                self._wait_exit(deadline)
                return written
            self.check_alive()

    def _wait_exit(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            status = self.poll()
            if status.state == JobState.COMPLETED:
                return
            if status.state in (JobState.FAILED, JobState.CANCELLED):
                raise StudyError(
                    f"the server failed while finishing ({describe(status)}); "
                    f"see {self.paths.server_log}"
                )
            time.sleep(0.02)
        raise StudyError(f"the server did not exit after writing results; see {self.paths.server_log}")

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()


def wait_ended(scheduler: Scheduler, job_ids: Sequence[str], patience_s: float) -> None:
    """Wait until the cancelled jobs ended (a server's checkpoint is complete then, and no two
    servers ever write checkpoints at once), at most `patience_s`."""
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        if all(s.state.is_final for s in scheduler.poll(job_ids).values()):
            return
        time.sleep(0.1)
    log.warning("jobs %s were cancelled but had not ended after %g s", ", ".join(job_ids),
                patience_s)


def job_environment(**extra: str) -> dict[str, str]:
    """The launcher's environment, with the directory of the interpreter running it first on
    PATH (so "python3 sim.py" and "mpiexec" are those of Melissa's installation)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra)
    return env
