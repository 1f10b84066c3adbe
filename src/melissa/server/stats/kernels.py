"""Fused Numba update kernel: one pass over an incoming chunk updates every selected statistic.

The state arrays are the whole (time, cell) arrays of a field; the kernel touches row `t`, cells
[start, start + len(x)). A statistic that is not selected gets an empty array, so that one compiled
kernel serves every selection. Formulas: docs/statistics.md (Welford; Pébay 2008,
SAND2008-6212, single-sample update; ALGORITHMS.md gives the order).

Speed notes (measured in bench/stats_kernels.py): `error_model="numpy"` drops Python's
division-by-zero check, which otherwise keeps LLVM from vectorising the loops. The cells are
walked in blocks; within a block each statistic has its own simple inner loop (which vectorises,
with the invariant choices made once per block), and the block of `x` is re-read from cache, not
from memory: every byte of `x` and of the state crosses the memory bus once per update.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_BLOCK = 16384  # cells per block: 128 KiB of float64 `x`, re-read from L2


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def update(
    x: np.ndarray, t: int, start: int, simulation_id: int, order: int,
    n: np.ndarray, mean: np.ndarray, m2: np.ndarray, m3: np.ndarray, m4: np.ndarray,
    minimum: np.ndarray, minimum_id: np.ndarray, maximum: np.ndarray, maximum_id: np.ndarray,
    thresholds: np.ndarray, exceedance: np.ndarray,
) -> None:
    """Add sample `x` (1-D float64/float32) of simulation `simulation_id` to row `t`, cells
    [start, start + len(x)) of the state.

    n: (T, C) int64 per-cell counts, always updated. mean, m2, m3, m4: (T, C) float64 mean and
    central moment sums, used up to `order` (0..4; the unused ones may be (0, 0)).
    minimum/maximum (float64) and their *_id (int64, -1 before the first sample): (T, C), or
    (0, 0) when not tracked. thresholds: (K,) float64; exceedance: (K, T, C) int64 counts of
    x > threshold (K may be 0). No bounds checks: the caller validates t, start and the length.
    """
    size = x.shape[0]
    track_min = minimum.shape[0] > 0
    track_max = maximum.shape[0] > 0
    for lo in range(0, size, _BLOCK):
        hi = min(lo + _BLOCK, size)
        xb = x[lo:hi]
        a, b = start + lo, start + hi
        if track_min:
            _minimum(xb, simulation_id, minimum[t, a:b], minimum_id[t, a:b])
        if track_max:
            _maximum(xb, simulation_id, maximum[t, a:b], maximum_id[t, a:b])
        for k in range(thresholds.shape[0]):
            _exceedance(xb, thresholds[k], exceedance[k, t, a:b])
        nb = n[t, a:b]
        # A literal order per call site: LLVM folds the order tests out of each copy of the loop.
        if order == 4:
            _moments(xb, 4, nb, mean[t, a:b], m2[t, a:b], m3[t, a:b], m4[t, a:b])
        elif order == 3:
            _moments(xb, 3, nb, mean[t, a:b], m2[t, a:b], m3[t, a:b], m3[t, a:b])
        elif order == 2:
            _moments(xb, 2, nb, mean[t, a:b], m2[t, a:b], m2[t, a:b], m2[t, a:b])
        elif order == 1:
            _moments(xb, 1, nb, mean[t, a:b], mean[t, a:b], mean[t, a:b], mean[t, a:b])
        else:
            nb += 1


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy", inline="always")
def _moments(
    x: np.ndarray, order: int,
    n: np.ndarray, mean: np.ndarray, m2: np.ndarray, m3: np.ndarray, m4: np.ndarray,
) -> None:
    """Single-sample update, in the order of docs/statistics.md (M4 and M3 use the old M2, M3).
    Arrays beyond `order` are placeholders and never touched."""
    for i in range(x.shape[0]):
        count = n[i] + 1
        n[i] = count
        fn = np.float64(count)
        delta = np.float64(x[i]) - mean[i]
        delta_n = delta / fn
        if order >= 2:
            term = delta * delta_n * (fn - 1.0)
            mom2 = m2[i]
            if order >= 3:
                mom3 = m3[i]
                if order >= 4:
                    delta_n2 = delta_n * delta_n
                    m4[i] += (term * delta_n2 * (fn * fn - 3.0 * fn + 3.0)
                              + 6.0 * delta_n2 * mom2 - 4.0 * delta_n * mom3)
                m3[i] = mom3 + term * delta_n * (fn - 2.0) - 3.0 * delta_n * mom2
            m2[i] = mom2 + term
        mean[i] += delta_n


# Extrema: ties go to the smallest simulation id, so the result depends neither on arrival order
# nor on how partial states are merged (np.argmin's choice on samples ordered by id). The stores
# are conditional (masked when vectorised): once the extrema settle, their lines stay clean.
@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def _minimum(x: np.ndarray, sid: int, value: np.ndarray, ids: np.ndarray) -> None:
    for i in range(x.shape[0]):
        xi, v, j = np.float64(x[i]), value[i], ids[i]
        if (j < 0) | (xi < v) | ((xi == v) & (sid < j)):
            value[i] = xi
            ids[i] = sid


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def _maximum(x: np.ndarray, sid: int, value: np.ndarray, ids: np.ndarray) -> None:
    for i in range(x.shape[0]):
        xi, v, j = np.float64(x[i]), value[i], ids[i]
        if (j < 0) | (xi > v) | ((xi == v) & (sid < j)):
            value[i] = xi
            ids[i] = sid


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def _exceedance(x: np.ndarray, threshold: float, counts: np.ndarray) -> None:
    for i in range(x.shape[0]):
        counts[i] += np.int64(np.float64(x[i]) > threshold)
