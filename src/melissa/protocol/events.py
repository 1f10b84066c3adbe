"""The events server rank 0 sends the launcher on the control channel (EVENT payloads).

Each event is a frozen dataclass; on the wire it is one JSON object whose "event" key names the
kind and whose other keys are the dataclass's fields (docs/protocol.md, pinned by golden JSON in
tests/unit/test_events.py). The server builds them and sends `event.to_json()`; the launcher
reads them back with `decode_event`, which names the event and field that is wrong.

This module is on the server's import path: standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar

from melissa.errors import ProtocolError


@dataclass(frozen=True)
class Attached:
    """The server registered the launcher's control channel (the answer to ATTACH)."""

    KIND: ClassVar[str] = "attached"
    endpoint: str  # the server rank 0's client endpoint

    def to_json(self) -> dict[str, Any]:
        return {"event": self.KIND, "endpoint": self.endpoint}


@dataclass(frozen=True)
class Restored:
    """Sent right after "attached" by a server that restored a checkpoint: the simulations
    every rank holds complete in it (any other simulation must run again)."""

    KIND: ClassVar[str] = "restored"
    checkpoint: str | None  # rank 0's checkpoint file (None if only other ranks had one)
    complete: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"event": self.KIND, "checkpoint": self.checkpoint, "complete": list(self.complete)}


@dataclass(frozen=True)
class ServerStatus:
    """Once a second: the server's figures summed over its ranks. `chunks_received` holds the
    simulations not complete yet, by id (as a string: a JSON key); `training` only a
    deep-learning server's latest training figures; `sobol_convergence` only a Sobol' study's
    aggregated indices per field (server/sa/convergence.py, `field_convergence`)."""

    KIND: ClassVar[str] = "status"
    messages: int = 0
    bytes: int = 0
    bad_messages: int = 0
    ingest_s: float = 0.0  # since the first data arrived
    simulations_complete: int = 0
    chunks_received: Mapping[str, int] = field(default_factory=dict)
    training: Mapping[str, Any] | None = None
    sobol_convergence: Mapping[str, Any] | None = None

    @property
    def mean_mb_s(self) -> float:
        """The intake since the first data, in MB/s."""
        return self.bytes / self.ingest_s / 1e6 if self.ingest_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event": self.KIND, "messages": self.messages, "bytes": self.bytes,
            "bad_messages": self.bad_messages, "ingest_s": self.ingest_s,
            "simulations_complete": self.simulations_complete,
            "chunks_received": dict(self.chunks_received),
        }
        if self.training is not None:
            out["training"] = dict(self.training)
        if self.sobol_convergence is not None:
            out["sobol_convergence"] = dict(self.sobol_convergence)
        return out


@dataclass(frozen=True)
class SimulationComplete:
    """Every server rank holds all the simulation's data."""

    KIND: ClassVar[str] = "simulation_complete"
    simulation_id: int

    def to_json(self) -> dict[str, Any]:
        return {"event": self.KIND, "simulation_id": self.simulation_id}


@dataclass(frozen=True)
class SimulationSilent:
    """The simulation sent nothing to any rank for `silent_s` >= study_options.simulation_timeout."""

    KIND: ClassVar[str] = "simulation_silent"
    simulation_id: int
    silent_s: float

    def to_json(self) -> dict[str, Any]:
        return {"event": self.KIND, "simulation_id": self.simulation_id,
                "silent_s": self.silent_s}


@dataclass(frozen=True)
class SimulationRefused:
    """A server rank refused a HELLO, DATA or END of this simulation attempt (the first one of
    each attempt): why, for the launcher's record of its failure."""

    KIND: ClassVar[str] = "simulation_refused"
    simulation_id: int
    attempt: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"event": self.KIND, "simulation_id": self.simulation_id,
                "attempt": self.attempt, "reason": self.reason}


@dataclass(frozen=True)
class ResultsWritten:
    """The server wrote its results (after FINISH) and is about to exit."""

    KIND: ClassVar[str] = "results_written"
    files: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"event": self.KIND, "files": list(self.files)}


@dataclass(frozen=True)
class Fitness:
    """Active sampling (sampling.method "breed"): the simulation's fitness, its mean per-sample
    training loss, is new or changed."""

    KIND: ClassVar[str] = "fitness"
    simulation_id: int
    fitness: float

    def to_json(self) -> dict[str, Any]:
        return {"event": self.KIND, "simulation_id": self.simulation_id,
                "fitness": self.fitness}


@dataclass(frozen=True)
class StopWhenReached:
    """sa_config.stop_when: the convergence figure is below its target with at least
    min_simulations counted, so the launcher submits no more simulations (sent again at each
    evaluation while it holds)."""

    KIND: ClassVar[str] = "stop_when_reached"
    figure: str  # its name in sa_config.stop_when
    value: float  # the worst field's
    below: float  # the target
    simulations: int  # simulations in the statistics when it was evaluated

    def to_json(self) -> dict[str, Any]:
        return {"event": self.KIND, "figure": self.figure, "value": self.value,
                "below": self.below, "simulations": self.simulations}


Event = (Attached | Restored | ServerStatus | SimulationComplete | SimulationSilent
         | SimulationRefused | ResultsWritten | Fitness | StopWhenReached)
_KINDS: dict[str, type[Any]] = {
    cls.KIND: cls for cls in (Attached, Restored, ServerStatus, SimulationComplete,
                              SimulationSilent, SimulationRefused, ResultsWritten,
                              Fitness, StopWhenReached)
}


def decode_event(obj: Mapping[str, Any]) -> Event:
    """The event of a decoded EVENT payload; ProtocolError naming the kind and field if wrong.
    Unknown keys are ignored (a newer server may add figures)."""
    kind = obj.get("event")
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None or not isinstance(kind, str):
        raise ProtocolError(f"unknown event {kind!r}")
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in obj:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ProtocolError(f"{kind} event lacks {f.name!r}")
            continue
        values[f.name] = _field(kind, f.name, obj[f.name])
    result: Event = cls(**values)
    return result


def _field(kind: str, name: str, value: Any) -> Any:
    """`value` checked against the field's wire type (bool is no number here)."""
    def bad(expected: str) -> ProtocolError:
        return ProtocolError(f"{kind} event: {name!r} must be {expected}, got {value!r:.60}")

    if name in ("simulation_id", "messages", "bytes", "bad_messages", "simulations_complete",
                "attempt", "simulations"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad("an integer")
        return value
    if name in ("silent_s", "ingest_s", "fitness", "value", "below"):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise bad("a number")
        return float(value)
    if name in ("endpoint", "reason", "figure"):
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if name == "checkpoint":
        if value is not None and not isinstance(value, str):
            raise bad("a string or null")
        return value
    if name in ("complete", "files"):
        item = int if name == "complete" else str
        if not isinstance(value, list) or not all(
                isinstance(v, item) and not isinstance(v, bool) for v in value):
            raise bad(f"a list of {'integers' if item is int else 'strings'}")
        return tuple(value)
    if name == "chunks_received":
        if not isinstance(value, dict) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in value.values()):
            raise bad("an object of integers")
        return dict(value)
    if name in ("training", "sobol_convergence"):
        if value is not None and not isinstance(value, dict):
            raise bad("an object or null")
        return value
    raise AssertionError(f"no wire type for {kind}.{name}")  # a field added without one
