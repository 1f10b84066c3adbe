"""Central moments: the pairwise merge and the finalisers (conventions: docs/statistics.md).

A moment state is the count n (per cell, or one for a segment of cells) and the list
[mean, M2, M3, M4][:order], M_k = Σ(x − μ)^k.
The single-sample update lives in kernels.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def merge(
    n_a: np.ndarray | int, moments_a: Sequence[np.ndarray], n_b: np.ndarray | int,
    moments_b: Sequence[np.ndarray],
) -> list[np.ndarray]:
    """Moments of the union of two disjoint samples (Pébay 2008, SAND2008-6212, eq. 3.1).

    n_a, n_b: the counts, per cell (arrays shaped as the moments) or one count for all the cells
    (scalars; FieldStatistics merges segment by segment of equal counts). The formulas of
    docs/statistics.md ("Merge of two partial states"), written with the fractions a = nA/n and b = nB/n. Where one side is empty
    (count 0) the other side comes out unchanged, bit for bit, even where it holds inf; two
    empty sides give side A (zeros for a state that never had a sample).
    """
    if len(moments_a) != len(moments_b):
        raise ValueError(f"cannot merge moments of order {len(moments_a)} and {len(moments_b)}")
    if not moments_a:
        return []
    na, nb = np.asarray(n_a, np.float64), np.asarray(n_b, np.float64)
    if na.ndim == 0 and nb.ndim == 0 and (na == 0 or nb == 0):
        return [np.array(m, np.float64) for m in (moments_a if nb == 0 else moments_b)]
    # inf − inf gives NaN (as in the update kernel, which does not warn either).
    with np.errstate(invalid="ignore"):
        merged = _merge(na, moments_a, nb, moments_b)
    if na.ndim or nb.ndim:
        # Per cell: an empty side contributes nothing (the formulas would turn inf into NaN).
        merged = [
            np.where(nb == 0, ma, np.where(na == 0, mb, m))
            for ma, mb, m in zip(moments_a, moments_b, merged)
        ]
    return merged


def _merge(
    na: np.ndarray, moments_a: Sequence[np.ndarray], nb: np.ndarray,
    moments_b: Sequence[np.ndarray],
) -> list[np.ndarray]:
    total = np.maximum(na + nb, 1)
    a, b = na / total, nb / total
    delta = moments_b[0] - moments_a[0]
    merged = [moments_a[0] + delta * b]
    if len(moments_a) >= 2:
        m2a, m2b = moments_a[1], moments_b[1]
        merged.append(m2a + m2b + delta * delta * na * b)
    if len(moments_a) >= 3:
        m3a, m3b = moments_a[2], moments_b[2]
        merged.append(m3a + m3b + delta**3 * na * b * (a - b) + 3 * delta * (a * m2b - b * m2a))
    if len(moments_a) >= 4:
        merged.append(
            moments_a[3] + moments_b[3]
            + delta**4 * na * b * (a * a - a * b + b * b)
            + 6 * delta**2 * (a * a * m2b + b * b * m2a)
            + 4 * delta * (a * m3b - b * m3a)
        )
    return merged


def mean(n: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """np.mean(x); NaN where there is no sample."""
    return np.where(n > 0, mu, np.nan)


def variance(n: np.ndarray, m2: np.ndarray) -> np.ndarray:
    """np.var(x, ddof=1) = M2/(n − 1); NaN where n < 2."""
    return _divide(m2, n - 1, n > 1)


def skewness(n: np.ndarray, m2: np.ndarray, m3: np.ndarray) -> np.ndarray:
    """scipy.stats.skew(x, bias=True) = √n·M3/M2^1.5; NaN for constant data (M2 = 0), as SciPy."""
    valid = (n > 0) & (m2 != 0)
    return _divide(np.sqrt(n) * m3, m2**1.5, valid)


def kurtosis(n: np.ndarray, m2: np.ndarray, m4: np.ndarray) -> np.ndarray:
    """scipy.stats.kurtosis(x, fisher=True, bias=True) = n·M4/M2² − 3; NaN where M2 = 0."""
    valid = (n > 0) & (m2 != 0)
    return _divide(n * m4, m2 * m2, valid) - 3.0


def _divide(num: np.ndarray, den: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """num/den where valid, NaN elsewhere (no warnings for the cells left out)."""
    return np.divide(num, den, out=np.full(np.shape(valid), np.nan), where=valid)
