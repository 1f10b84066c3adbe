"""Iterative Sobol' indices (pick-freeze, Martinez estimator; Terraz et al. SC17; docs/statistics.md).

One observation is a complete pick-freeze group at one time step: the p + 2 values Y_A, Y_B,
Y_C1..Y_Cp of every cell (the server joins the group's members first: ../sa/groups.py). Per time step
the state holds the number n of groups and, per cell, the means and M2 of Y_A, Y_B and each Y_Ck
and the co-moments C(Y_B, Y_Ck) and C(Y_A, Y_Ck): 4p + 4 numbers. The first-order and total
indices are correlations of these:

    S_k  = C(Y_B, Y_Ck) / √(M2_B · M2_Ck)
    ST_k = 1 − C(Y_A, Y_Ck) / √(M2_A · M2_Ck)

with Fisher-z 95% intervals tanh(atanh(r) ± 1.96/√(n − 3)) on each correlation r (for ST = 1 − r
the interval is [1 − r_high, 1 − r_low]). Where a variance is zero (relative to the mean) the
index is undefined: NaN. Every update goes through one Welford/co-moment routine (`update`), whose
counter is the same for means, M2 and co-moments (the legacy C server's off-by-one fed the
co-moments n − 1); states of disjoint groups merge (Pébay 2008, co-moment rule).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_FLOAT, _INT = np.dtype(np.float64), np.dtype(np.int64)
_Z95 = 1.959963984540054  # the standard normal's 0.975 quantile
# A variance below (this x |mean|)² (or exactly 0) is a constant output for the estimator.
_RELATIVE_ZERO = 1e-12
# A cell whose output variance is at most this times the field's largest (at that time step)
# has round-off indices: NaN (docs/statistics.md, "Sobol' indices").
NEGLIGIBLE = 1e-12
_BLOCK = 4096  # cells per block: the block's deltas of A and B stay in L1
STATE = ("mean_a", "mean_b", "m2_a", "m2_b", "mean_c", "m2_c", "cov_bc", "cov_ac")


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def update(
    y: np.ndarray, t: int, n: int,
    mean_a: np.ndarray, mean_b: np.ndarray, m2_a: np.ndarray, m2_b: np.ndarray,
    mean_c: np.ndarray, m2_c: np.ndarray, cov_bc: np.ndarray, cov_ac: np.ndarray,
    increments: np.ndarray,
) -> None:
    """Add one complete group `y` (p + 2, C) float64 — rows A, B, C_1..C_p — to time step t,
    whose cells all had n groups before. Welford: δ = y − μ_old; μ += δ/(n + 1);
    M2 += δ·(y − μ_new); co-moment C(X, Y) += δ_X·(y_Y − μ_Y,new).
    State: mean_a..m2_b (T, C); mean_c, m2_c, cov_bc, cov_ac (p, T, C).
    `increments` (p, 5) receives what the group added, summed over the cells, to
    C(B, Ck), C(A, Ck), M2_A, M2_B and M2_Ck: the aggregated indices' observation
    (sobol_aggregate.py)."""
    p = y.shape[0] - 2
    cells = y.shape[1]
    inv = 1.0 / (n + 1.0)
    delta_a = np.empty(min(cells, _BLOCK))
    delta_b = np.empty(min(cells, _BLOCK))
    increments[...] = 0.0
    va = 0.0
    vb = 0.0
    for lo in range(0, cells, _BLOCK):
        hi = min(lo + _BLOCK, cells)
        for i in range(lo, hi):
            da = y[0, i] - mean_a[t, i]
            db = y[1, i] - mean_b[t, i]
            mean_a[t, i] += da * inv
            mean_b[t, i] += db * inv
            ra = da * (y[0, i] - mean_a[t, i])
            rb = db * (y[1, i] - mean_b[t, i])
            m2_a[t, i] += ra
            m2_b[t, i] += rb
            va += ra
            vb += rb
            delta_a[i - lo] = da
            delta_b[i - lo] = db
        for k in range(p):
            ubc = 0.0
            uac = 0.0
            w = 0.0
            for i in range(lo, hi):
                yc = y[2 + k, i]
                dc = yc - mean_c[k, t, i]
                mc = mean_c[k, t, i] + dc * inv
                mean_c[k, t, i] = mc
                r = yc - mc
                rc = dc * r
                bc = delta_b[i - lo] * r
                ac = delta_a[i - lo] * r
                m2_c[k, t, i] += rc
                cov_bc[k, t, i] += bc
                cov_ac[k, t, i] += ac
                w += rc
                ubc += bc
                uac += ac
            increments[k, 0] += ubc
            increments[k, 1] += uac
            increments[k, 4] += w
    for k in range(p):
        increments[k, 2] = va
        increments[k, 3] = vb


class SobolState:
    """Martinez state of one field on one server rank: p parameters, (nb_time_steps, n_cells)."""

    def __init__(self, nb_parameters: int, nb_time_steps: int, n_cells: int) -> None:
        if nb_parameters < 1 or nb_time_steps < 1 or n_cells < 0:
            raise ValueError(
                f"need p >= 1, nb_time_steps >= 1 and n_cells >= 0, got {nb_parameters}, "
                f"{nb_time_steps} and {n_cells}"
            )
        self.nb_parameters = nb_parameters
        self.shape = (nb_time_steps, n_cells)
        self.groups = np.zeros(nb_time_steps, _INT)  # complete groups per time step
        # np.full, not np.zeros: the pages are touched now, at the field's first HELLO, and not
        # by the first updates (a first touch costs about as much as the update itself).
        self.arrays = {
            name: np.full(self._shape_of(name), 0.0) for name in STATE
        }

    def _shape_of(self, name: str) -> tuple[int, ...]:
        per_parameter = name in ("mean_c", "m2_c", "cov_bc", "cov_ac")
        return (self.nb_parameters, *self.shape) if per_parameter else self.shape

    def update(self, time_step: int, y: np.ndarray) -> np.ndarray:
        """Add a complete group's values at time_step: y (p + 2, n_cells) float64, C order.
        Returns its increments (p, 5) of the cell sums (see `update`)."""
        expected = (self.nb_parameters + 2, self.shape[1])
        if y.shape != expected or y.dtype != _FLOAT or not y.flags.c_contiguous:
            raise ValueError(f"a group is a C-contiguous float64 array {expected}, got "
                             f"{y.dtype}{list(y.shape)}")
        if not 0 <= time_step < self.shape[0]:
            raise ValueError(f"time step {time_step} out of range [0, {self.shape[0]})")
        a = self.arrays
        increments = np.empty((self.nb_parameters, 5))
        update(y, int(time_step), int(self.groups[time_step]),
               *[*(a[name] for name in STATE), increments])
        self.groups[time_step] += 1
        return increments

    def merge(self, other: SobolState) -> None:
        """Combine with a state of the same shape built from other (disjoint) groups."""
        if other is self:
            raise ValueError("cannot merge a state with itself (its groups are not disjoint)")
        if (other.nb_parameters, other.shape) != (self.nb_parameters, self.shape):
            raise ValueError(
                f"cannot merge Sobol' states of p={other.nb_parameters} {other.shape} into "
                f"p={self.nb_parameters} {self.shape}"
            )
        for t in range(self.shape[0]):
            na, nb = int(self.groups[t]), int(other.groups[t])
            if nb == 0:
                continue
            if na == 0:
                for name, array in self.arrays.items():
                    array[..., t, :] = other.arrays[name][..., t, :]
            else:
                _merge_step(self.arrays, other.arrays, t, na, nb)
            self.groups[t] = na + nb

    def results(self, scale: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """"sobol_first", "sobol_total" and their "_low"/"_high" 95% bounds (parameter, time,
        cell) float64, and "sobol_groups" (time, cell) int64: complete groups. A cell whose
        output variance (M2_A + M2_B) is at most NEGLIGIBLE × `scale` at its time step — the
        field's largest, over every rank (default: this rank's, `variance_scale()`) — gets
        NaN: its indices would be round-off."""
        a = self.arrays
        scale = self.variance_scale() if scale is None else scale
        spread = a["m2_a"] + a["m2_b"]
        negligible = spread <= NEGLIGIBLE * scale[:, None]
        out = {}
        for kind, cov, x in (("first", "cov_bc", "b"), ("total", "cov_ac", "a")):
            index, low, high = (np.empty(a[cov].shape) for _ in range(3))
            _indices(a[cov], a[f"m2_{x}"], a["m2_c"], a[f"mean_{x}"], a["mean_c"], self.groups,
                     kind == "total", negligible, index, low, high)
            out.update({f"sobol_{kind}": index, f"sobol_{kind}_low": low,
                        f"sobol_{kind}_high": high})
        out["sobol_groups"] = np.repeat(self.groups[:, None], self.shape[1], axis=1)
        return out

    def variance_scale(self) -> np.ndarray:
        """(T,) the largest M2_A + M2_B over this rank's cells per time step (0 if none)."""
        spread = self.arrays["m2_a"] + self.arrays["m2_b"]
        return spread.max(axis=1) if spread.shape[1] else np.zeros(self.shape[0])

    def state_dict(self) -> dict[str, np.ndarray]:
        """"sobol_groups" (T,) int64 and the state arrays (copies)."""
        return {"sobol_groups": self.groups.copy(),
                **{f"sobol_{name}": array.copy() for name, array in self.arrays.items()}}

    @classmethod
    def from_state_dict(
        cls, state: dict[str, np.ndarray], nb_parameters: int, nb_time_steps: int, n_cells: int
    ) -> SobolState:
        """Inverse of `state_dict`; raises ValueError when a name, shape or dtype differs."""
        result = cls(nb_parameters, nb_time_steps, n_cells)
        expected: dict[str, tuple[tuple[int, ...], np.dtype]] = {
            "sobol_groups": ((nb_time_steps,), _INT)}
        expected.update({f"sobol_{n}": (result._shape_of(n), _FLOAT) for n in STATE})
        for name, (shape, dtype) in expected.items():
            array = state.get(name)
            if array is None or array.shape != shape or array.dtype != dtype:
                got = "missing" if array is None else f"{array.dtype}{list(array.shape)}"
                raise ValueError(f"Sobol' state {name!r} is {got}, expected {dtype}{list(shape)}")
        result.groups[...] = state["sobol_groups"]
        for name in STATE:
            result.arrays[name][...] = state[f"sobol_{name}"]
        return result

    @property
    def nbytes(self) -> int:
        return self.groups.nbytes + sum(a.nbytes for a in self.arrays.values())


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _correlation(cov: float, m2_x: float, m2_y: float, mean_x: float, mean_y: float) -> float:
    """cov/√(m2_x·m2_y), NaN where either variance is (relatively) zero: the output does not
    vary, and the index is undefined."""
    if m2_x <= (_RELATIVE_ZERO * mean_x) ** 2 or m2_y <= (_RELATIVE_ZERO * mean_y) ** 2:
        return np.nan
    return min(1.0, max(-1.0, cov / math.sqrt(m2_x * m2_y)))


@njit(cache=True, nogil=True, error_model="numpy")
def fisher_interval(r: float, n: int, quantile: float = _Z95) -> tuple[float, float]:
    """Interval of a correlation r from n observations (Fisher z), 95% by default (`quantile`:
    the standard normal's quantile of the level); NaN where n < 4 or r is NaN."""
    if n < 4 or np.isnan(r):
        return np.nan, np.nan
    z = math.atanh(r)
    half = quantile / math.sqrt(n - 3)
    return math.tanh(z - half), math.tanh(z + half)


@njit(cache=True, nogil=True, error_model="numpy")
def _indices(cov: np.ndarray, m2_x: np.ndarray, m2_y: np.ndarray, mean_x: np.ndarray,
             mean_y: np.ndarray, groups: np.ndarray, total: bool, negligible: np.ndarray,
             index: np.ndarray, low: np.ndarray, high: np.ndarray) -> None:
    """One pass over (p, T, C): the index r (first order) or 1 − r (total) and its interval,
    r = C(X, Y_Ck)/√(M2_X·M2_Ck); cov, m2_y, mean_y (p, T, C); m2_x, mean_x, negligible
    (T, C); NaN where negligible."""
    p, steps, cells = cov.shape
    for k in range(p):
        for t in range(steps):
            for c in range(cells):
                if negligible[t, c]:
                    index[k, t, c], low[k, t, c], high[k, t, c] = np.nan, np.nan, np.nan
                    continue
                r = _correlation(cov[k, t, c], m2_x[t, c], m2_y[k, t, c], mean_x[t, c],
                                 mean_y[k, t, c])
                lo, hi = fisher_interval(r, groups[t])
                if total:
                    r, lo, hi = 1.0 - r, 1.0 - hi, 1.0 - lo
                index[k, t, c], low[k, t, c], high[k, t, c] = r, lo, hi


def _merge_step(a: dict[str, np.ndarray], b: dict[str, np.ndarray], t: int, na: int,
                nb: int) -> None:
    """Pébay's pairwise rules at time step t: δ = μ_b − μ_a; μ = μ_a + δ·nb/n;
    M2 = M2_a + M2_b + δ²·na·nb/n; C(X, Y) = C_a + C_b + δ_X·δ_Y·na·nb/n."""
    n = na + nb
    weight = na * nb / n
    deltas = {}
    for name in ("mean_a", "mean_b", "mean_c"):
        delta = b[name][..., t, :] - a[name][..., t, :]
        deltas[name] = delta
        a[name][..., t, :] += delta * (nb / n)
    for m2, mean in (("m2_a", "mean_a"), ("m2_b", "mean_b"), ("m2_c", "mean_c")):
        a[m2][..., t, :] += b[m2][..., t, :] + deltas[mean] ** 2 * weight
    for cov, x in (("cov_bc", "mean_b"), ("cov_ac", "mean_a")):
        a[cov][..., t, :] += b[cov][..., t, :] + deltas[x][None] * deltas["mean_c"] * weight
