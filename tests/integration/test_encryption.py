"""server_config.encryption: ZeroMQ CURVE between the clients (Python and C), the server ranks and
the launcher's channel. A client without the server's key, or with a wrong one, fails the
handshake: it gets a clear error within MELISSA_TIMEOUT, and the server never sees its messages.
An eavesdropper on the wire sees the token and the values in plaintext studies only."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zmq

from tests.compiled import TEST_SOURCES, pkg_config, run_checked, system_tool
from tests.live_server import LiveServer, live_server

STEPS, CELLS = 3, 11
TIMEOUT_CODE = 6  # melissa.h MELISSA_ERR_TIMEOUT
PYTHON_CLIENT = f"""
import numpy as np, melissa.client as melissa
sim = int(__import__("os").environ["MELISSA_SIMULATION_ID"])
melissa.init("f", {CELLS})
for step in range({STEPS}):
    melissa.send("f", np.arange({CELLS}) + 1000.0 * step + 1e6 * sim)
melissa.finalize()
"""


def values(sim: int, step: int) -> np.ndarray:
    """What both clients send (tests/c/client_ops.c's formula)."""
    return np.arange(CELLS) + 1000.0 * step + 1e6 * sim


@pytest.fixture
def encrypted(tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(tmp_path / "out", "f", STEPS, {"mean": True, "variance": True},
                     {"encryption": True, "ranks": 2}) as srv:
        yield srv


def python_client(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PYTHON_CLIENT], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def c_client(tmp_path: Path) -> Path:
    exe = tmp_path / "client_ops"
    run_checked([system_tool("cc"), "-std=c99", *pkg_config("--cflags"),
                 str(TEST_SOURCES / "client_ops.c"), "-o", str(exe), *pkg_config("--libs")])
    return exe


def c_codes(exe: Path, env: dict[str, str]) -> list[int]:
    """The return codes of init, the sends (one line) and finalize."""
    out = run_checked([str(exe), f"init:f:{CELLS}", f"send:f:{STEPS}", "finalize"], env=env,
                      timeout=60)
    return [int(line.split()[1]) for line in out.splitlines()]


def test_encrypted_study(encrypted: LiveServer, tmp_path: Path) -> None:
    srv = encrypted
    assert srv.public_key is not None and len(srv.public_key) == 40  # channel attached with it
    exe = c_client(tmp_path)
    # Refused by the handshake, within MELISSA_TIMEOUT: no key, then another server's key.
    no_key = {k: v for k, v in srv.env(5, timeout=1).items() if k != "MELISSA_SERVER_KEY"}
    wrong_key = srv.env(6, timeout=1, MELISSA_SERVER_KEY=zmq.curve_keypair()[0].decode())
    for env in (no_key, wrong_key):
        started = time.monotonic()
        proc = python_client(env)
        assert proc.returncode != 0 and time.monotonic() - started < 10, proc.stderr
        assert "no answer from the Melissa server" in proc.stderr, proc.stderr
        assert "MELISSA_SERVER_KEY" in proc.stderr
        assert c_codes(exe, env)[0] == TIMEOUT_CODE
    bad = srv.env(7, MELISSA_SERVER_KEY="not a key")
    assert "MELISSA_SERVER_KEY must be a 40-character Z85" in python_client(bad).stderr
    assert c_codes(exe, bad)[0] != 0

    proc = python_client(srv.env(0))
    assert proc.returncode == 0, proc.stderr
    assert c_codes(exe, srv.env(1)) == [0] * 3  # WELCOME gave rank 1's key: N x M encrypted
    log = srv.finish()
    assert "dropped a message" not in log  # the refused clients never reached the server
    x = np.array([[values(sim, step) for step in range(STEPS)] for sim in (0, 1)])
    with xr.open_dataset(srv.paths.field_results("f")) as ds:
        assert (ds["count"].values == 2).all()
        np.testing.assert_allclose(ds["mean"].values, x.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(ds["variance"].values, x.var(axis=0, ddof=1), rtol=1e-12)


class Tap:
    """A TCP relay that records every byte between a client and the server (an eavesdropper)."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("tcp://").rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.seen = bytearray()
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    def pump(self, src: socket.socket, dst: socket.socket) -> None:
        while chunk := src.recv(65536):
            with self.lock:
                self.seen += chunk
            dst.sendall(chunk)
        dst.close()


@pytest.mark.parametrize("encryption", [False, True])
def test_eavesdropper(tmp_path: Path, encryption: bool) -> None:
    with live_server(tmp_path / "out", "f", STEPS, {"mean": True},
                     {"encryption": encryption}) as srv:
        tap = Tap(srv.address)
        proc = python_client(srv.env(3, MELISSA_SERVER=tap.address))
        assert proc.returncode == 0, proc.stderr
        srv.finish()
    wire = bytes(tap.seen)
    assert len(wire) > STEPS * CELLS * 8
    assert (srv.token in wire) == (not encryption)
    assert (values(3, 1).tobytes() in wire) == (not encryption)
    assert os.path.exists(srv.paths.field_results("f"))


ENCRYPTED_SIM = """
import json, os, numpy as np, melissa.client as melissa
assert len(os.environ["MELISSA_SERVER_KEY"]) == 40
a = json.loads(os.environ["MELISSA_PARAMETERS"])["a"]
melissa.init("u", 10)
for step in range(3):
    melissa.send("u", a * np.arange(10.0) + step)
melissa.finalize()
"""


def test_encrypted_study_through_the_launcher(launcher: Any, tmp_path: Path) -> None:
    """server_config.encryption end to end: the launcher gives every simulation the key of the
    (2-rank) server, and the results equal NumPy on the drawn parameters."""
    (tmp_path / "sim.py").write_text(ENCRYPTED_SIM)
    run = launcher({
        "output_dir": "out",
        "study_options": {"field_names": ["u"], "nb_time_steps": 3, "parameter_sweep_size": 5},
        "parameters": [{"name": "a", "distribution": "uniform", "low": 0, "high": 1}],
        "sa_config": {"plot_time_steps": []},
        "client_config": {"executable_command": "python3 sim.py"},
        "server_config": {"ranks": 2, "encryption": True},
    })
    assert run.returncode == 0, run.output
    a = np.array([float(r["a"]) for r in run.parameters()])
    x = a[:, None, None] * np.arange(10.0) + np.arange(3.0)[None, :, None]
    with xr.open_dataset(run.output_dir / "statistics" / "u.nc") as ds:
        np.testing.assert_allclose(ds["mean"].values, x.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(ds["variance"].values, x.var(axis=0, ddof=1), rtol=1e-12)
