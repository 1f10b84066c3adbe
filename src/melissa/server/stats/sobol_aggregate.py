"""Aggregated Sobol' indices of a whole field (Gamboa et al. 2014's generalized indices).

The field at every cell and time step is one vector output; its aggregated indices weight each
cell's index by its variance:

    S_k^agg  = Σ C(Y_B, Y_Ck) / √(Σ M2_B · Σ M2_Ck)
    ST_k^agg = 1 − Σ C(Y_A, Y_Ck) / √(Σ M2_A · Σ M2_Ck)

with the sums over every cell and time step (the Martinez form of Σ Cov / Σ Var). Cells of
negligible variance weigh nothing, so the figure follows the data.

Intervals: delta method. Per complete group, the observation is z = what the group added, over
all the cells and steps, to (Σ C(B, Ck), Σ C(A, Ck), Σ M2_A, Σ M2_B, Σ M2_Ck) (the Welford
increments the Sobol' kernel returns); the index is a smooth function R(z̄) of their means, so
Var(R) ≈ gᵀ Σ_z g / n with g = ∇R at z̄ and Σ_z the covariance of z over groups (Welford, per
parameter). A group counts once all its time steps have been joined on this rank; with several
server ranks, each rank keeps its own cells' z, and `combine` bounds the standard deviation of
the sum over ranks by the sum of the ranks' standard deviations (exact on one rank, conservative
on several).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Z95 = 1.959963984540054
# Columns of z: the increments of these sums over the cells and time steps.
U_BC, U_AC, V_A, V_B, W_C = range(5)


class AggregatedSobol:
    """One field's per-group observations z on one rank: groups in progress (summed over the
    time steps joined so far) and a Welford mean and co-moment of the complete groups' z."""

    def __init__(self, nb_parameters: int, nb_time_steps: int) -> None:
        self.nb_parameters = nb_parameters
        self.nb_time_steps = nb_time_steps
        self.n = 0
        self.mean = np.zeros((nb_parameters, 5))
        self.comoment = np.zeros((nb_parameters, 5, 5))
        self.partial: dict[int, np.ndarray] = {}  # group -> its z so far
        self.steps: dict[int, int] = {}  # group -> time steps joined

    def add(self, group: int, increments: np.ndarray) -> None:
        """One joined (group, time step): its increments (p, 5) on this rank's cells."""
        z = self.partial.get(group)
        self.partial[group] = increments.copy() if z is None else z + increments
        self.steps[group] = self.steps.get(group, 0) + 1
        if self.steps[group] == self.nb_time_steps:
            del self.steps[group]
            self._observe(self.partial.pop(group))

    def _observe(self, z: np.ndarray) -> None:
        self.n += 1
        delta = z - self.mean
        self.mean += delta / self.n
        self.comoment += delta[:, :, None] * (z - self.mean)[:, None, :]

    def abandon(self, groups: set[int]) -> None:
        """Forget the partial z of groups given up (they never count)."""
        for group in groups:
            self.partial.pop(group, None)
            self.steps.pop(group, None)

    def summary(self) -> dict[str, Any]:
        """JSON-able: complete groups "n", "mean" (p, 5), "cov" (p, 5, 5) (NaN-free: zeros
        below 2 groups)."""
        cov = self.comoment / (self.n - 1) if self.n > 1 else np.zeros_like(self.comoment)
        return {"n": self.n, "mean": self.mean.tolist(), "cov": cov.tolist()}

    def state_dict(self) -> dict[str, np.ndarray]:
        groups = sorted(self.partial)
        p = self.nb_parameters
        return {
            "n": np.array([self.n], np.int64), "mean": self.mean.copy(),
            "comoment": self.comoment.copy(),
            "partial_groups": np.array([[g, self.steps[g]] for g in groups],
                                       np.int64).reshape(len(groups), 2),
            "partial": np.array([self.partial[g] for g in groups]).reshape(len(groups), p, 5),
        }

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        p = self.nb_parameters
        count = len(state["partial_groups"])
        shapes = {"n": (1,), "mean": (p, 5), "comoment": (p, 5, 5),
                  "partial_groups": (count, 2), "partial": (count, p, 5)}
        for name, shape in shapes.items():
            if state[name].shape != shape:
                raise ValueError(f"aggregated Sobol' state {name!r} is "
                                 f"{list(state[name].shape)}, expected {list(shape)}")
        self.n = int(state["n"][0])
        self.mean = np.array(state["mean"], np.float64)
        self.comoment = np.array(state["comoment"], np.float64)
        self.partial = {int(g): np.array(z, np.float64)
                        for (g, _), z in zip(state["partial_groups"], state["partial"])}
        self.steps = {int(g): int(s) for g, s in state["partial_groups"]}


def combine(summaries: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Every rank's `summary()` of one field -> "sobol_first_aggregated", "sobol_total_aggregated"
    and their "_low"/"_high" 95% bounds, (p,) float64 (NaN below 4 complete groups or where the
    field does not vary), and "groups": the fewest complete groups over the ranks."""
    parts = [s for s in summaries if s["n"] > 0]
    n = min((int(s["n"]) for s in summaries), default=0)
    p = len(summaries[0]["mean"]) if summaries else 0
    out: dict[str, np.ndarray] = {}
    z = sum((np.asarray(s["mean"]) for s in parts), np.zeros((p, 5)))
    for kind, u, v in (("first", U_BC, V_B), ("total", U_AC, V_A)):
        index = np.full(p, np.nan)
        half = np.full(p, np.nan)
        for k in range(p):
            if n < 4 or z[k, v] <= 0 or z[k, W_C] <= 0:
                continue
            r = z[k, u] / np.sqrt(z[k, v] * z[k, W_C])
            g = np.zeros(5)
            g[u] = 1 / np.sqrt(z[k, v] * z[k, W_C])
            g[v] = -r / (2 * z[k, v])
            g[W_C] += -r / (2 * z[k, W_C])
            sd = sum(np.sqrt(max(float(g @ np.asarray(s["cov"])[k] @ g), 0.0) / int(s["n"]))
                     for s in parts)
            index[k] = r if kind == "first" else 1 - r
            half[k] = Z95 * sd
        name = f"sobol_{kind}_aggregated"
        out.update({name: index, f"{name}_low": index - half, f"{name}_high": index + half})
    out["groups"] = np.array(n)
    return out


def widest_interval(aggregated: Mapping[str, np.ndarray]) -> float:
    """The widest 95% interval of the aggregated first-order and total indices (NaN while
    none is defined)."""
    widths = np.concatenate([aggregated[f"sobol_{k}_aggregated_high"]
                             - aggregated[f"sobol_{k}_aggregated_low"] for k in ("first", "total")])
    return float(np.nanmax(widths)) if np.isfinite(widths).any() else float("nan")
