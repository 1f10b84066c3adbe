"""Iterative statistics of the sensitivity-analysis server: a `FieldStatistics` per field and rank.

Per time step and cell, the state holds only what the SAConfig selection needs (mean and central
moment sums up to `moment_order`; extrema with simulation ids; exceedance counts), plus the sample
counts, piecewise constant over the cells of each time step (counts.py). One fused kernel pass per
incoming chunk updates it (kernels.py). States built from disjoint samples merge (moments.py,
extrema.py, threshold.py). Conventions and the bytes of each statistic: docs/statistics.md.

The arrays are allocated untouched (no page is written, so no memory is committed) and each time
step's row gets its initial values on its first update: a large state costs no stall before the
first update, only the page faults each step would cost anyway, spread over the ingest.
"""

from __future__ import annotations

import operator

import numpy as np

from melissa.config.models import SAConfig
from melissa.server.stats import extrema, kernels, moments, quantiles, threshold
from melissa.server.stats.counts import SegmentedCounts

_MOMENTS = ("mean", "m2", "m3", "m4")
_FLOAT, _INT = np.dtype(np.float64), np.dtype(np.int64)
# Simulation ids and exceedance counts fit 32 bits (fewer than 2^31 simulations). The moments
# stay float64.
_ID, _COUNT32 = np.dtype(np.int32), np.dtype(np.int32)
_INPUT_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))
_COUNT_ARRAYS = ("shape", "count_offsets", "count_starts", "count_values")
# A merge goes segment by segment (scalar counts) while a time step has at most this many segments
# on the union of both sides' boundaries; beyond, it expands that step's counts per cell.
_MERGE_SEGMENTS = 32


class FieldStatistics:
    """Statistics of one field on one server rank: state arrays shaped (nb_time_steps, n_cells)."""

    def __init__(
        self, nb_time_steps: int, n_cells: int, sa: SAConfig, exact_samples: int | None = None
    ) -> None:
        """exact_samples: K of the quantiles; by default sa.quantile_exact_samples, or for "auto"
        quantiles.BASE_SAMPLES (the server passes the K it chose for the study)."""
        if nb_time_steps < 1 or n_cells < 0:
            raise ValueError(
                f"need nb_time_steps >= 1 and n_cells >= 0, got {nb_time_steps} and {n_cells}"
            )
        if exact_samples is None:
            exact_samples = (quantiles.BASE_SAMPLES if sa.quantile_exact_samples == "auto"
                             else sa.quantile_exact_samples)
        if exact_samples < 0:
            raise ValueError(f"need exact_samples >= 0, got {exact_samples}")
        self._sa = sa
        self._exact = exact_samples
        self._shape = (nb_time_steps, n_cells)
        self._counts = SegmentedCounts(nb_time_steps, n_cells)
        self._state = {}
        self._fills: dict[str, float | int] = {}  # per-step arrays: their initial value
        for name, (shape, dtype, fill) in _layout(nb_time_steps, n_cells, sa,
                                                  exact_samples).items():
            if len(shape) == 1:  # thresholds, quantile levels
                self._state[name] = np.array(fill, dtype)
            else:
                self._state[name] = np.empty(shape, dtype)
                self._fills[name] = fill  # type: ignore[assignment]
        self._ready = np.zeros(nb_time_steps, bool)  # rows that hold their initial values
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
            if not self._ready[time_step]:
                self._initialise(slice(time_step, time_step + 1))
            end = start + data.shape[0]
            counts = self._counts
            first, last = counts.cover(time_step, start, end)
            segments = counts.segments(time_step, first, last, end)
            kernels.update(
                data, time_step, start, simulation_id, self._sa.moment_order, segments,
                *self._kernel_state,
            )
            if self._sa.quantiles:
                s = self._state
                own = "quantile_low" in s
                quantiles.update(data, time_step, start, segments, s["quantile_levels"],
                                 self._quantile_order, self._exact,
                                 *self._quantile_blocks, s["quantile_low" if own else "minimum"],
                                 s["quantile_high" if own else "maximum"], own)
            counts.increment(time_step, first, last)

    def merge(self, other: FieldStatistics) -> None:
        """Combine with a state of the same shape built from disjoint samples."""
        if other is self:
            raise ValueError("cannot merge a state with itself (its samples are not disjoint)")
        self._initialise(slice(None))
        other._initialise(slice(None))
        _check_compatible(self._state, other._state)
        if self.shape != other.shape:
            raise ValueError(f"cannot merge states of shapes {self.shape} and {other.shape}")
        a, b = self._state, other._state
        if self._sa.quantiles:
            self._merge_quantiles(other)
        names = _MOMENTS[: self._sa.moment_order]
        for t in range(self.shape[0]):
            starts, n_a, n_b = self._counts.union(other._counts, t)
            if names:
                _merge_moments(t, starts, n_a, n_b, self._counts, [a[m] for m in names],
                               [b[m] for m in names])
            self._counts.set_step(t, starts, [x + y for x, y in zip(n_a, n_b)])
        for side, merge in (("minimum", extrema.merge_minimum), ("maximum", extrema.merge_maximum)):
            if side in a:
                ids = f"{side}_simulation"
                a[side][...], a[ids][...] = merge(a[side], a[ids], b[side], b[ids])
        if "threshold_exceedance" in a:
            a["threshold_exceedance"][...] = threshold.merge(
                a["threshold_exceedance"], b["threshold_exceedance"]
            )

    def _merge_quantiles(self, other: FieldStatistics) -> None:
        """The quantile part of merge, before the counts change (quantiles.py: where it can)."""
        n_a, n_b = self._counts.expand(), other._counts.expand()
        exact = self._exact
        if other._exact != exact:
            raise ValueError(f"cannot merge quantile states of quantile_exact_samples {exact} "
                             f"and {other._exact}")
        quantiles.check_mergeable(n_a, n_b, exact)
        words_a, words_b = self._quantile_blocks[0], other._quantile_blocks[0]
        own = "quantile_low" in self._state
        for t in range(self.shape[0]):
            quantiles.merge(n_a[t], words_a[t], n_b[t], words_b[t])
            if own:
                quantiles.merge_extremes(
                    n_a[t], [self._state[f"quantile_{e}"][t] for e in ("low", "high")],
                    n_b[t], [other._state[f"quantile_{e}"][t] for e in ("low", "high")])

    def results(self, steps: slice = slice(None)) -> dict[str, np.ndarray]:
        """Output arrays by name, of the time steps `steps` (all by default: a writer takes a
        few at a time, so that they never cost much memory next to the state). Always "count"
        (time, cell) int64. Then, as selected in SAConfig: "mean", "variance", "skewness",
        "kurtosis" (time, cell) float64; "minimum", "minimum_simulation", "maximum",
        "maximum_simulation" (time, cell; ids int32, -1 where count is 0);
        "threshold_exceedance" (threshold, time, cell) int32; "quantile" (level, time, cell)
        float64."""
        sa = self._sa
        self._initialise(steps)
        s = {name: a[..., steps, :] if a.ndim > 1 else a for name, a in self._state.items()}
        n = self._counts.expand(steps)
        out = {"count": n}
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
        if sa.quantiles:
            blocks = s["quantile_state"].reshape(*n.shape, self._quantile_words)
            out["quantile"] = quantiles.results(n, blocks, s["quantile_levels"], self._exact)
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        """The raw state (dtypes as in docs/statistics.md, Memory): "shape" [nb_time_steps, n_cells]; the
        count segments (counts.py) as "count_offsets" (nb_time_steps + 1), "count_starts" and
        "count_values" (one entry per segment: time step t has entries count_offsets[t] ..
        count_offsets[t + 1] - 1); then the state arrays of the selection. All read-only. The
        count arrays are a snapshot; the others are views, not copies, that change with later
        updates."""
        self._initialise(slice(None))
        offsets, starts, values = self._counts.to_arrays()
        views = {
            "shape": np.array(self.shape, _INT), "count_offsets": offsets,
            "count_starts": starts, "count_values": values,
        }
        for name, array in self._state.items():
            views[name] = array.view()
        for array in views.values():
            array.flags.writeable = False
        return views

    @classmethod
    def from_state_dict(cls, state: dict[str, np.ndarray], sa: SAConfig) -> FieldStatistics:
        """Rebuild from `state_dict()` output; the arrays are copied. Raises ValueError when the
        state does not match the selection of `sa` (names, shapes, dtypes, threshold values) or
        its count segments do not cover the cells of every time step."""
        for name in _COUNT_ARRAYS:
            if name not in state:
                raise ValueError(f"state lacks {name!r}, which every statistics state has")
        shape = np.asarray(state["shape"])
        if shape.shape != (2,) or shape.dtype.kind not in "iu" or shape[0] < 1 or shape[1] < 0:
            raise ValueError(f"state 'shape' must be [nb_time_steps >= 1, n_cells >= 0], got "
                             f"{shape.tolist()}")
        nb_time_steps, n_cells = (int(v) for v in shape)
        # Before the shapes: another K may give blocks of the same size, read differently.
        # "auto" takes the K the study chose at its start (its inputs may have changed since).
        exact = _restored_exact_samples(state, sa)
        stats = cls.__new__(cls)
        stats._sa = sa
        stats._exact = exact
        stats._shape = (nb_time_steps, n_cells)
        stats._counts = SegmentedCounts.from_arrays(
            nb_time_steps, n_cells, state["count_offsets"], state["count_starts"],
            state["count_values"],
        )
        stats._state = {}
        stats._fills = {}
        stats._ready = np.ones(nb_time_steps, bool)
        for name, (shape_, dtype, _) in _layout(nb_time_steps, n_cells, sa, exact).items():
            if name not in state:
                raise ValueError(f"state lacks {name!r}, which the statistics selection needs")
            array = np.asarray(state[name])
            if array.shape != shape_ or array.dtype != dtype:
                raise ValueError(
                    f"state {name!r} is {array.dtype}{list(array.shape)}, expected "
                    f"{dtype}{list(shape_)}"
                )
            stats._state[name] = np.array(array, order="C")
        extra = sorted(set(state) - set(stats._state) - set(_COUNT_ARRAYS))
        if extra:
            raise ValueError(f"state has arrays the statistics selection does not use: {extra}")
        if "thresholds" in state and list(state["thresholds"]) != list(sa.threshold_values):
            raise ValueError(
                f"state thresholds {list(state['thresholds'])} differ from the "
                f"configured threshold_values {list(sa.threshold_values)}"
            )
        if "quantile_levels" in state and list(state["quantile_levels"]) != list(sa.quantiles):
            raise ValueError(
                f"state quantile levels {list(state['quantile_levels'])} differ from the "
                f"configured quantiles {list(sa.quantiles)}"
            )
        stats._bind()
        return stats

    @property
    def shape(self) -> tuple[int, int]:
        """(nb_time_steps, n_cells)."""
        return self._shape

    @property
    def exact_samples(self) -> int:
        """K: the quantiles are np.quantile's up to this many samples per cell."""
        return self._exact

    @property
    def nbytes(self) -> int:
        """Bytes of the state, as `state_dict()` holds it: the state arrays, and 16 bytes per
        count segment (one per time step where the counts are the same over all cells)."""
        nb_segments = self._counts.nb_segments
        return (sum(array.nbytes for array in self._state.values())
                + 8 * (2 + self.shape[0] + 1 + 2 * nb_segments))

    def _initialise(self, steps: slice) -> None:
        """Give the rows `steps` that have not been used yet their initial values."""
        for t in np.flatnonzero(~self._ready[steps]) + (steps.start or 0):
            for name, fill in self._fills.items():
                self._state[name][..., t, :] = fill
        self._ready[steps] = True

    def _bind(self) -> None:
        """The kernel's state arguments, with empty arrays for what is not tracked."""
        s = self._state
        empty_f, empty_i = np.empty((0, 0), _FLOAT), np.empty((0, 0), _ID)
        self._kernel_state = (
            *(s.get(m, empty_f) for m in _MOMENTS),
            s.get("minimum", empty_f),
            s.get("minimum_simulation", empty_i),
            s.get("maximum", empty_f),
            s.get("maximum_simulation", empty_i),
            s.get("thresholds", np.empty(0, _FLOAT)),
            s.get("threshold_exceedance", np.empty((0, 0, 0), _COUNT32)),
        )
        if "quantile_state" in s:  # (T, C·W) as stored, (T, C, W) for the kernel
            self._quantile_words = quantiles.block_words(self._exact, len(self._sa.quantiles))
            words = s["quantile_state"].reshape(*self.shape, self._quantile_words)
            self._quantile_blocks = (words, words.view(np.float32))
            self._quantile_order = np.argsort(s["quantile_levels"], kind="stable")


def compile_kernels(sa: SAConfig) -> None:
    """Compile (or load from Numba's cache) the update kernel for both input dtypes now, so that
    the first simulation's first chunk does not wait ~0.3 s for it."""
    for dtype in _INPUT_DTYPES:
        FieldStatistics(1, 1, sa).update(0, 0, np.zeros(1, dtype), 0)


def _restored_exact_samples(state: dict[str, np.ndarray], sa: SAConfig) -> int:
    """K of a state: its own with "auto", else the configured one, which it must match."""
    if "quantile_exact" not in state:
        return quantiles.BASE_SAMPLES
    stored = np.asarray(state["quantile_exact"])
    if stored.shape != (1,) or stored.dtype.kind not in "iu" or stored[0] < 0:
        raise ValueError(f"state 'quantile_exact' must be [K >= 0], got {stored.tolist()}")
    if sa.quantile_exact_samples != "auto" and stored[0] != sa.quantile_exact_samples:
        raise ValueError(
            f"state quantile_exact_samples {stored.tolist()} differs from the configured "
            f"quantile_exact_samples {sa.quantile_exact_samples}"
        )
    return int(stored[0])


def _layout(
    nb_time_steps: int, n_cells: int, sa: SAConfig, exact: int
) -> dict[str, tuple[tuple[int, ...], np.dtype, float | list[float]]]:
    """Name -> (shape, dtype, initial values) of every state array the selection needs."""
    shape = (nb_time_steps, n_cells)
    layout: dict[str, tuple[tuple[int, ...], np.dtype, float | list[float]]] = {}
    for name in _MOMENTS[: sa.moment_order]:
        layout[name] = (shape, _FLOAT, 0.0)
    for side, selected in (("minimum", sa.min), ("maximum", sa.max)):
        if selected:
            layout[side] = (shape, _FLOAT, np.nan)
            layout[f"{side}_simulation"] = (shape, _ID, extrema.NO_SIMULATION)
    if sa.threshold_exceedance:
        k = len(sa.threshold_values)
        layout["thresholds"] = ((k,), _FLOAT, sa.threshold_values)
        layout["threshold_exceedance"] = ((k, *shape), _COUNT32, 0)
    if sa.quantiles:
        levels = len(sa.quantiles)
        layout["quantile_levels"] = ((levels,), _FLOAT, sa.quantiles)
        layout["quantile_exact"] = ((1,), _INT, [exact])
        # One block of W words per cell: stored (T, C·W) so that rows are time steps.
        words = quantiles.block_words(exact, levels)
        layout["quantile_state"] = ((nb_time_steps, n_cells * words), _FLOAT, np.nan)
        if not (sa.min and sa.max):  # else the quantiles read the min and max statistics
            layout["quantile_low"] = (shape, _FLOAT, np.nan)
            layout["quantile_high"] = (shape, _FLOAT, np.nan)
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


def _merge_moments(
    t: int, starts: list[int], n_a: list[int], n_b: list[int], counts: SegmentedCounts,
    a: list[np.ndarray], b: list[np.ndarray],
) -> None:
    """Merge row t of moment arrays b into a, where the union segments starting at `starts` have
    n_a and n_b samples: segment by segment with scalar counts (only where both sides have
    samples), or with per-cell counts when the step has many segments."""
    if len(starts) > _MERGE_SEGMENTS:
        lengths = counts.lengths(t, starts)
        per_cell_a, per_cell_b = np.repeat(n_a, lengths), np.repeat(n_b, lengths)
        merged = moments.merge(per_cell_a, [m[t] for m in a], per_cell_b, [m[t] for m in b])
        for array, value in zip(a, merged):
            array[t] = value
        return
    for lo, hi, na, nb in zip(starts, starts[1:] + [counts.n_cells], n_a, n_b):
        if nb == 0:
            continue
        if na == 0:
            for x, y in zip(a, b):
                x[t, lo:hi] = y[t, lo:hi]
            continue
        merged = moments.merge(na, [m[t, lo:hi] for m in a], nb, [m[t, lo:hi] for m in b])
        for array, value in zip(a, merged):
            array[t, lo:hi] = value
