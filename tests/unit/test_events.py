"""Server -> launcher events: golden JSON on the wire, round trips, and bad payloads named."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from melissa.errors import ProtocolError
from melissa.protocol import decode_json, encode_json
from melissa.protocol.events import (
    Attached,
    Event,
    Fitness,
    Restored,
    ResultsWritten,
    ServerStatus,
    SimulationComplete,
    SimulationRefused,
    SimulationSilent,
    StopWhenReached,
    decode_event,
)

# Each event as the server sends it (docs/protocol.md): these bytes are the contract.
GOLDEN: list[tuple[Event, bytes]] = [
    (Attached("tcp://10.0.0.5:5555"), b'{"event":"attached","endpoint":"tcp://10.0.0.5:5555"}'),
    (Restored("/o/checkpoints/rank0/000003.npz", (0, 2)),
     b'{"event":"restored","checkpoint":"/o/checkpoints/rank0/000003.npz","complete":[0,2]}'),
    (Restored(None), b'{"event":"restored","checkpoint":null,"complete":[]}'),
    (ServerStatus(messages=40, bytes=4000000, bad_messages=1, ingest_s=2.5,
                  simulations_complete=3, chunks_received={"4": 30}),
     (b'{"event":"status","messages":40,"bytes":4000000,"bad_messages":1,"ingest_s":2.5,'
     b'"simulations_complete":3,"chunks_received":{"4":30}}')),
    (ServerStatus(training={"batch": 3.0, "loss": 0.5}),
     (b'{"event":"status","messages":0,"bytes":0,"bad_messages":0,"ingest_s":0.0,'
     b'"simulations_complete":0,"chunks_received":{},"training":{"batch":3.0,"loss":0.5}}')),
    (SimulationComplete(12), b'{"event":"simulation_complete","simulation_id":12}'),
    (SimulationSilent(7, 31.5), b'{"event":"simulation_silent","simulation_id":7,"silent_s":31.5}'),
    (SimulationRefused(3, 1, "HELLO to server rank 0: unknown field 'v'"),
     (b'{"event":"simulation_refused","simulation_id":3,"attempt":1,"reason":"HELLO to server '
      b"rank 0: unknown field 'v'\"}")),
    (Fitness(7, 0.0125), b'{"event":"fitness","simulation_id":7,"fitness":0.0125}'),
    (StopWhenReached("mean_stderr", 0.0125, 0.02, 12),
     (b'{"event":"stop_when_reached","figure":"mean_stderr","value":0.0125,"below":0.02,'
      b'"simulations":12}')),
    (ResultsWritten(("/o/statistics.nc",)),
     b'{"event":"results_written","files":["/o/statistics.nc"]}'),
]


@pytest.mark.parametrize(("event", "wire"), GOLDEN, ids=[type(e).__name__ for e, _ in GOLDEN])
def test_golden_json(event: Event, wire: bytes) -> None:
    assert encode_json(event.to_json()) == wire
    assert decode_event(decode_json(wire, "EVENT")) == event


def test_unknown_keys_are_ignored_and_numbers_widen() -> None:
    status = decode_event({"event": "status", "bytes": 5, "ingest_s": 2, "extra": [1]})
    assert status == ServerStatus(bytes=5, ingest_s=2.0)
    assert isinstance(status, ServerStatus) and isinstance(status.ingest_s, float)
    assert status.mean_mb_s == pytest.approx(2.5e-6)


@pytest.mark.parametrize(("payload", "message"), [
    ({}, "unknown event None"),
    ({"event": "finished"}, "unknown event 'finished'"),
    ({"event": 3}, "unknown event 3"),
    ({"event": "attached"}, "attached event lacks 'endpoint'"),
    ({"event": "simulation_complete", "simulation_id": "3"},
     "simulation_complete event: 'simulation_id' must be an integer"),
    ({"event": "simulation_complete", "simulation_id": True},
     "simulation_complete event: 'simulation_id' must be an integer"),
    ({"event": "simulation_silent", "simulation_id": 1, "silent_s": None},
     "simulation_silent event: 'silent_s' must be a number"),
    ({"event": "restored", "checkpoint": 3}, "restored event: 'checkpoint' must be a string or null"),
    ({"event": "restored", "checkpoint": None, "complete": ["1"]},
     "restored event: 'complete' must be a list of integers"),
    ({"event": "status", "chunks_received": {"1": "x"}},
     "status event: 'chunks_received' must be an object of integers"),
    ({"event": "status", "training": [1]}, "status event: 'training' must be an object or null"),
    ({"event": "stop_when_reached", "figure": "mean_stderr", "value": "0.1", "below": 0.2,
      "simulations": 3}, "stop_when_reached event: 'value' must be a number"),
    ({"event": "results_written", "files": "/o/a.nc"},
     "results_written event: 'files' must be a list of strings"),
])
def test_bad_events_are_named(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(ProtocolError, match="^" + re.escape(message)):
        decode_event(payload)


def test_every_event_kind_has_a_golden_vector() -> None:
    kinds = {json.loads(wire)["event"] for _, wire in GOLDEN}
    assert kinds == {"attached", "restored", "status", "simulation_complete",
                     "simulation_silent", "simulation_refused", "results_written",
                     "fitness", "stop_when_reached"}
