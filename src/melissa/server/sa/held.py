"""The data of simulations still running, held apart from the statistics until they complete.

A simulation that fails on every attempt is redrawn (or given up), and the steps it sent before
must not stay in the results: moments and counts could be un-added with its data, but neither
extrema nor quantiles can. So each chunk is copied here when it arrives and reaches the
statistics only once its simulation is complete on this rank (for Sobol' indices: once its whole
group is); an abandoned simulation's chunks are dropped. Exact for every statistic, at the cost
of holding each running simulation's cells until its end: nb_time_steps x local cells x the
itemsize it sends (docs/statistics.md, Memory).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

# A received chunk this large (a view on its own ZeroMQ frame, which nobody writes to or reuses)
# is kept as it is. Smaller ones are copied: libzmq may hand out small messages inside a shared
# receive buffer (8 KiB) that the view would keep alive.
_KEEP_BYTES = 64 << 10
# Checkpoint layout: one row per chunk (simulation, field id, time step, local start, length,
# float64?) and the chunks' values concatenated per dtype.
_KEYS, _F8, _F4 = "keys", "values_f8", "values_f4"


class HeldChunks:
    """Per simulation id: its chunks by (field id, time step), each a list of (start, values)."""

    def __init__(self) -> None:
        self._held: dict[int, dict[tuple[int, int], list[tuple[int, np.ndarray]]]] = {}
        self.nbytes = 0
        self.peak_nbytes = 0

    def add(self, simulation_id: int, field_id: int, time_step: int, start: int,
            data: np.ndarray, *, frame: bool = False) -> None:
        """Hold a chunk. `frame`: data is a view on a received message that nobody else
        keeps, writes to or reuses, so a large one is held without a copy."""
        keep = frame and data.nbytes >= _KEEP_BYTES
        chunks = self._held.setdefault(simulation_id, {}).setdefault((field_id, time_step), [])
        chunks.append((start, data if keep else np.array(data, copy=True)))
        self.nbytes += data.nbytes
        self.peak_nbytes = max(self.peak_nbytes, self.nbytes)

    def chunks(self, simulation_id: int) -> Iterator[tuple[int, int, int, np.ndarray]]:
        """(field id, time step, start, values) of the simulation, by field and time step."""
        for (field_id, time_step), pieces in sorted(self._held.get(simulation_id, {}).items()):
            for start, values in pieces:
                yield field_id, time_step, start, values

    def step(self, simulation_id: int, field_id: int,
             time_step: int) -> list[tuple[int, np.ndarray]]:
        """The simulation's (start, values) pieces of one field and time step."""
        return self._held.get(simulation_id, {}).get((field_id, time_step), [])

    def drop(self, simulation_id: int) -> int:
        """Forget the simulation's chunks; returns how many bytes they held."""
        steps = self._held.pop(simulation_id, {})
        freed = sum(values.nbytes for pieces in steps.values() for _, values in pieces)
        self.nbytes -= freed
        return freed

    def __contains__(self, simulation_id: int) -> bool:
        return simulation_id in self._held

    @property
    def simulations(self) -> list[int]:
        return sorted(self._held)

    def state_dict(self) -> dict[str, np.ndarray]:
        """"keys" (k, 6) int64: simulation, field id, time step, start, length, 1 for float64
        (0: float32); "values_f8" and "values_f4": the chunks' values in key order, per dtype."""
        keys: list[tuple[int, ...]] = []
        f8: list[np.ndarray] = []
        f4: list[np.ndarray] = []
        for sim in sorted(self._held):
            for field_id, time_step, start, values in self.chunks(sim):
                wide = values.dtype == np.float64
                keys.append((sim, field_id, time_step, start, values.shape[0], int(wide)))
                (f8 if wide else f4).append(values)
        return {
            _KEYS: np.array(keys, np.int64).reshape(len(keys), 6),
            _F8: np.concatenate(f8) if f8 else np.zeros(0, np.float64),
            _F4: np.concatenate(f4) if f4 else np.zeros(0, np.float32),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, np.ndarray]) -> HeldChunks:
        """Inverse of `state_dict`; ValueError if the arrays do not fit together."""
        held = cls()
        keys, f8, f4 = (np.asarray(state[name]) for name in (_KEYS, _F8, _F4))
        if keys.ndim != 2 or keys.shape[1] != 6 or f8.dtype != np.float64 or f4.dtype != np.float32:
            raise ValueError("held chunks: malformed keys or values in the checkpoint")
        offsets = {True: 0, False: 0}
        for sim, field_id, time_step, start, length, wide in keys.tolist():
            source = f8 if wide else f4
            at = offsets[bool(wide)]
            if length < 0 or at + length > source.shape[0]:
                raise ValueError("held chunks: fewer values than the keys announce")
            held.add(sim, field_id, time_step, start, source[at:at + length])
            offsets[bool(wide)] = at + length
        if offsets[True] != f8.shape[0] or offsets[False] != f4.shape[0]:
            raise ValueError("held chunks: more values than the keys announce")
        return held
