"""Fused Numba update kernel: one pass over an incoming chunk updates every selected statistic.

The state arrays are the whole (time, cell) arrays of a field; the kernel touches row `t`, cells
[start, start + len(x)). A statistic that is not selected gets an empty array, so that one compiled
kernel serves every selection. Formulas: docs/statistics.md (Welford; Pébay 2008, SAND2008-6212,
single-sample update).

The sample counts are not per-cell arrays: they are piecewise constant over the cells of a time
step (counts.py), and the caller passes the segments the chunk covers, each with its count as a
scalar. Per cell, the four-moment update then moves x (8 B) and reads and writes μ, M2, M3, M4
(64 B): 72 B, against 88 B with a per-cell int64 count.

Speed (bench/stats_kernels.py): `error_model="numpy"` drops Python's division-by-zero check, which
otherwise keeps LLVM from vectorising. The cells go by blocks; within a block, each family
(extrema, each threshold, and the moments, segment piece by segment piece) has its own tight loop
with its choices fixed at compile time, so every loop vectorises, and the block of `x` is re-read
from cache: every byte of `x` and of the state still crosses the memory bus once per update. One
loop doing everything per cell was half as fast for the full SA set (its conditional stores and
runtime flags block vectorisation). Blocks of 64 Ki cells ran the full SA set ~10% faster than
16 Ki (2M and 16M cells, znver4), and no worse up to 512 Ki.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_BLOCK = 65536  # cells per block: 512 KiB of float64 `x`, re-read from L2 (or L3)


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def update(
    x: np.ndarray, t: int, start: int, simulation_id: int, order: int, segments: np.ndarray,
    mean: np.ndarray, m2: np.ndarray, m3: np.ndarray, m4: np.ndarray,
    minimum: np.ndarray, minimum_id: np.ndarray, maximum: np.ndarray, maximum_id: np.ndarray,
    thresholds: np.ndarray, exceedance: np.ndarray,
) -> None:
    """Add sample `x` (1-D float64/float32) of simulation `simulation_id` to row `t`, cells
    [start, start + len(x)) of the state.

    segments: int64 (2k + 1,): the k segments of equal count that cover the chunk, as k + 1
    boundaries (absolute cells: segments[0] = start, segments[k] = start + len(x)) followed by
    the k counts before this sample. The counts are not updated here (the caller does).
    mean, m2, m3, m4: (T, C) float64 mean and central moment sums, used up to `order` (0..4; the
    unused ones may be (0, 0)). minimum/maximum (float64) and their *_id (int64, -1 before the
    first sample): (T, C), or (0, 0) when not tracked. thresholds: (K,) float64; exceedance:
    (K, T, C) int64 counts of x > threshold (K may be 0). No bounds checks: the caller validates
    t, start, the length and the segments.
    """
    size = x.shape[0]
    k = segments.shape[0] // 2
    track_min = minimum.shape[0] > 0
    track_max = maximum.shape[0] > 0
    seg = 0  # the segment that holds cell `c` below
    for lo in range(0, size, _BLOCK):
        hi = min(lo + _BLOCK, size)
        xb = x[lo:hi]
        a, b = start + lo, start + hi
        # Literal flags per call site, as for the order below: min and max share one loop.
        if track_min and track_max:
            lo_v, lo_i = minimum[t, a:b], minimum_id[t, a:b]
            hi_v, hi_i = maximum[t, a:b], maximum_id[t, a:b]
            _extrema(xb, simulation_id, True, lo_v, lo_i, True, hi_v, hi_i)
        elif track_min:
            lo_v, lo_i = minimum[t, a:b], minimum_id[t, a:b]
            _extrema(xb, simulation_id, True, lo_v, lo_i, False, lo_v, lo_i)
        elif track_max:
            hi_v, hi_i = maximum[t, a:b], maximum_id[t, a:b]
            _extrema(xb, simulation_id, False, hi_v, hi_i, True, hi_v, hi_i)
        for j in range(thresholds.shape[0]):
            _exceedance(xb, thresholds[j], exceedance[j, t, a:b])
        if order == 0:
            continue
        # The moments need the count: by the pieces of the segments that cross the block.
        c = a
        while c < b:
            e = min(segments[seg + 1], b)
            n = segments[k + 1 + seg]
            xs = x[c - start:e - start]
            # A literal order per call site: LLVM folds the order tests out of each copy.
            if order == 4:
                _moments(xs, 4, n, mean[t, c:e], m2[t, c:e], m3[t, c:e], m4[t, c:e])
            elif order == 3:
                _moments(xs, 3, n, mean[t, c:e], m2[t, c:e], m3[t, c:e], m3[t, c:e])
            elif order == 2:
                _moments(xs, 2, n, mean[t, c:e], m2[t, c:e], m2[t, c:e], m2[t, c:e])
            else:
                _moments(xs, 1, n, mean[t, c:e], mean[t, c:e], mean[t, c:e], mean[t, c:e])
            c = e
            if c == segments[seg + 1]:
                seg += 1


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy", inline="always")
def _moments(
    x: np.ndarray, order: int, n: int,
    mean: np.ndarray, m2: np.ndarray, m3: np.ndarray, m4: np.ndarray,
) -> None:
    """Single-sample update of cells that all had `n` samples before, in the order of
    docs/statistics.md (M4 and M3 use the old M2, M3). The factors of n are loop invariants; the
    arithmetic per cell is the same, operation for operation, as with a per-cell count. Arrays
    beyond `order` are placeholders and never touched (neither read nor written)."""
    fn = np.float64(n + 1)
    f1 = fn - 1.0
    f2 = fn - 2.0
    f4 = fn * fn - 3.0 * fn + 3.0
    for i in range(x.shape[0]):
        delta = np.float64(x[i]) - mean[i]
        delta_n = delta / fn
        if order >= 2:
            term = delta * delta_n * f1
            mom2 = m2[i]
            if order >= 3:
                mom3 = m3[i]
                if order >= 4:
                    delta_n2 = delta_n * delta_n
                    m4[i] += (term * delta_n2 * f4
                              + 6.0 * delta_n2 * mom2 - 4.0 * delta_n * mom3)
                m3[i] = mom3 + term * delta_n * f2 - 3.0 * delta_n * mom2
            m2[i] = mom2 + term
        mean[i] += delta_n


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy", inline="always")
def _extrema(
    x: np.ndarray, sid: int,
    track_min: bool, min_value: np.ndarray, min_ids: np.ndarray,
    track_max: bool, max_value: np.ndarray, max_ids: np.ndarray,
) -> None:
    """Stores are conditional (masked when vectorised): once the extrema settle, their cache
    lines stay clean and are never written back."""
    for i in range(x.shape[0]):
        xi = np.float64(x[i])
        if track_min and _replaces(xi, min_value[i], min_ids[i], sid, True):
            min_value[i] = xi
            min_ids[i] = sid
        if track_max and _replaces(xi, max_value[i], max_ids[i], sid, False):
            max_value[i] = xi
            max_ids[i] = sid


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy", inline="always")
def _replaces(xi: float, v: float, j: int, sid: int, below: bool) -> bool:
    """Whether sample xi of simulation sid replaces the extremum v reached by simulation j (-1:
    none yet). NaN beats any number (it propagates, as in np.min); ties go to the smallest id,
    so the result depends neither on arrival order nor on merges (extrema.py: same rule)."""
    x_nan, v_nan = np.isnan(xi), np.isnan(v)
    beyond = (xi < v) if below else (xi > v)
    tie = (xi == v) | (x_nan & v_nan)
    return (j < 0) | beyond | (x_nan & (not v_nan)) | (tie & (sid < j))


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def _exceedance(x: np.ndarray, threshold: float, counts: np.ndarray) -> None:
    for i in range(x.shape[0]):
        counts[i] += np.int64(np.float64(x[i]) > threshold)
