"""Design of experiments: draw parameter sets (random, LHS, Sobol', Halton) for a study, alone or
in pick-freeze groups for Sobol' indices."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from melissa.config.models import Parameter, Sampling
from melissa.sampling.designs import (
    Design,
    HaltonDesign,
    LatinHypercubeDesign,
    RandomDesign,
    SobolDesign,
)
from melissa.sampling.distributions import inverse_cdf

__all__ = ["Sampler", "inverse_cdf", "member_label"]


def member_label(member: int, names: Sequence[str]) -> str:
    """Role of member `member` of a pick-freeze group: "A", "B", "C_<parameter>", then (second
    order) "D_<parameter>"."""
    if member == 0:
        return "A"
    if member == 1:
        return "B"
    p = len(names)
    return f"C_{names[member - 2]}" if member < p + 2 else f"D_{names[member - 2 - p]}"


class Sampler:
    """Draws parameter sets from a design, in order, by groups; stateful so that later draws
    (redraws after failures) continue the same sequence.

    A group is one parameter set, or with `pick_freeze` the p + 2 sets of a Sobol' pick-freeze
    group (docs/statistics.md, "Sobol' indices"): A and B are two independent points (the design has dimension 2p: A is
    a point's first p coordinates, B its last p), then C_k (k = 1..p) is A with its k-th value
    taken from B; with `second_order` (Saltelli 2002) also D_k (k = 1..p), B with its k-th value
    taken from A: 2p + 2 sets. `draw(n)` returns the n groups' rows one group after the other.

    What holds, for every method: the same (parameters, sampling, seed, planned_size) give the
    same points, and `draw(a)` then `draw(b)` equals `draw(a + b)`. So a resumed launcher gets
    the same sequence back by building a new Sampler and drawing (and discarding) the number of
    points it had already used.

    For "lhs", `planned_size` (the study's parameter_sweep_size) is required: each consecutive
    block of planned_size points is one Latin hypercube (see LatinHypercubeDesign), so the first
    planned_size points are stratified however they are drawn. The other methods ignore it.

    Unscrambled Sobol'/Halton sequences are deterministic (the seed has no effect) and start at
    the origin, which a normal parameter maps to about mean - 8.1 std (see distributions).
    """

    def __init__(
        self,
        parameters: Sequence[Parameter],
        sampling: Sampling,
        seed: int,
        *,
        planned_size: int | None = None,
        pick_freeze: bool = False,
        second_order: bool = False,
    ) -> None:
        if not parameters:
            raise ValueError("a Sampler needs at least one parameter")
        self._parameters = list(parameters)
        self._pick_freeze = pick_freeze
        self._second_order = pick_freeze and second_order
        dimension = len(parameters) * (2 if pick_freeze else 1)
        self._design = _make_design(sampling, dimension, seed, planned_size)
        self._drawn = 0

    @property
    def names(self) -> list[str]:
        """Parameter names, in the order of the columns of `draw`."""
        return [p.name for p in self._parameters]

    @property
    def group_size(self) -> int:
        """Parameter sets per group: p + 2 with pick_freeze (2p + 2 with second_order), else 1."""
        p = len(self._parameters)
        return (2 * p if self._second_order else p) + 2 if self._pick_freeze else 1

    @property
    def drawn(self) -> int:
        """Groups drawn so far."""
        return self._drawn

    def draw(self, n: int) -> np.ndarray:
        """The next n groups, shape (n * group_size, len(names)), float64."""
        if n < 0:
            raise ValueError(f"cannot draw a negative number of points ({n})")
        p = len(self._parameters)
        unit = self._design.draw(n)
        self._drawn += n
        values = np.empty(unit.shape, dtype=np.float64)
        for column in range(unit.shape[1]):
            values[:, column] = inverse_cdf(self._parameters[column % p], unit[:, column])
        if not self._pick_freeze:
            return values
        a, b = values[:, :p], values[:, p:]
        size = self.group_size
        groups = np.empty((n, size, p), dtype=np.float64)
        groups[:, 0], groups[:, 1] = a, b
        for k in range(p):
            groups[:, 2 + k] = a
            groups[:, 2 + k, k] = b[:, k]
            if self._second_order:
                groups[:, 2 + p + k] = b
                groups[:, 2 + p + k, k] = a[:, k]
        return groups.reshape(n * size, p)


def _make_design(
    sampling: Sampling, dimension: int, seed: int, planned_size: int | None
) -> Design:
    rng = np.random.default_rng(seed)
    if sampling.method == "random":
        return RandomDesign(dimension, rng)
    if sampling.method == "sobol":
        return SobolDesign(dimension, rng, sampling.scramble)
    if sampling.method == "halton":
        return HaltonDesign(dimension, rng, sampling.scramble)
    if sampling.method == "lhs":
        if planned_size is None:
            raise ValueError(
                "LHS needs planned_size (the study's parameter_sweep_size): it stratifies over it"
            )
        return LatinHypercubeDesign(dimension, rng, planned_size)
    raise ValueError(f"unknown sampling method {sampling.method!r}")
