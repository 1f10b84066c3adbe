"""Iterative statistics of the sensitivity-analysis server: a `FieldStatistics` per field and rank.

Per time step and cell, the state holds only what the SAConfig selection needs (count always;
mean and central moment sums up to `moment_order`; extrema with simulation ids; exceedance counts)
and is updated by one fused kernel pass per incoming chunk (kernels.py). States built from disjoint
samples merge (moments.py, extrema.py, threshold.py). Conventions: docs/statistics.md.
"""

from __future__ import annotations

import operator

import numpy as np

from melissa.config.models import SAConfig
from melissa.server.stats import extrema, kernels, moments, threshold

_MOMENTS = ("mean", "m2", "m3", "m4")
_FLOAT, _INT = np.dtype(np.float64), np.dtype(np.int64)
_INPUT_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


class FieldStatistics:
    """Statistics of one field on one server rank: state arrays shaped (nb_time_steps, n_cells)."""

    def __init__(self, nb_time_steps: int, n_cells: int, sa: SAConfig) -> None:
        if nb_time_steps < 1 or n_cells < 0:
            raise ValueError(
                f"need nb_time_steps >= 1 and n_cells >= 0, got {nb_time_steps} and {n_cells}"
            )
        self._sa = sa
        self._state = {
            name: np.full(shape, fill, dtype)
            for name, (shape, dtype, fill) in _layout(nb_time_steps, n_cells, sa).items()
        }
        self._bind()

    def update(self, time_step: int, start: int, data: np.ndarray, simulation_id: int) -> None:
        """Add one simulation's values for local cells [start, start + len(data)) at time_step.
        data: 1-D C-contiguous float64 or float32 (may be a read-only view on a zmq frame: never
        write to it)."""
        # Plain ints: a NumPy integer type would compile another kernel specialisation.
        time_step, start = operator.index(time_step), operator.index(start)
        simulation_id = operator.index(simulation_id)
        nb_time_steps, n_cells = self.shape
        if data.ndim != 1 or data.dtype not in _INPUT_DTYPES or not data.flags.c_contiguous:
            raise ValueError(
                f"data must be a 1-D C-contiguous native float64 or float32 array, got "
                f"{data.ndim}-D {data.dtype.str} (contiguous: {data.flags.c_contiguous})"
            )
        if not 0 <= time_step < nb_time_steps:
            raise ValueError(f"time step {time_step} out of range [0, {nb_time_steps})")
        if start < 0 or start + data.shape[0] > n_cells:
            raise ValueError(
                f"cells [{start}, {start + data.shape[0]}) out of the local range [0, {n_cells})"
            )
        if simulation_id < 0:
            raise ValueError(f"simulation id must be >= 0, got {simulation_id}")
        if data.shape[0]:
            kernels.update(
                data, time_step, start, simulation_id, self._sa.moment_order, *self._kernel_state
            )

    def merge(self, other: FieldStatistics) -> None:
        """Combine with a state of the same shape built from disjoint samples."""
        if other is self:
            raise ValueError("cannot merge a state with itself (its samples are not disjoint)")
        _check_compatible(self._state, other._state)
        a, b = self._state, other._state
        names = _MOMENTS[: self._sa.moment_order]
        merged = moments.merge(a["count"], [a[m] for m in names], b["count"], [b[m] for m in names])
        for name, value in zip(_MOMENTS, merged):
            a[name][...] = value
        a["count"] += b["count"]
        for side, merge in (("minimum", extrema.merge_minimum), ("maximum", extrema.merge_maximum)):
            if side in a:
                ids = f"{side}_simulation"
                a[side][...], a[ids][...] = merge(a[side], a[ids], b[side], b[ids])
        if "threshold_exceedance" in a:
            a["threshold_exceedance"][...] = threshold.merge(
                a["threshold_exceedance"], b["threshold_exceedance"]
            )

    def results(self) -> dict[str, np.ndarray]:
        """Output arrays by name. Always "count" (time, cell) int64. Then, as selected in SAConfig:
        "mean", "variance", "skewness", "kurtosis" (time, cell) float64; "minimum",
        "minimum_simulation", "maximum", "maximum_simulation" (time, cell; ids int64, -1 where
        count is 0); "threshold_exceedance" (threshold, time, cell) int64."""
        s, sa = self._state, self._sa
        n = s["count"]
        out = {"count": n.copy()}
        if sa.mean:
            out["mean"] = moments.mean(n, s["mean"])
        if sa.variance:
            out["variance"] = moments.variance(n, s["m2"])
        if sa.skewness:
            out["skewness"] = moments.skewness(n, s["m2"], s["m3"])
        if sa.kurtosis:
            out["kurtosis"] = moments.kurtosis(n, s["m2"], s["m4"])
        for name in ("minimum", "minimum_simulation", "maximum", "maximum_simulation",
                     "threshold_exceedance"):
            if name in s:
                out[name] = s[name].copy()
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        """The raw state arrays (read-only views, not copies: they change with later updates)."""
        views = {}
        for name, array in self._state.items():
            views[name] = array.view()
            views[name].flags.writeable = False
        return views

    @classmethod
    def from_state_dict(cls, state: dict[str, np.ndarray], sa: SAConfig) -> FieldStatistics:
        """Rebuild from `state_dict()` output; the arrays are copied. Raises ValueError when the
        state does not match the selection of `sa` (names, shapes, dtypes, threshold values)."""
        if "count" not in state or np.ndim(state["count"]) != 2:
            raise ValueError("state has no 2-D 'count' array")
        nb_time_steps, n_cells = np.shape(state["count"])
        stats = cls.__new__(cls)
        stats._sa = sa
        stats._state = {}
        for name, (shape, dtype, _) in _layout(nb_time_steps, n_cells, sa).items():
            if name not in state:
                raise ValueError(f"state lacks {name!r}, which the statistics selection needs")
            array = np.asarray(state[name])
            if array.shape != shape or array.dtype != dtype:
                raise ValueError(
                    f"state {name!r} is {array.dtype}{list(array.shape)}, expected "
                    f"{dtype}{list(shape)}"
                )
            stats._state[name] = np.array(array, order="C")
        extra = sorted(set(state) - set(stats._state))
        if extra:
            raise ValueError(f"state has arrays the statistics selection does not use: {extra}")
        if "thresholds" in state and list(state["thresholds"]) != list(sa.threshold_values):
            raise ValueError(
                f"state thresholds {list(state['thresholds'])} differ from the "
                f"configured threshold_values {list(sa.threshold_values)}"
            )
        stats._bind()
        return stats

    @property
    def shape(self) -> tuple[int, int]:
        """(nb_time_steps, n_cells)."""
        nb_time_steps, n_cells = self._state["count"].shape
        return nb_time_steps, n_cells

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for array in self._state.values())

    def _bind(self) -> None:
        """The kernel's state arguments, with empty arrays for what is not tracked."""
        s = self._state
        empty_f, empty_i = np.empty((0, 0), _FLOAT), np.empty((0, 0), _INT)
        self._kernel_state = (
            s["count"],
            *(s.get(m, empty_f) for m in _MOMENTS),
            s.get("minimum", empty_f),
            s.get("minimum_simulation", empty_i),
            s.get("maximum", empty_f),
            s.get("maximum_simulation", empty_i),
            s.get("thresholds", np.empty(0, _FLOAT)),
            s.get("threshold_exceedance", np.empty((0, 0, 0), _INT)),
        )


def compile_kernels(sa: SAConfig) -> None:
    """Compile (or load from Numba's cache) the update kernel for both input dtypes now, so that
    the first simulation's first chunk does not wait ~0.3 s for it."""
    for dtype in _INPUT_DTYPES:
        FieldStatistics(1, 1, sa).update(0, 0, np.zeros(1, dtype), 0)


def _layout(
    nb_time_steps: int, n_cells: int, sa: SAConfig
) -> dict[str, tuple[tuple[int, ...], np.dtype, float | list[float]]]:
    """Name -> (shape, dtype, initial values) of every state array the selection needs."""
    shape = (nb_time_steps, n_cells)
    layout: dict[str, tuple[tuple[int, ...], np.dtype, float | list[float]]] = {
        "count": (shape, _INT, 0)
    }
    for name in _MOMENTS[: sa.moment_order]:
        layout[name] = (shape, _FLOAT, 0.0)
    for side, selected in (("minimum", sa.min), ("maximum", sa.max)):
        if selected:
            layout[side] = (shape, _FLOAT, np.nan)
            layout[f"{side}_simulation"] = (shape, _INT, extrema.NO_SIMULATION)
    if sa.threshold_exceedance:
        k = len(sa.threshold_values)
        layout["thresholds"] = ((k,), _FLOAT, sa.threshold_values)
        layout["threshold_exceedance"] = ((k, *shape), _INT, 0)
    return layout


def _check_compatible(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    if a.keys() != b.keys():
        raise ValueError(f"cannot merge states of different selections: {sorted(a)}, {sorted(b)}")
    for name, array in a.items():
        if array.shape != b[name].shape:
            raise ValueError(f"cannot merge {name!r}: shapes {array.shape} and {b[name].shape}")
    if "thresholds" in a and not np.array_equal(a["thresholds"], b["thresholds"]):
        raise ValueError(
            f"cannot merge exceedance counts of different thresholds: "
            f"{list(a['thresholds'])} vs {list(b['thresholds'])}"
        )
