"""Per-cell quantiles: exact while a cell has few samples, then stochastic approximation.

Each (time step, cell) owns a block of W float64 words (docs/statistics.md, Quantiles):

- while the cell has n <= K samples (K = `sa_config.quantile_exact_samples`; "auto": see
  auto_exact_samples), the block holds them in arrival order (one store per sample, whatever
  K): the result is np.quantile(x, levels) ('linear', Hyndman and Fan's type 7) of the block,
  computed at output time, bit for bit, whatever the order the samples came in;
- with the (K+1)-th sample, the kernel computes that exact quantile of the K + 1 samples for
  every level and a kernel estimate of the density there, and the block holds from then on per
  level the estimate q (float64, words [0, L)) and the density f (float32, the float32 slots
  [2L, 3L)); each sample then moves them by Tierney's (1983) recursion, a Robbins–Monro step
  scaled by the estimated density:

      h_n = C_n / √n                                   C_n = max − min of the cell
      f_n = f_{n−1} + (1{|x_n − q| ≤ h_n}/(2 h_n) − f_{n−1}) / n
      q_n = q_{n−1} + min(1/f_n, C_n √n) / n · (α − 1{x_n ≤ q_{n−1}})

  after which q is clamped into [min, max] of the cell and made non-decreasing in the level.

W = max(K, ⌈1.5 L⌉): the samples and the estimates share the memory. The estimates need the
running min and max, from the min and max statistics when selected (`own_extremes` false), else
kept here. A NaN sample makes the cell's quantiles NaN from then on, as np.quantile's of a sample
holding a NaN (and as the min and max statistics). States merge where a cell has samples on one
side only, or at most K in all (merge); beyond K the estimate depends on the order of the
samples, so server ranks split cells, never samples.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# "auto" K: at most AUTO_MAX_SAMPLES (as an integer quantile_exact_samples); never fewer than
# BASE_SAMPLES (the K of the memory table in docs/statistics.md) whatever the budget; and
# BASE_SAMPLES where the study's size is unknown (a FieldStatistics made without it).
AUTO_MAX_SAMPLES = 10_000
BASE_SAMPLES = 8
# The switch to the estimates sorts the K + 1 samples: by insertion up to this many.
_INSERTION_SORT_MAX = 32


def block_words(exact_samples: int, nb_levels: int) -> int:
    """W: float64 words per cell and time step for K exact samples and L levels."""
    return max(exact_samples, (3 * nb_levels + 1) // 2)


def auto_exact_samples(
    planned: int | None, nb_time_steps: int, n_cells: int, nb_levels: int, budget_bytes: float
) -> tuple[int, str]:
    """K for quantile_exact_samples "auto" and why: the samples a cell will receive (`planned`),
    at most AUTO_MAX_SAMPLES and as many as fit in `budget_bytes` for n_cells × nb_time_steps
    blocks, but never fewer than BASE_SAMPLES nor than the ⌈1.5 L⌉ words the estimates take
    anyway."""
    if planned is None:
        return BASE_SAMPLES, "the study's size is unknown here"
    fit = int(budget_bytes // (8 * nb_time_steps * max(n_cells, 1)))
    floor = max(BASE_SAMPLES, block_words(0, nb_levels))
    k = min(planned, max(fit, floor), AUTO_MAX_SAMPLES)
    if k == planned:
        return k, f"every cell's {planned} planned samples: exact quantiles"
    if k == AUTO_MAX_SAMPLES:
        return k, f"{planned} planned samples, capped at {AUTO_MAX_SAMPLES}"
    return k, (f"{planned} planned samples, but {nb_time_steps} time steps × {n_cells} cells "
               f"× 8 bytes × K must fit in {budget_bytes / 2**20:.6g} MiB "
               f"(sa_config.quantile_memory_mb)" + (f"; K is never below {floor}"
                                                     if fit < floor else ""))


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def _lerp_quantile(xs: np.ndarray, m: int, level: float) -> float:
    """np.quantile(xs[:m], level) (method 'linear') of sorted, NaN-free xs, as NumPy rounds it."""
    h = (m - 1) * level
    lo = math.floor(h)
    if h >= m - 1:
        return xs[m - 1]
    a, b = xs[lo], xs[lo + 1]
    g = h - lo
    d = b - a
    if g >= 0.5:
        return b - d * (1.0 - g)
    return a + d * g


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def update(
    x: np.ndarray, t: int, start: int, segments: np.ndarray, levels: np.ndarray,
    order: np.ndarray, exact: int, words: np.ndarray, halves: np.ndarray,
    low: np.ndarray, high: np.ndarray, own_extremes: bool,
) -> None:
    """Add sample `x` (1-D float64/float32) to row `t`, cells [start, start + len(x)).

    segments: as for kernels.update (the counts before this sample, by segment). levels: (L,)
    float64; order: (L,) int64, the levels' indices in increasing level; exact: K. words:
    (T, C, W) float64 blocks; halves: the same memory as (T, C, 2W) float32. low, high: (T, C)
    float64 running extremes, kept here if `own_extremes`, else the min and max statistics
    (already updated with this sample, NaN once a NaN came)."""
    k = segments.shape[0] // 2
    nl = levels.shape[0]
    scratch = np.empty(exact + 1)
    for s in range(k):
        n = segments[k + 1 + s] + 1  # samples, this one included
        for c in range(segments[s], segments[s + 1]):
            xi = np.float64(x[c - start])
            if own_extremes:
                if n == 1 or np.isnan(xi):
                    low[t, c] = xi
                    high[t, c] = xi
                elif not np.isnan(low[t, c]):
                    low[t, c] = min(low[t, c], xi)
                    high[t, c] = max(high[t, c], xi)
            block = words[t, c]
            if n <= exact:  # in arrival order: np.quantile selects the order statistics
                block[n - 1] = xi
                continue
            if n == exact + 1:
                _start_estimates(block, halves[t, c], xi, levels, scratch)
                continue
            lo, hi = low[t, c], high[t, c]
            if np.isnan(lo) or np.isnan(hi) or np.isnan(xi) or np.isnan(block[0]):
                for j in range(nl):
                    block[j] = np.nan
                continue
            _step(words, halves, t, c, xi, n, lo, hi, levels, order)


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def _start_estimates(
    block: np.ndarray, half: np.ndarray, xi: float, levels: np.ndarray, scratch: np.ndarray,
) -> None:
    """With the (K+1)-th sample xi: the exact quantiles of the K + 1 samples, and the density at
    each by the recursion's kernel (bandwidth C/√m) over them; NaN if a sample is NaN."""
    m = scratch.shape[0]
    scratch[: m - 1] = block[: m - 1]
    scratch[m - 1] = xi
    if m > _INSERTION_SORT_MAX:
        scratch.sort()  # NaN last, as np.sort
    else:  # faster for a few samples (the common K); NaN last too
        for i in range(1, m):
            v = scratch[i]
            j = i
            while j > 0 and (np.isnan(scratch[j - 1]) or scratch[j - 1] > v):
                scratch[j] = scratch[j - 1]
                j -= 1
            scratch[j] = v
    nl = levels.shape[0]
    if np.isnan(scratch[m - 1]):
        for j in range(nl):
            block[j] = np.nan
        return
    bandwidth = (scratch[m - 1] - scratch[0]) / math.sqrt(m)
    for j in range(nl):
        q = _lerp_quantile(scratch, m, levels[j])
        f = 0.0
        if bandwidth > 0.0:
            near = 0
            for v in range(m):
                if abs(scratch[v] - q) <= bandwidth:
                    near += 1
            f = near / (2.0 * bandwidth * m)
        block[j] = q
        half[2 * nl + j] = f


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def _step(
    words: np.ndarray, halves: np.ndarray, t: int, c: int, xi: float, n: int, lo: float,
    hi: float, levels: np.ndarray, order: np.ndarray,
) -> None:
    """One step of the recursion for every level of cell (t, c), then into [lo, hi] and
    monotone in the level."""
    nl = levels.shape[0]
    rate = 1.0 / n
    root = math.sqrt(n)
    spread = hi - lo
    bandwidth = spread / root
    for j in range(nl):
        qj = words[t, c, j]
        near = 0.0
        if bandwidth > 0.0 and abs(xi - qj) <= bandwidth:
            near = 0.5 / bandwidth
        f = np.float64(halves[t, c, 2 * nl + j])
        f = f + (near - f) * rate
        halves[t, c, 2 * nl + j] = f
        step = spread * root
        if f > 0.0 and 1.0 / f < step:
            step = 1.0 / f
        below = 1.0 if xi <= qj else 0.0
        words[t, c, j] = qj + step * rate * (levels[j] - below)
    floor = lo
    for r in range(nl):
        j = order[r]
        floor = min(max(words[t, c, j], floor), hi)
        words[t, c, j] = floor


def results(n: np.ndarray, words: np.ndarray, levels: np.ndarray, exact: int) -> np.ndarray:
    """The estimates (L, T, C) of counts n (T, C) and blocks words (T, C, W); NaN where a cell
    has no sample; np.quantile of the stored samples where it has at most `exact`."""
    nl = levels.shape[0]
    out = np.moveaxis(words[..., :nl], -1, 0).copy()
    out[:, n == 0] = np.nan
    for t in range(n.shape[0]):
        row = n[t]
        for m in np.unique(row[(row > 0) & (row <= exact)]):
            cells = np.flatnonzero(row == m)
            out[:, t, cells] = np.quantile(words[t, cells, :m], levels, axis=1)
    return out


def check_mergeable(n_a: np.ndarray, n_b: np.ndarray, exact: int) -> None:
    """Raise ValueError unless every cell has samples on one side only, or at most K in all."""
    both = (n_a > 0) & (n_b > 0) & (n_a + n_b > exact)
    if both.any():
        t, c = np.argwhere(both)[0]
        raise ValueError(
            f"quantile estimates beyond quantile_exact_samples ({exact}) depend on the order of "
            f"the samples and do not merge: time step {t}, cell {c} has {n_a[t, c]} + "
            f"{n_b[t, c]} samples (split server ranks by cells, never by samples)"
        )


def merge(n_a: np.ndarray, a: np.ndarray, n_b: np.ndarray, b: np.ndarray) -> None:
    """Merge blocks b (C, W) of counts n_b (C,) into a (one time step), as checked by
    check_mergeable: b's block where a has no sample, else b's samples after a's."""
    a[n_a == 0] = b[n_a == 0]
    for c in np.flatnonzero((n_a > 0) & (n_b > 0)):
        a[c, n_a[c] : n_a[c] + n_b[c]] = b[c, : n_b[c]]


def merge_extremes(
    n_a: np.ndarray, a: list[np.ndarray], n_b: np.ndarray, b: list[np.ndarray]
) -> None:
    """Merge one step's own running extremes b = [low, high] into a (np.minimum, np.maximum)."""
    for side, pick in ((0, np.minimum), (1, np.maximum)):
        both = (n_a > 0) & (n_b > 0)
        a[side][both] = pick(a[side][both], b[side][both])
        a[side][n_a == 0] = b[side][n_a == 0]
