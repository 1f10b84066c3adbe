"""Design of experiments: draw parameter sets (random, LHS, Sobol', Halton) for a study."""

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

__all__ = ["Sampler", "inverse_cdf"]


class Sampler:
    """Draws parameter sets from a design, in order; stateful so that later draws (redraws after
    failures) continue the same sequence.

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
    ) -> None:
        if not parameters:
            raise ValueError("a Sampler needs at least one parameter")
        self._parameters = list(parameters)
        self._design = _make_design(sampling, len(parameters), seed, planned_size)
        self._drawn = 0

    @property
    def names(self) -> list[str]:
        """Parameter names, in the order of the columns of `draw`."""
        return [p.name for p in self._parameters]

    @property
    def drawn(self) -> int:
        """Points drawn so far."""
        return self._drawn

    def draw(self, n: int) -> np.ndarray:
        """The next n parameter sets, shape (n, len(names)), float64."""
        if n < 0:
            raise ValueError(f"cannot draw a negative number of points ({n})")
        unit = self._design.draw(n)
        self._drawn += n
        values = np.empty((n, len(self._parameters)), dtype=np.float64)
        for column, parameter in enumerate(self._parameters):
            values[:, column] = inverse_cdf(parameter, unit[:, column])
        return values


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
