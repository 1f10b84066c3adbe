"""Join the members of pick-freeze groups (Sobol' indices) on one server rank, per field.

The p + 2 members of a group (2p + 2 with second-order indices) are separate client jobs whose chunks arrive in any order,
interleaved with other groups. Per (group, time step), a `_PendingStep` collects each member's
values for this rank's cells; once every member has sent all of them, the complete group goes to
the Sobol' state (stats/sobol.py) and the buffer is freed. Members are told apart by their
simulation id: id = group · (p + 2) + member (member 0 = A, 1 = B, 2 + k = C_k).

Memory bound: a (group, time step) holds (p + 2) · local cells · 8 bytes from its first chunk to
its last member's, so the join holds at most that times the (group, time step) pairs in flight:
when a group's members run together (the launcher submits them together), about the steps
between its fastest and slowest member; a group whose members cannot run together (job_limit <
p + 2) holds every step its first members sent until the last one runs. `nbytes` and
`peak_nbytes` report it; buffers of completed steps are kept for reuse on top, up to the
number in flight at the peak and 1 GiB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from melissa.server.stats.sobol import SobolState
from melissa.server.stats.sobol_aggregate import AggregatedSobol
from melissa.server.stats.sobol_second import SecondOrderState

# Freed join buffers kept for reuse, up to this many bytes: a fresh buffer page-faults on its
# first writes, which cost as much as the update itself (bench/sobol.py: ingest 0.45 -> 0.76 GB/s).
_SPARE_BYTES = 1 << 30


@dataclass
class _PendingStep:
    values: np.ndarray  # (p + 2, local cells) float64
    received: np.ndarray  # (p + 2,) int64: cells received per member


class GroupJoin:
    """Joins the groups of one field on one rank and feeds complete ones to `state`."""

    def __init__(self, state: SobolState, second: SecondOrderState | None = None) -> None:
        self.state = state
        self.second = second  # second-order indices: groups of 2p + 2 (D_k members too)
        self.aggregate = AggregatedSobol(state.nb_parameters, state.shape[0])
        p = state.nb_parameters
        self.group_size = p + 2 + (p if second is not None else 0)
        self.pending: dict[tuple[int, int], _PendingStep] = {}
        self.peak_nbytes = 0
        # Buffers of completed steps, reused: a fresh one would page-fault on its first writes.
        self._spare: list[np.ndarray] = []

    def add(self, simulation_id: int, time_step: int, start: int, data: np.ndarray) -> None:
        """One member's chunk for local cells [start, start + len(data)) at time_step. Each
        chunk must come once (the registry drops duplicates before this)."""
        group, member = divmod(simulation_id, self.group_size)
        n_cells = self.state.shape[1]
        key = (group, time_step)
        step = self.pending.get(key)
        if step is None:
            values = self._spare.pop() if self._spare else np.empty((self.group_size, n_cells))
            step = _PendingStep(values, np.zeros(self.group_size, np.int64))
            self.pending[key] = step
            self.peak_nbytes = max(self.peak_nbytes, self.nbytes)
        step.values[member, start:start + data.shape[0]] = data
        step.received[member] += data.shape[0]
        if np.all(step.received == n_cells):
            del self.pending[key]
            before = int(self.state.groups[time_step])
            first = step.values[:self.state.nb_parameters + 2]  # A, B, C_k: C-contiguous
            self.aggregate.add(group, self.state.update(time_step, first))
            if self.second is not None:
                self.second.update(time_step, step.values, before)
            if (len(self._spare) + 1) * step.values.nbytes <= _SPARE_BYTES:
                self._spare.append(step.values)

    def abandon(self, groups: set[int]) -> int:
        """Drop the half-joined steps of these groups (their members were given up); returns
        how many (group, time step) buffers were freed."""
        doomed = [key for key in self.pending if key[0] in groups]
        for key in doomed:
            del self.pending[key]
        self.aggregate.abandon(groups)
        self._spare.clear()
        return len(doomed)

    @property
    def nbytes(self) -> int:
        return sum(s.values.nbytes + s.received.nbytes for s in self.pending.values())

    def state_dict(self) -> dict[str, np.ndarray]:
        """The half-joined steps: "join_keys" (k, 2) int64 (group, time step), "join_values"
        (k, p + 2, cells) float64, "join_received" (k, p + 2) int64; and the aggregated
        indices' state, "aggregate_<name>" (AggregatedSobol.state_dict())."""
        keys = sorted(self.pending)
        n_cells = self.state.shape[1]
        return {
            **{f"aggregate_{k}": v for k, v in self.aggregate.state_dict().items()},
            "join_keys": np.array(keys, np.int64).reshape(len(keys), 2),
            "join_values": np.array([self.pending[k].values for k in keys], np.float64).reshape(
                len(keys), self.group_size, n_cells),
            "join_received": np.array([self.pending[k].received for k in keys],
                                      np.int64).reshape(len(keys), self.group_size),
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Replace the half-joined steps by those of `state_dict()` output."""
        aggregate = {k.removeprefix("aggregate_"): v for k, v in state.items()
                     if k.startswith("aggregate_")}
        if not aggregate:
            raise ValueError("the Sobol' join state has no aggregated indices (a checkpoint of "
                             "an older Melissa): restart the study without --resume")
        self.aggregate.load_state_dict(aggregate)
        keys, values, received = (state[n] for n in ("join_keys", "join_values",
                                                      "join_received"))
        count = len(keys)
        shapes = {"join_keys": (count, 2), "join_values": (count, self.group_size,
                                                            self.state.shape[1]),
                  "join_received": (count, self.group_size)}
        for name, shape in shapes.items():
            if state[name].shape != shape:
                raise ValueError(f"Sobol' join state {name!r} is {list(state[name].shape)}, "
                                 f"expected {list(shape)}")
        self.pending = {
            (int(g), int(t)): _PendingStep(np.array(v, np.float64), np.array(r, np.int64))
            for (g, t), v, r in zip(keys, values, received)
        }
