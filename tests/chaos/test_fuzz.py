"""Fuzzing the server's ports while a real study runs through melissa-launcher (2 server ranks):
random bytes, wrong frame counts, unauthenticated headers, and authentic headers with mutated
fields (valid-looking DATA for wrong simulations, steps, offsets; truncated payloads; oversized
counts; broken HELLO, END and RANK_EVENT). The server stays up, the study completes with the
results of a fault-free run of the same study, and each bad message is logged exactly once.

Every fuzzed message is bad by construction (the fuzzer knows the token, so it never sends what
a real client could: that would be data, not a fault). The one good message it sends is the
HELLO a restarting client sends, which fetches the WELCOME with rank 1's endpoint.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zmq
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from melissa.launcher.state import read_token
from melissa.paths import StudyPaths
from melissa.protocol import (
    HEADER_SIZE,
    Dtype,
    Header,
    Kind,
    cell_ranges,
    decode_header,
    decode_json,
    encode_json,
)
from tests.integration.conftest import run_launcher, start_launcher

FIELD, SIZE, STEPS, SIMS, SERVER_RANKS = "u", 11, 4, 6, 2
MESSAGES = 800  # < 1000 per rank: the server logs each bad message up to there, then counts
PACE_S = 0.005  # between two messages: spreads them over the study, among the real traffic
# Reasons the fuzzer must provoke (so it does reach past the header checks).
REASONS = ["header frame has", "frames, expected 1 or 2", "wrong study token", "bad magic",
           "protocol version", "unknown message kind", "unknown dtype", "negative simulation id",
           "without declaring it", "out of range", "is not the piece", "DATA payload has",
           "unknown field id", "DATA without a dtype", "unknown field", "HELLO payload",
           "ended without declaring", "unexpected FINISH", "RANK_EVENT payload"]
# The last simulation waits for the fuzzer to be done (fuzz.done in its working directory, the
# config's): the study cannot end, so the server cannot stop reading, before the last message.
SIMULATION = f"""
import os, sys, time
import numpy as np
import melissa.client as melissa
a, b = (float(v) for v in sys.argv[1:])
cells = np.arange({SIZE}, dtype=np.float64)
melissa.init("{FIELD}", {SIZE})
for step in range({STEPS}):
    time.sleep(0.2)
    while os.environ["MELISSA_SIMULATION_ID"] == "{SIMS - 1}" and not os.path.exists("fuzz.done"):
        time.sleep(0.05)
    melissa.send("{FIELD}", np.sin(a * cells + step) + b * cells ** 2)
melissa.finalize()
"""
CONFIG: dict[str, Any] = {
    "output_dir": "out",
    "study_options": {"field_names": [FIELD], "nb_time_steps": STEPS,
                      "parameter_sweep_size": SIMS, "seed": 11},
    "parameters": [{"name": "a", "distribution": "uniform", "low": 0, "high": 2},
                   {"name": "b", "distribution": "normal", "mean": 0, "std": 0.1}],
    "sa_config": {"mean": True, "variance": True, "min": True, "max": True,
                  "plot_time_steps": []},
    "client_config": {"executable_command": f"{sys.executable} sim.py"},
    "server_config": {"ranks": SERVER_RANKS},
    "launcher_config": {"job_limit": 2},
}
RANGES = cell_ranges(SIZE, SERVER_RANKS)
FOREIGN_SIMS = st.integers(SIMS, 2**63 - 1)  # never part of this study
U32, U64 = st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)
# Kinds that an authentic peer may not send here, whatever their fields: always refused.
# (HEARTBEAT: only from the launcher; STOP: only from rank 0, on its own channel.)
UNEXPECTED_KINDS = [Kind.WELCOME, Kind.END_ACK, Kind.ERROR, Kind.EVENT, Kind.FINISH,
                    Kind.HEARTBEAT, Kind.STOP]

Message = tuple[int, list[bytes]]  # (server rank, frames)


def good_hello(token: bytes, sim: int) -> list[bytes]:
    """The HELLO a real (restarting) client of simulation `sim` sends."""
    header = Header(Kind.HELLO, token, sim, 0, 0, offset=0, count=SIZE).encode()
    return [header, encode_json({"field": FIELD, "global_size": SIZE, "client_ranks": 1,
                                 "shape": None})]


# ---- strategies: each draws a message that the server must drop -------------------------------

@st.composite
def garbage(draw: st.DrawFn) -> list[bytes]:
    """Random frames: a header of the wrong size, or too many frames."""
    frames = draw(st.lists(st.binary(max_size=2 * HEADER_SIZE), min_size=1, max_size=5))
    if len(frames) <= 2 and len(frames[0]) == HEADER_SIZE:
        frames[0] = frames[0][:-1]
    return frames


@st.composite
def unauthenticated(draw: st.DrawFn, token: bytes) -> list[bytes]:
    """A well-formed header with a wrong token, magic or version."""
    header = bytearray(draw(authentic_header(token)))
    where = draw(st.sampled_from([(0, 4), (4, 6), (8, 24)]))  # magic, version, token
    original = bytes(header[where[0]:where[1]])
    replacement = draw(st.binary(min_size=len(original), max_size=len(original))
                       .filter(lambda b: b != original))
    header[where[0]:where[1]] = replacement
    return [bytes(header), *draw(st.lists(st.binary(max_size=64), max_size=1))]


@st.composite
def authentic_header(draw: st.DrawFn, token: bytes, kinds: list[Kind] | None = None) -> bytes:
    kind = draw(st.sampled_from(kinds or list(Kind)))
    return Header(kind, token, draw(st.integers(0, 2**63 - 1)), draw(U32), draw(U32),
                  draw(U32), draw(U32), draw(U64), draw(U64),
                  draw(st.sampled_from(list(Dtype)))).encode()


@st.composite
def unknown_codes(draw: st.DrawFn, token: bytes) -> list[bytes]:
    """An authentic header with an unknown kind or dtype, or a negative simulation id."""
    header = bytearray(draw(authentic_header(token)))
    known = {k.value for k in Kind} | set(range(32))  # 0-31: today's kinds and the next ones
    what = draw(st.sampled_from(["kind", "dtype", "sim"]))
    if what == "kind":
        header[6:8] = draw(st.integers(0, 2**16 - 1).filter(lambda k: k not in known)).to_bytes(
            2, "little")
    elif what == "dtype":
        header[64] = draw(st.integers(len(Dtype), 255))
    else:
        header[24:32] = draw(st.integers(-(2**63), -1)).to_bytes(8, "little", signed=True)
    return [bytes(header), *draw(st.lists(st.binary(max_size=64), max_size=1))]


@st.composite
def bad_data(draw: st.DrawFn, token: bytes, rank: int) -> list[bytes]:
    """A DATA message that a real client could almost have sent to `rank`, with one mutation."""
    start, stop = RANGES[rank]
    fields = {"sim": draw(st.sampled_from(range(SIMS))), "client_rank": 0, "step":
              draw(st.integers(0, STEPS - 1)), "field_id": 0, "offset": start,
              "count": stop - start, "dtype": Dtype.FLOAT64}
    payload_size: int | None = None  # None: count x 8 bytes
    mutation = draw(st.sampled_from(["sim", "client_rank", "step", "field_id", "offset",
                                     "count", "oversized", "dtype", "payload", "no payload"]))
    if mutation == "sim":
        fields["sim"] = draw(FOREIGN_SIMS)
    elif mutation == "client_rank":
        fields["client_rank"] = draw(st.integers(1, 2**32 - 1))
    elif mutation == "step":
        fields["step"] = draw(st.integers(STEPS, 2**32 - 1))
    elif mutation == "field_id":
        fields["field_id"] = draw(st.integers(1, 2**32 - 1))
    elif mutation in ("offset", "count"):
        fields[mutation] = draw(st.integers(0, 2 * SIZE).filter(lambda v: v != fields[mutation]))
    elif mutation == "oversized":
        fields["count"] = draw(st.integers(2 * SIZE, 2**64 - 1))
        payload_size = draw(st.integers(0, 8 * SIZE))
    elif mutation == "dtype":
        fields["dtype"] = Dtype.NONE
    elif mutation == "payload":
        payload_size = draw(st.integers(0, 16 * SIZE).filter(lambda n: n != 8 * fields["count"]))
    header = Header(Kind.DATA, token, fields["sim"], draw(U32), fields["client_rank"],
                    fields["step"], fields["field_id"], fields["offset"], fields["count"],
                    fields["dtype"]).encode()
    if mutation == "no payload":
        return [header]
    size = 8 * fields["count"] if payload_size is None else payload_size
    return [header, draw(st.binary(min_size=size, max_size=size))]


@st.composite
def bad_hello(draw: st.DrawFn, token: bytes) -> list[bytes]:
    """A HELLO with one thing the server must refuse (before it records anything)."""
    body: dict[str, Any] = {"field": FIELD, "global_size": SIZE, "client_ranks": 1,
                            "shape": draw(st.sampled_from([None, [SIZE], [1, SIZE]]))}
    client_rank, offset, count = 0, 0, SIZE
    mutation = draw(st.sampled_from(["field", "size", "shape", "ranks", "client_rank", "cells",
                                     "missing", "not json", "not object", "no payload"]))
    if mutation == "field":
        body["field"] = draw(st.text(max_size=20).filter(lambda t: t != FIELD))
    elif mutation == "size":
        body["global_size"] = draw(st.integers(-(2**70), 2**70).filter(lambda n: n != SIZE))
        body["shape"] = None
    elif mutation == "shape":
        body["shape"] = draw(st.lists(st.integers(-3, 2 * SIZE), min_size=1, max_size=3)
                             .filter(lambda s: int(np.prod(s)) != SIZE or min(s) <= 0))
    elif mutation == "ranks":
        body["client_ranks"] = draw(st.integers(-(2**40), 0))
    elif mutation == "client_rank":
        client_rank = draw(st.integers(1, 2**32 - 1))
    elif mutation == "cells":
        offset = draw(st.integers(1, 2**62))
    elif mutation == "missing":
        del body[draw(st.sampled_from(["field", "global_size", "client_ranks"]))]
    sim = draw(st.one_of(st.integers(0, SIMS - 1), FOREIGN_SIMS))
    header = Header(Kind.HELLO, token, sim, draw(U32), client_rank, offset=offset,
                    count=count).encode()
    if mutation == "no payload":
        return [header]
    if mutation == "not json":
        return [header, draw(st.binary(max_size=64).filter(lambda b: not _is_json(b)))]
    if mutation == "not object":
        return [header, json.dumps(draw(st.lists(st.integers(), max_size=3))).encode()]
    return [header, encode_json(body)]


def _is_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


@st.composite
def bad_control(draw: st.DrawFn, token: bytes, rank: int) -> list[bytes]:
    """END for a simulation that never declared a field, kinds a peer may not send, and
    RANK_EVENT (on rank 0) with a rank that does not exist."""
    what = draw(st.sampled_from(["end", "unexpected", "rank_event"]))
    if what == "end":
        return [Header(Kind.END, token, draw(FOREIGN_SIMS), draw(U32), draw(U32),
                       count=draw(U64)).encode()]
    if what == "unexpected" or rank != 0:
        kinds = UNEXPECTED_KINDS if what == "unexpected" else [Kind.RANK_EVENT]
        return [draw(authentic_header(token, kinds)), *draw(st.lists(st.binary(max_size=64),
                                                               max_size=1))]
    body = {"rank": draw(st.integers(-5, 5).filter(lambda r: not 0 < r < SERVER_RANKS)),
            "simulation_complete": draw(st.integers(0, SIMS - 1))}
    return [Header(Kind.RANK_EVENT, token).encode(), encode_json(body)]


def messages(token: bytes) -> st.SearchStrategy[Message]:
    """Bad messages for either server rank; DATA, the bulk of real traffic, twice as often."""
    def for_rank(rank: int) -> st.SearchStrategy[Message]:
        return st.tuples(st.just(rank), st.one_of(
            garbage(), unauthenticated(token), unknown_codes(token), bad_data(token, rank),
            bad_data(token, rank), bad_hello(token), bad_control(token, rank)))
    return st.one_of(for_rank(0), for_rank(1))


# ---- the test ---------------------------------------------------------------------------------

def wait_for(what: str, ready: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def welcome(sock: zmq.Socket[Any], token: bytes, sim: int) -> dict[str, Any]:
    sock.send_multipart(good_hello(token, sim))
    assert sock.poll(20_000), "no WELCOME"
    reply = sock.recv_multipart()
    assert decode_header(reply[0], token).kind == Kind.WELCOME, reply
    return decode_json(reply[1], "WELCOME")


def dropped_per_rank(log: str) -> tuple[Counter[int], Counter[int]]:
    """Bad-message log lines per server rank, and each rank's final counter."""
    lines = Counter(int(m) for m in re.findall(r"server\[(\d+)\]: dropped a message", log))
    totals = Counter({int(r): int(n) for r, n in
                      re.findall(r"server\[(\d+)\]: dropped (\d+) bad messages", log)})
    return lines, totals


def test_fuzzing_the_ports_during_a_study(tmp_path: Path) -> None:
    reference_dir, fuzzed_dir = tmp_path / "reference", tmp_path / "fuzzed"
    for directory in (reference_dir, fuzzed_dir):
        directory.mkdir()
        (directory / "sim.py").write_text(SIMULATION)
    (reference_dir / "fuzz.done").touch()
    launcher = start_launcher(fuzzed_dir, CONFIG)
    out = StudyPaths(fuzzed_dir / "out")
    try:
        wait_for("the server's rendezvous", out.rendezvous.exists)
        token = bytes.fromhex(read_token(out.state_db))
        address = json.loads(out.rendezvous.read_text())["address"]
        context = zmq.Context()
        socks = [context.socket(zmq.DEALER) for _ in range(SERVER_RANKS)]
        for sock in socks:
            sock.setsockopt(zmq.SNDTIMEO, 10_000)
            sock.setsockopt(zmq.LINGER, 0)
        socks[0].connect(address)
        # The last simulation's HELLO, as if it restarted: it runs last, so it is not complete.
        endpoints = welcome(socks[0], token, SIMS - 1)["endpoints"]
        socks[1].connect(endpoints[1])
        welcome(socks[1], token, SIMS - 1)  # rank 1 now knows the field's size, as rank 0
        sent: Counter[int] = Counter()

        @seed(2026)
        @settings(max_examples=MESSAGES, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(messages(token))
        def fuzz(message: Message) -> None:
            rank, frames = message
            socks[rank].send_multipart(frames)
            sent[rank] += 1
            time.sleep(PACE_S)

        fuzz()
        # Whatever the draws were: each kind a peer may not send, once to each rank.
        for rank, sock in enumerate(socks):
            for kind in UNEXPECTED_KINDS:
                sock.send_multipart([Header(kind, token).encode()])
                sent[rank] += 1
        (fuzzed_dir / "fuzz.done").touch()
        output, _ = launcher.communicate(timeout=120)
        context.destroy()
    finally:
        (fuzzed_dir / "fuzz.done").touch()  # never leave the last simulation waiting
        if launcher.poll() is None:
            launcher.kill()
    print(f"\nfuzzed {sum(sent.values())} messages ({dict(sent)} per server rank) while the study"
          " ran")
    assert launcher.returncode == 0, output

    log = out.server_log.read_text()
    lines, totals = dropped_per_rank(log)
    assert lines == sent, f"log lines per rank {dict(lines)}, sent {dict(sent)}"
    assert totals == sent, f"final counters {dict(totals)}, sent {dict(sent)}"
    assert not [r for r in REASONS if r not in log], [r for r in REASONS if r not in log]

    reference = run_launcher(CONFIG, reference_dir)
    assert reference.returncode == 0, reference.output
    assert "dropped" not in StudyPaths(reference.output_dir).server_log.read_text()
    with xr.open_dataset(StudyPaths(reference.output_dir).field_results(FIELD)) as expected, \
            xr.open_dataset(out.field_results(FIELD)) as got:
        assert set(got.data_vars) == set(expected.data_vars)
        np.testing.assert_array_equal(got["count"].values, expected["count"].values)
        assert (got["count"].values == SIMS).all()
        for name in expected.data_vars:
            np.testing.assert_allclose(got[name].values, expected[name].values, rtol=1e-12,
                                       err_msg=name)

