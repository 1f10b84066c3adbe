"""Simulations whose data one server rank committed to the statistics before they completed.

Held data is committed early when the rank's budget (sa_config.hold_memory_mb, held.py) is
reached. Such a simulation's data cannot be taken out again: if it is abandoned after all (or the
study ends before it completes), the (field, time step) pairs it reached the results in are kept
here, so that the results can say which steps hold abandoned samples (the variable
abandoned_samples, statistics/abandoned_data.csv).
"""

from __future__ import annotations

import numpy as np

_STEPS, _ABANDONED = "early_steps", "early_abandoned"


class EarlyCommits:
    def __init__(self) -> None:
        # simulation id -> (field id, time step) committed early, while it may still be abandoned
        self.running: dict[int, set[tuple[int, int]]] = {}
        # abandoned simulation id -> (field id, time step) its data is in the results at
        self.abandoned: dict[int, set[tuple[int, int]]] = {}

    def __contains__(self, simulation_id: int) -> bool:
        return simulation_id in self.running

    def start(self, simulation_id: int) -> None:
        """From now on the simulation's chunks are committed on arrival."""
        self.running.setdefault(simulation_id, set())

    def record(self, simulation_id: int, field_id: int, time_step: int) -> None:
        self.running[simulation_id].add((field_id, time_step))

    def settle(self, simulation_id: int) -> None:
        """The simulation (its whole Sobol' group) completed: its data belongs in the results."""
        self.running.pop(simulation_id, None)

    def abandon(self, simulation_id: int, left_out: set[tuple[int, int]]) -> bool:
        """The simulation was abandoned: what it committed stays in the results, except the
        (field, time step) pairs in `left_out`. True if anything stays."""
        steps = self.running.pop(simulation_id, set()) - left_out
        if steps:
            self.abandoned.setdefault(simulation_id, set()).update(steps)
        return bool(steps)

    def counts(self, field_id: int, nb_time_steps: int) -> np.ndarray:
        """(time steps,) int32: abandoned simulations whose data the field's results hold."""
        out = np.zeros(nb_time_steps, np.int32)
        for steps in self.abandoned.values():
            for field, step in steps:
                if field == field_id:
                    out[step] += 1
        return out

    def steps_of(self, simulation_id: int, field_id: int) -> list[int]:
        return sorted(t for f, t in self.abandoned.get(simulation_id, ()) if f == field_id)

    def state_dict(self) -> dict[str, np.ndarray]:
        """(k, 3) int64 rows (simulation, field id, time step) per table; field and step -1:
        a simulation committed early that has not sent anything since."""
        return {name: _rows(table) for name, table in ((_STEPS, self.running),
                                                       (_ABANDONED, self.abandoned))}

    @classmethod
    def from_state_dict(cls, state: dict[str, np.ndarray]) -> EarlyCommits:
        early = cls()
        for name, table in ((_STEPS, early.running), (_ABANDONED, early.abandoned)):
            rows = np.asarray(state.get(name, np.zeros((0, 3), np.int64)))
            if rows.ndim != 2 or rows.shape[1] != 3:
                raise ValueError(f"early commits: malformed {name!r} in the checkpoint")
            for sim, field, step in rows.tolist():
                steps = table.setdefault(sim, set())
                if field >= 0:
                    steps.add((field, step))
        return early


def _rows(table: dict[int, set[tuple[int, int]]]) -> np.ndarray:
    rows = [(sim, field, step) for sim in sorted(table)
            for field, step in (sorted(table[sim]) or [(-1, -1)])]
    return np.array(rows, np.int64).reshape(len(rows), 3)
