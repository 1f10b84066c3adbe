"""A real melissa-server process, started the way the launcher starts it, for tests that talk to
the server directly (malformed messages, compiled clients against a bare server, ...)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xarray as xr

from melissa.launcher.channel import ServerChannel
from melissa.paths import StudyPaths


@dataclass
class LiveServer:
    process: subprocess.Popen[bytes]
    paths: StudyPaths
    address: str
    token: bytes
    channel: ServerChannel  # attached, as the launcher's
    public_key: str | None = None  # server.json's, with server_config.encryption

    def env(self, sim: int, timeout: float = 20, **extra: str) -> dict[str, str]:
        """The environment the launcher gives simulation `sim`."""
        key = {"MELISSA_SERVER_KEY": self.public_key} if self.public_key else {}
        return {**os.environ, "MELISSA_SERVER": self.address,
                "MELISSA_SIMULATION_ID": str(sim), "MELISSA_STUDY_TOKEN": self.token.hex(),
                "MELISSA_TIMEOUT": str(timeout), **key, **extra}

    def finish(self) -> str:
        """FINISH as the launcher sends it; returns the server's log once it exited 0."""
        self.channel.finish()
        assert self.process.wait(timeout=60) == 0, self.paths.server_log.read_text()
        self.channel.close()
        return self.paths.server_log.read_text()

    def results(self, field: str) -> xr.Dataset:
        return xr.open_dataset(self.paths.field_results(field))


@contextmanager
def live_server(root: Path, field: str, steps: int, sa_config: dict[str, Any],
                server_config: dict[str, Any] | None = None) -> Iterator[LiveServer]:
    paths = StudyPaths(root)
    paths.make_dirs()
    paths.study_file.write_text(json.dumps({
        "output_dir": str(paths.root),
        "study_options": {"field_names": [field], "nb_time_steps": steps,
                          "parameter_sweep_size": 100},
        "parameters": [{"name": "p", "distribution": "uniform", "low": 0, "high": 1}],
        "sa_config": sa_config,
        "client_config": {"executable_command": "unused"},
        "server_config": server_config or {},
    }))
    token = secrets.token_bytes(16)
    with open(paths.server_log, "w") as log:
        ranks = int((server_config or {}).get("ranks", 1))
        # Several ranks: the venv's mpiexec (the mpich wheel), as the local scheduler starts it.
        mpi = [str(Path(sys.executable).parent / "mpiexec"), "-n", str(ranks)] if ranks > 1 else []
        proc = subprocess.Popen([*mpi, sys.executable, "-m", "melissa.server", str(paths.root)],
                                env={**os.environ, "MELISSA_STUDY_TOKEN": token.hex()},
                                stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not paths.rendezvous.exists():
            assert proc.poll() is None and time.monotonic() < deadline, \
                paths.server_log.read_text()
            time.sleep(0.02)
        rendezvous = json.loads(paths.rendezvous.read_text())
        address, public_key = rendezvous["address"], rendezvous.get("public_key")
        channel = ServerChannel(address, token, public_key)
        channel.attach(10)
        yield LiveServer(proc, paths, address, token, channel, public_key)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # mpiexec's ranks with it
        proc.wait()
