"""Training samples and how the receive loop builds them (framework-agnostic: NumPy only).

A sample is one time step of one simulation: its parameters, the time step, and the values of
every field at that step. DATA chunks arrive one field (and client rank) at a time; the
assembler copies them into per-step arrays and hands out a sample once every cell of every field
of that step is in.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from melissa.config.models import LogUniformParameter, NormalParameter, Parameter
from melissa.errors import ProtocolError
from melissa.server.registry import FieldInfo

T = TypeVar("T")

SAMPLE_DTYPE = np.float32  # what the buffer stores: half the memory of float64, what nets use


@dataclass(frozen=True)
class Sample:
    simulation_id: int
    time_step: int
    parameters: np.ndarray  # float64, in the order of config.json's `parameters`
    fields: dict[str, np.ndarray]  # float32, shaped as declared by the client (flat otherwise)

    @property
    def nbytes(self) -> int:
        return self.parameters.nbytes + sum(a.nbytes for a in self.fields.values())


def parameters_from_hello(body: dict[str, Any], names: Sequence[str], simulation_id: int) -> np.ndarray:
    """The simulation's parameter values from a HELLO payload, in the study's order.

    The Python client copies MELISSA_PARAMETERS (a JSON object name -> value) into HELLO's
    optional "parameters" key; training needs it to pair inputs with fields.
    """
    given = body.get("parameters")
    if not isinstance(given, dict):
        raise ProtocolError(
            f"simulation {simulation_id}: HELLO carries no 'parameters' object, which a "
            "deep-learning study needs (the Python client sends MELISSA_PARAMETERS)"
        )
    missing = [n for n in names if n not in given]
    if missing or len(given) != len(names):
        raise ProtocolError(
            f"simulation {simulation_id}: HELLO parameters {sorted(given)} do not match the "
            f"study's {list(names)}"
        )
    try:
        values = np.array([float(given[n]) for n in names], dtype=np.float64)
    except (TypeError, ValueError):
        raise ProtocolError(f"simulation {simulation_id}: non-numeric HELLO parameters") from None
    if not np.isfinite(values).all():
        raise ProtocolError(f"simulation {simulation_id}: non-finite HELLO parameters {values}")
    return values


@dataclass
class _Partial:
    arrays: dict[str, np.ndarray]
    missing: dict[str, int]  # cells still to come, per field


@dataclass
class SampleAssembler:
    """Builds samples from DATA chunks (each chunk arrives once: the registry drops duplicates)."""

    field_names: list[str]
    fields: dict[str, FieldInfo] = field(default_factory=dict)
    _partial: dict[tuple[int, int], _Partial] = field(default_factory=dict)

    def declare(self, info: FieldInfo) -> None:
        self.fields[info.name] = info

    def add(
        self, info: FieldInfo, simulation_id: int, time_step: int, local_start: int,
        data: np.ndarray,
    ) -> dict[str, np.ndarray] | None:
        """Copy a chunk in; returns every field of the step once the step is complete."""
        key = (simulation_id, time_step)
        part = self._partial.get(key)
        if part is None:
            part = _Partial({}, {})
            self._partial[key] = part
        array = part.arrays.get(info.name)
        if array is None:
            array = np.empty(info.local_size, dtype=SAMPLE_DTYPE)
            part.arrays[info.name] = array
            part.missing[info.name] = info.local_size
        array[local_start : local_start + data.size] = data  # copies out of the ZeroMQ frame
        part.missing[info.name] -= data.size
        complete = all(
            part.missing.get(name, 1) == 0 for name in self.field_names
        )
        if not complete:
            return None
        del self._partial[key]
        return {name: self._shaped(name, part.arrays[name]) for name in self.field_names}

    def _shaped(self, name: str, array: np.ndarray) -> np.ndarray:
        info = self.fields[name]
        if info.shape is not None and info.local_size == info.global_size:
            return array.reshape(info.shape)
        return array

    def partials(self) -> dict[tuple[int, int], dict[str, tuple[np.ndarray, int]]]:
        """Time steps partly received: field -> (values so far, cells still missing)."""
        return {key: {name: (part.arrays[name], part.missing[name]) for name in part.arrays}
                for key, part in self._partial.items()}

    def restore_partials(
        self, partials: dict[tuple[int, int], dict[str, tuple[np.ndarray, int]]]
    ) -> None:
        self._partial = {
            key: _Partial({n: a for n, (a, _) in fields.items()},
                          {n: m for n, (_, m) in fields.items()})
            for key, fields in partials.items()
        }

    @property
    def pending(self) -> int:
        """Time steps with some but not all of their data."""
        return len(self._partial)


class ValidationSet(Generic[T]):
    """Items of the held-out simulations' samples, all kept (they are never trained on).

    `paired` (the sim_paired_reservoir buffer): the set's entries are the pairs (item at t, item
    at t + 1) of one simulation, made as soon as both steps are in.
    """

    def __init__(self, paired: bool = False) -> None:
        self._lock = threading.Lock()
        self._samples: list[Any] = []
        self.paired = paired
        self._by_key: dict[tuple[int, int], T] = {}

    def add(self, item: T, key: tuple[int, int] = (0, 0)) -> None:
        with self._lock:
            if not self.paired:
                self._samples.append(item)
                return
            sim, step = key
            self._by_key[key] = item
            if (sim, step - 1) in self._by_key:
                self._samples.append((self._by_key[(sim, step - 1)], item))
            if (sim, step + 1) in self._by_key:
                self._samples.append((item, self._by_key[(sim, step + 1)]))

    def keyed_items(self) -> tuple[list[tuple[int, int]], list[T]] | None:
        """(keys, items) of a paired set, for checkpoints; None if it is not paired."""
        with self._lock:
            if not self.paired:
                return None
            return list(self._by_key), list(self._by_key.values())

    def all_items(self) -> list[Any]:
        with self._lock:
            return list(self._samples)

    def since(self, start: int) -> list[Any]:
        """Items added after the first `start` ones (they are only ever appended)."""
        with self._lock:
            return self._samples[start:]

    def __len__(self) -> int:
        with self._lock:
            return len(self._samples)


class ParameterScaler:
    """Maps parameter values to inputs of order one, from their distributions in config.json:
    uniform to [0, 1], log-uniform to [0, 1] in log space, normal to (value - mean) / std."""

    def __init__(self, parameters: Sequence[Parameter]) -> None:
        offset, scale, log = [], [], []
        for p in parameters:
            if isinstance(p, NormalParameter):
                offset.append(p.mean)
                scale.append(p.std)
                log.append(False)
            elif isinstance(p, LogUniformParameter):
                offset.append(math.log(p.low))
                scale.append(math.log(p.high) - math.log(p.low))
                log.append(True)
            else:
                offset.append(p.low)
                scale.append(p.high - p.low)
                log.append(False)
        self.offset = np.array(offset)
        self.scale = np.array(scale)
        self.log = np.array(log)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """Scale values of shape (..., parameters)."""
        values = np.asarray(values, dtype=np.float64)
        values = np.where(self.log, np.log(np.where(self.log, values, 1.0)), values)
        return (values - self.offset) / self.scale


def time_input(time_step: int | np.ndarray, nb_time_steps: int) -> np.ndarray:
    """Time step as an input in [0, 1]."""
    return np.asarray(time_step, dtype=np.float64) / max(1, nb_time_steps - 1)
