"""A real server process fed malformed, truncated, oversized, wrong-token and wrong-version
messages between good clients: each bad message is logged once and dropped, results unaffected."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zmq

from melissa.client.session import ClientEnvironment, Session
from melissa.errors import ClientError
from melissa.protocol import Dtype, Header, Kind, encode_json
from tests.live_server import LiveServer, live_server

STEPS, CELLS = 3, 10


class RunningServer(LiveServer):
    def session(self, sim: int, token: bytes | None = None, timeout: float = 10.0) -> Session:
        env = ClientEnvironment(self.address, sim, token or self.token, 0, timeout)
        return Session(env)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    sa = {"mean": True, "variance": True, "max": True}
    with live_server(tmp_path / "out", "f", STEPS, sa) as live:
        yield RunningServer(**vars(live))


def data(sim: int, step: int) -> np.ndarray:
    return (np.arange(CELLS, dtype=np.float64) + 1) * (sim + 1) + step


def run_good_client(server: RunningServer, sim: int) -> None:
    s = server.session(sim)
    s.init("f", CELLS, 0, CELLS, None)
    for step in range(STEPS):
        s.send("f", data(sim, step))
    s.finalize()


def test_bad_messages_are_logged_once_and_dropped(server: RunningServer) -> None:
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.DEALER)
    raw.connect(server.address)
    tok = server.token

    def hdr(kind: Kind, **kw: Any) -> bytes:
        return Header(kind, tok, **kw).encode()

    good_data = hdr(Kind.DATA, simulation_id=0, field_id=0, offset=0, count=CELLS,
                    dtype=Dtype.FLOAT64)
    wrong_version = bytearray(good_data)
    struct.pack_into("<H", wrong_version, 4, 7)
    payload = np.zeros(CELLS).tobytes()

    run_good_client(server, 0)
    bad_frames = [
        [b"not a melissa message"],  # malformed: wrong header size
        [good_data[:40], payload],  # truncated header
        [good_data, payload, b"x", b"y"],  # too many frames
        [Header(Kind.DATA, b"\0" * 16, simulation_id=1, count=CELLS,
                dtype=Dtype.FLOAT64).encode(), payload],  # wrong token
        [bytes(wrong_version), payload],  # wrong version
        [hdr(Kind.DATA, simulation_id=1, field_id=0, count=CELLS, dtype=Dtype.FLOAT64),
         payload],  # data before init
        [hdr(Kind.DATA, simulation_id=0, field_id=0, count=CELLS, dtype=Dtype.FLOAT64),
         payload + payload],  # oversized payload
        [hdr(Kind.DATA, simulation_id=0, field_id=0, count=CELLS, dtype=Dtype.FLOAT64),
         payload[:8]],  # truncated payload
        [hdr(Kind.DATA, simulation_id=0, field_id=9, count=CELLS, dtype=Dtype.FLOAT64),
         payload],  # unknown field id
        [hdr(Kind.DATA, simulation_id=0, field_id=0, time_step=STEPS, count=CELLS,
             dtype=Dtype.FLOAT64), payload],  # time step out of range
        [hdr(Kind.DATA, simulation_id=0, field_id=0, offset=5, count=5,
             dtype=Dtype.FLOAT64), payload[:40]],  # not the declared piece
        [hdr(Kind.HELLO, simulation_id=1), b"{not json"],  # garbled HELLO
        [hdr(Kind.HELLO, simulation_id=1, count=CELLS),
         encode_json({"field": "f", "global_size": CELLS + 1, "client_ranks": 1})],  # size
        [hdr(Kind.FINISH)],  # FINISH from someone who is not the launcher
        # Last: its ERROR answer proves the server handled everything before it (ordered pipe).
        [hdr(Kind.HELLO, simulation_id=1), encode_json({"field": "g", "global_size": CELLS,
                                                        "client_ranks": 1})],  # unknown field
    ]
    for frames in bad_frames:
        raw.send_multipart(frames)
    while True:
        assert raw.poll(10_000), "the server did not answer the last bad HELLO"
        if b"unknown field 'g'" in raw.recv_multipart()[-1]:
            break
    # A duplicate of a chunk the server already holds is silently dropped, not counted twice.
    raw.send_multipart([good_data, data(0, 0).tobytes()])
    for sim in (1, 2, 3):
        run_good_client(server, sim)
    log = server.finish()

    dropped = [line for line in log.splitlines() if "dropped a message" in line]
    assert len(dropped) == len(bad_frames), "\n".join(dropped)
    for reason in ("header frame has 21 bytes", "header frame has 40 bytes", "4 frames",
                   "wrong study token", "protocol version 7", "without declaring it",
                   "payload has 160 bytes", "payload has 8 bytes", "unknown field id 9",
                   "time step 3 out of range", "is not the piece", "HELLO payload is not JSON",
                   "unknown field 'g'", "has 11 values here but 10", "unexpected FINISH"):
        assert sum(reason in line for line in dropped) == 1, reason
    ds = xr.open_dataset(server.paths.field_results("f"))
    x = np.array([[data(sim, step) for step in range(STEPS)] for sim in range(4)])
    assert (ds["count"].values == 4).all()
    np.testing.assert_allclose(ds["mean"].values, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(ds["variance"].values, x.var(axis=0, ddof=1), rtol=1e-12)
    np.testing.assert_array_equal(ds["maximum_simulation"].values, 3)
    ds.close()


def test_client_errors_are_clear(server: RunningServer) -> None:
    s = server.session(5)
    with pytest.raises(ClientError, match=r"send\('f'\) before init\('f'\)"):
        s.send("f", data(0, 0))
    with pytest.raises(ClientError, match="refused by the server: unknown field 'nope'"):
        s.init("nope", CELLS, 0, CELLS, None)
    s.init("f", CELLS, 0, CELLS, None)
    with pytest.raises(ClientError, match="array has 3 values, init declared local_size=10"):
        s.send("f", np.zeros(3))
    with pytest.raises(ClientError, match="dtype int64 not supported"):
        s.send("f", np.zeros(CELLS, dtype=np.int64))
    s.send("f", data(5, 0))
    with pytest.raises(ClientError, match="after 1 of the 3 time steps"):
        s.finalize()
    for step in (1, 2):
        s.send("f", data(5, step).astype(np.float32))
    with pytest.raises(ClientError, match="all 3 time steps .* were already sent"):
        s.send("f", data(5, 3))
    s.finalize()
    with pytest.raises(ClientError, match="finalize\\(\\) called twice"):
        s.finalize()

    started = time.monotonic()
    with pytest.raises(ClientError, match="no answer from the Melissa server .* within 1 s"):
        server.session(6, token=b"\1" * 16, timeout=1.0).init("f", CELLS, 0, CELLS, None)
    assert time.monotonic() - started < 5
    server.finish()


def test_client_without_server_times_out(tmp_path: Path) -> None:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.ROUTER)  # a port that accepts connections but never answers
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    code = (
        "import numpy as np, melissa.client as m\n"
        "m.init('f', 4)\n"
    )
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=30,
        env={**os.environ, "MELISSA_SERVER": f"tcp://127.0.0.1:{port}",
             "MELISSA_SIMULATION_ID": "0", "MELISSA_STUDY_TOKEN": "00" * 16,
             "MELISSA_TIMEOUT": "1"},
    )
    assert proc.returncode != 0 and time.monotonic() - started < 15
    assert "no answer from the Melissa server" in proc.stderr
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          timeout=30, env={k: v for k, v in os.environ.items()
                                           if not k.startswith("MELISSA_")})
    assert "MELISSA_SERVER, MELISSA_SIMULATION_ID, MELISSA_STUDY_TOKEN not set" in proc.stderr
    assert "to try one simulation alone: melissa-launcher --try-one -c config.json" in proc.stderr
    sock.close()
