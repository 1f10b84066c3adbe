"""Designs of experiments: seeded, resumable sequences of points in the unit hypercube [0, 1)^d.

Every design is a *sequence*: `draw(n)` returns its next n points, so drawing 10 then 5 points
gives exactly the 15 points of one `draw(15)`. That lets redraws after failures continue the
design, and lets a resumed launcher rebuild a design and skip the points it already used.
"""

from __future__ import annotations

import warnings
from typing import Protocol

import numpy as np
from scipy.stats import qmc


class Design(Protocol):
    def draw(self, n: int) -> np.ndarray:
        """The next n points of the sequence, shape (n, d), float64 in [0, 1)."""
        ...


class RandomDesign:
    """Independent uniform points (Monte Carlo)."""

    def __init__(self, dimension: int, rng: np.random.Generator) -> None:
        self._dimension = dimension
        self._rng = rng

    def draw(self, n: int) -> np.ndarray:
        # Generator.random fills row-major from one stream: consecutive calls continue it.
        return self._rng.random((n, self._dimension))


class SobolDesign:
    """Sobol' low-discrepancy sequence (Owen-scrambled unless scramble is false)."""

    def __init__(self, dimension: int, rng: np.random.Generator, scramble: bool) -> None:
        self._engine = qmc.Sobol(dimension, scramble=scramble, rng=rng)

    def draw(self, n: int) -> np.ndarray:
        # Sweep sizes and redraws are rarely powers of two; the sequence is still the Sobol'
        # sequence, only the balance of that prefix is not guaranteed. Not worth a warning.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The balance properties of Sobol' points")
            return np.asarray(self._engine.random(n), dtype=np.float64)


class HaltonDesign:
    """Halton low-discrepancy sequence (scrambled unless scramble is false)."""

    def __init__(self, dimension: int, rng: np.random.Generator, scramble: bool) -> None:
        self._engine = qmc.Halton(dimension, scramble=scramble, rng=rng)

    def draw(self, n: int) -> np.ndarray:
        return np.asarray(self._engine.random(n), dtype=np.float64)


class LatinHypercubeDesign:
    """Latin hypercube sampling as a sequence of consecutive blocks of `block_size` points.

    SciPy's LatinHypercube.random(n) stratifies each call over its own n, so drawing in pieces is
    not the same design as drawing at once. Here each block of `block_size` consecutive points
    (points k*block_size .. (k+1)*block_size - 1) is one Latin hypercube: in every dimension each
    of the block_size strata [i/block_size, (i+1)/block_size) holds exactly one point of the
    block. With block_size = the study's sweep size, the initial draw is one Latin hypercube
    whatever the call sizes, and redraws continue into the next (independent) block.
    """

    def __init__(self, dimension: int, rng: np.random.Generator, block_size: int) -> None:
        if block_size < 1:
            raise ValueError(f"LHS block size must be at least 1, got {block_size}")
        self._engine = qmc.LatinHypercube(dimension, rng=rng)
        self._block_size = block_size
        self._pending = np.empty((0, dimension))  # rest of the current block, not yet drawn

    def draw(self, n: int) -> np.ndarray:
        while len(self._pending) < n:
            block = self._engine.random(self._block_size)
            self._pending = np.concatenate([self._pending, block])
        points, self._pending = self._pending[:n], self._pending[n:]
        return points
