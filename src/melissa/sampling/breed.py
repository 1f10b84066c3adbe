"""Active sampling by breeding: new simulations near those where a model is worst.

A pure policy, without I/O: it works in the unit cube (each parameter through its CDF, so the
inverse CDF of the study's distributions maps a child to parameter values) and is given the
population, the simulations so far with their unit coordinates and fitness (for a surrogate: its
loss on the simulation's samples). Anything that yields a fitness per simulation can use it, a
statistics server as well as a training one.

Generation 0 is a scrambled Halton set (space-filling). Generation g >= 1 of n children
(docs/deep-learning.md#active-sampling-breed):

- a fraction of fresh draws, from `exploration_start` at generation 1 linearly to
  `exploration_end` at the last generation, each the farthest of `candidates` uniform draws from
  every point so far (it fills the largest hole, where the model is least constrained);
- the others each pick a parent with probability proportional to its fitness and add a Gaussian
  mutation of covariance mutation_scale^2 * C + min_mutation^2 * I, where C is the
  fitness-weighted covariance of the population: it adapts, shrinking as the fitness
  concentrates on a region;
- a child outside the unit cube is tried again with the mutation step halved, up to `retries`
  times, then takes its parent's coordinates.

Seeded: generation g draws from a generator seeded with (seed, g), so the same seed and the same
population (the same fitness arrivals) give the same children.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import qmc

from melissa.config.models import BreedOptions


@dataclass(frozen=True)
class Member:
    """A simulation of the population."""

    simulation_id: int
    unit: np.ndarray  # its coordinates in the unit cube
    fitness: float  # >= 0, larger: the model is worse there


@dataclass(frozen=True)
class Child:
    unit: np.ndarray
    parent: int | None  # simulation id; None for a fresh draw


class BreedPolicy:
    def __init__(self, options: BreedOptions, dimension: int, seed: int) -> None:
        self.options = options
        self.dimension = dimension
        self.seed = seed

    def generations(self, budget: int) -> int:
        """Generations of a study of `budget` simulations."""
        return -(-budget // self.options.generation_size)

    def exploration(self, generation: int, generations: int) -> float:
        """Fraction of fresh draws in `generation` (>= 1) of `generations`."""
        o = self.options
        if generations <= 2:
            return o.exploration_start
        progress = (generation - 1) / (generations - 2)
        return o.exploration_start + (o.exploration_end - o.exploration_start) * min(1, progress)

    def first(self, n: int) -> list[Child]:
        """Generation 0: a scrambled Halton set (space-filling, seeded)."""
        engine = qmc.Halton(self.dimension, scramble=True, rng=self._rng(0))
        return [Child(u, None) for u in engine.random(n)]

    def fresh(self, rng: np.random.Generator, taken: list[np.ndarray]) -> np.ndarray:
        """A fresh draw that fills a hole: of `candidates` uniform draws, the farthest from every
        point `taken` (Mitchell's best candidate)."""
        points = rng.random((self.options.candidates, self.dimension))
        if not taken:
            return points[0]
        distance = np.linalg.norm(points[:, None, :] - np.array(taken)[None], axis=2).min(1)
        return points[int(np.argmax(distance))]

    def covariance(self, population: Sequence[Member]) -> np.ndarray:
        """The mutation covariance for this population (of fitness summing to > 0)."""
        units = np.array([m.unit for m in population])
        weights = np.array([m.fitness for m in population])
        weights = weights / weights.sum()
        centred = units - weights @ units
        spread = (centred * weights[:, None]).T @ centred
        return (self.options.mutation_scale ** 2 * spread
                + self.options.min_mutation ** 2 * np.eye(self.dimension))

    def breed(
        self, generation: int, generations: int, population: Sequence[Member], n: int
    ) -> list[Child]:
        """Generation `generation` >= 1: n children of `population` (members without a
        positive finite fitness are never parents; none at all: every child is fresh)."""
        rng = self._rng(generation)
        parents = [m for m in population if np.isfinite(m.fitness) and m.fitness > 0]
        fresh_fraction = self.exploration(generation, generations) if parents else 1.0
        if parents:
            weights = np.array([m.fitness for m in parents])
            weights = weights / weights.sum()
            factor = np.linalg.cholesky(self.covariance(parents))
        children: list[Child] = []
        taken = [m.unit for m in population]
        for _ in range(n):
            if rng.random() < fresh_fraction:
                child = Child(self.fresh(rng, taken), None)
            else:
                parent = parents[int(rng.choice(len(parents), p=weights))]
                step = factor @ rng.standard_normal(self.dimension)
                child = Child(self._inside(parent.unit, step), parent.simulation_id)
            children.append(child)
            taken.append(child.unit)
        return children

    def _inside(self, start: np.ndarray, step: np.ndarray) -> np.ndarray:
        for _ in range(self.options.retries + 1):
            child = start + step
            if np.all((child >= 0) & (child <= 1)):
                return child
            step = step / 2
        return start.copy()

    def _rng(self, generation: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, generation])
