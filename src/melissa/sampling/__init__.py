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
    """Role of member `member` of a pick-freeze group: "A", "B", then "C_<parameter>"."""
    if member == 0:
        return "A"
    if member == 1:
        return "B"
    return f"C_{names[member - 2]}"


class Sampler:
    """Draws parameter sets from a design, in order, by groups; stateful so that later draws
    (redraws after failures) continue the same sequence.

    A group is one parameter set, or with `pick_freeze` the p + 2 sets of a Sobol' pick-freeze
    group (docs/statistics.md, "Sobol' indices"): A and B are two independent points (the design has dimension 2p: A is
    a point's first p coordinates, B its last p), then C_k (k = 1..p) is A with its k-th value
    taken from B. `draw(n)` returns the n groups' rows one group after the other.

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
    ) -> None:
        if not parameters:
            raise ValueError("a Sampler needs at least one parameter")
        self._parameters = list(parameters)
        self._pick_freeze = pick_freeze
        dimension = len(parameters) * (2 if pick_freeze else 1)
        self._design = _make_design(sampling, dimension, seed, planned_size)
        self._drawn = 0

    @property
    def names(self) -> list[str]:
        """Parameter names, in the order of the columns of `draw`."""
        return [p.name for p in self._parameters]

    @property
    def group_size(self) -> int:
        """Parameter sets per group: p + 2 with pick_freeze, else 1."""
        return len(self._parameters) + 2 if self._pick_freeze else 1

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
        groups = np.empty((n, p + 2, p), dtype=np.float64)
        groups[:, 0], groups[:, 1] = a, b
        for k in range(p):
            groups[:, 2 + k] = a
            groups[:, 2 + k, k] = b[:, k]
        return groups.reshape(n * (p + 2), p)


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
