"""Iterative second-order Sobol' indices (Saltelli 2002's extended pick-freeze; docs/statistics.md).

A group then holds 2p + 2 members: A, B, C_k (A with x_k from B) and D_k (B with x_k from A).
C_k and D_l (k ≠ l) share exactly x_k and x_l, so their correlation is the closed index
S_kl^c = S_k + S_l + S_kl; so is that of C_l and D_k. B and C_k share x_k, A and D_k too. The
estimate pairs each closed correlation with first-order ones sharing a member with it (their
errors then partly cancel) and averages the two symmetric forms:

    S_kl = ½ [ r(C_k, D_l) − r(B, C_k) − r(A, D_l) + r(C_l, D_k) − r(B, C_l) − r(A, D_k) ]

(r: the Martinez correlation; on Ishigami with 2,500 groups its standard deviation is 0.018 to
0.025, against 0.020 to 0.034 for r(C_k, D_l) − r(B, C_k) − r(B, C_l)). Per time step and cell
the state holds the means and M2 of Y_Ck, Y_Dk and Y_A, the co-moments C(Y_Ck, Y_Dl) for k ≠ l
and C(Y_A, Y_Dk): (4p + 2 + p²) numbers, one Welford pass like the first-order kernel; r(B, C_k)
comes from the first-order state of the same groups.

Intervals: each of the six correlations gets a Fisher-z interval at level 1 − 0.05/6, and S_kl's
is half the sum of the closed ones' low ends minus the first-order ones' high ends, and the
converse: by Bonferroni it holds the true value with probability at least 95% (conservative).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from melissa.server.stats.sobol import NEGLIGIBLE, SobolState, _correlation, fisher_interval

_FLOAT = np.dtype(np.float64)
_BLOCK = 2048  # cells per block of the update
_Z_BONFERRONI = 2.6382572792916377  # the standard normal's 1 − 0.05/12 quantile


def pairs(p: int) -> list[tuple[int, int]]:
    """The ordered (k, l), k ≠ l, in the order of the co-moment rows C(Y_Ck, Y_Dl)."""
    return [(k, l) for k in range(p) for l in range(p) if k != l]


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def update(y: np.ndarray, t: int, n: int, mean: np.ndarray, m2: np.ndarray,
           cov_cd: np.ndarray, cov_ad: np.ndarray, pair_k: np.ndarray,
           pair_l: np.ndarray) -> None:
    """Add one complete group y (2p + 2, C) at time step t (n groups before). Welford on the
    2p + 1 rows C_1..C_p, D_1..D_p, A (mean, m2 (2p + 1, T, C)); co-moments
    C(Y_Ck, Y_Dl) += δ_Ck·(y_Dl − μ_Dl,new) (cov_cd (p(p − 1), T, C)) and
    C(Y_A, Y_Dk) += δ_A·(y_Dk − μ_Dk,new) (cov_ad (p, T, C))."""
    p = cov_ad.shape[0]
    cells = y.shape[1]
    inv = 1.0 / (n + 1.0)
    # Cells in blocks, each array swept contiguously within a block: the deltas of the block
    # (2p + 1 rows) stay in cache.
    width = min(cells, _BLOCK)
    da = np.empty(width)
    delta = np.empty((p, width))
    after = np.empty((p, width))
    for lo in range(0, cells, _BLOCK):
        hi = min(lo + _BLOCK, cells)
        for i in range(lo, hi):
            ya = y[0, i]
            d = ya - mean[2 * p, t, i]
            mean[2 * p, t, i] += d * inv
            m2[2 * p, t, i] += d * (ya - mean[2 * p, t, i])
            da[i - lo] = d
        for r in range(2 * p):
            for i in range(lo, hi):
                v = y[2 + r, i]
                d = v - mean[r, t, i]
                mean[r, t, i] += d * inv
                m2[r, t, i] += d * (v - mean[r, t, i])
                if r < p:
                    delta[r, i - lo] = d
                else:
                    after[r - p, i - lo] = v - mean[r, t, i]
        for j in range(pair_k.shape[0]):
            k, l = pair_k[j], pair_l[j]
            for i in range(lo, hi):
                cov_cd[j, t, i] += delta[k, i - lo] * after[l, i - lo]
        for k in range(p):
            for i in range(lo, hi):
                cov_ad[k, t, i] += da[i - lo] * after[k, i - lo]


@njit(cache=True, nogil=True, error_model="numpy")
def _indices(mean: np.ndarray, m2: np.ndarray, cov_cd: np.ndarray, cov_ad: np.ndarray,
             cov_bc: np.ndarray, m2_b: np.ndarray, mean_b: np.ndarray, groups: np.ndarray,
             negligible: np.ndarray, index: np.ndarray, low: np.ndarray,
             high: np.ndarray) -> None:
    """S_kl and its interval into index, low, high (p, p, T, C): symmetric, NaN on the
    diagonal and where negligible (T, C). cov_bc (p, T, C), m2_b and mean_b (T, C): the
    first-order state's."""
    p = cov_ad.shape[0]
    a = 2 * p
    steps, cells = negligible.shape
    for k in range(p):
        for l in range(k + 1, p):
            kl = k * (p - 1) + l - 1  # row of (k, l) in pairs(p)
            lk = l * (p - 1) + k  # row of (l, k)
            for t in range(steps):
                n = groups[t]
                for c in range(cells):
                    s = lo = hi = np.nan
                    if not negligible[t, c]:
                        closed = (
                            _correlation(cov_cd[kl, t, c], m2[k, t, c], m2[p + l, t, c],
                                         mean[k, t, c], mean[p + l, t, c]),
                            _correlation(cov_cd[lk, t, c], m2[l, t, c], m2[p + k, t, c],
                                         mean[l, t, c], mean[p + k, t, c]))
                        first = (
                            _correlation(cov_bc[k, t, c], m2_b[t, c], m2[k, t, c],
                                         mean_b[t, c], mean[k, t, c]),
                            _correlation(cov_bc[l, t, c], m2_b[t, c], m2[l, t, c],
                                         mean_b[t, c], mean[l, t, c]),
                            _correlation(cov_ad[k, t, c], m2[a, t, c], m2[p + k, t, c],
                                         mean[a, t, c], mean[p + k, t, c]),
                            _correlation(cov_ad[l, t, c], m2[a, t, c], m2[p + l, t, c],
                                         mean[a, t, c], mean[p + l, t, c]))
                        s = 0.5 * (closed[0] + closed[1] - first[0] - first[1] - first[2]
                                   - first[3])
                        lo = hi = 0.0
                        for r in closed:
                            r_lo, r_hi = fisher_interval(r, n, _Z_BONFERRONI)
                            lo += r_lo
                            hi += r_hi
                        for r in first:
                            r_lo, r_hi = fisher_interval(r, n, _Z_BONFERRONI)
                            lo -= r_hi
                            hi -= r_lo
                        lo, hi = 0.5 * lo, 0.5 * hi
                    index[k, l, t, c] = index[l, k, t, c] = s
                    low[k, l, t, c] = low[l, k, t, c] = lo
                    high[k, l, t, c] = high[l, k, t, c] = hi


class SecondOrderState:
    """The extra Welford state of second-order indices on one rank, next to its `SobolState`."""

    def __init__(self, nb_parameters: int, nb_time_steps: int, n_cells: int) -> None:
        p = nb_parameters
        self.nb_parameters = p
        self.shape = (nb_time_steps, n_cells)
        index = np.array(pairs(p), np.int64).reshape(-1, 2)
        self._pair_k, self._pair_l = index[:, 0].copy(), index[:, 1].copy()
        self.arrays = {
            "mean": np.full((2 * p + 1, nb_time_steps, n_cells), 0.0),
            "m2": np.full((2 * p + 1, nb_time_steps, n_cells), 0.0),
            "cov_cd": np.full((len(index), nb_time_steps, n_cells), 0.0),
            "cov_ad": np.full((p, nb_time_steps, n_cells), 0.0),
        }

    def update(self, time_step: int, y: np.ndarray, n: int) -> None:
        """A complete group y (2p + 2, cells) at time_step, which had n groups before."""
        a = self.arrays
        update(y, int(time_step), int(n), a["mean"], a["m2"], a["cov_cd"], a["cov_ad"],
               self._pair_k, self._pair_l)

    def results(self, first: SobolState, scale: np.ndarray | None = None
                ) -> dict[str, np.ndarray]:
        """"sobol_second" and its "_low"/"_high" bounds (parameter, parameter_2, time, cell),
        from this state and the first-order state `first` of the same groups; the same cells
        NaN as there (negligible variance, relative to `scale`)."""
        p = self.nb_parameters
        a, f = self.arrays, first.arrays
        scale = first.variance_scale() if scale is None else scale
        negligible = f["m2_a"] + f["m2_b"] <= NEGLIGIBLE * scale[:, None]
        out = {name: np.full((p, p, *self.shape), np.nan)
               for name in ("sobol_second", "sobol_second_low", "sobol_second_high")}
        _indices(a["mean"], a["m2"], a["cov_cd"], a["cov_ad"], f["cov_bc"], f["m2_b"],
                 f["mean_b"], first.groups, negligible, *out.values())
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        return {f"sobol2_{name}": array.copy() for name, array in self.arrays.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for name, array in self.arrays.items():
            got = state.get(f"sobol2_{name}")
            if got is None or got.shape != array.shape or got.dtype != _FLOAT:
                what = "missing" if got is None else f"{got.dtype}{list(got.shape)}"
                raise ValueError(f"second-order Sobol' state {name!r} is {what}, expected "
                                 f"float64{list(array.shape)}")
            array[...] = got

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())
