"""The launcher's side of active sampling (sampling.method "breed"): generations of simulations
bred from the fitness the training server reports (its "fitness" events), kept in study.db.

Generation 0 (space-filling) is drawn with the study. Generation g >= 1 is bred once every
simulation of the earlier generations has finished and the fitness of each completed one is
known (or after sampling.breed.fitness_timeout seconds of waiting, from the fitness known then),
until parameter_sweep_size simulations are bred. The table `breed` of study.db holds each bred
simulation's generation, parent, unit-cube coordinates and fitness: a resumed launcher continues
from it (and adds the simulations of a generation it had recorded but not yet added).
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from melissa.config.models import StudyConfig
from melissa.launcher.state import SimulationStatus, StateStore
from melissa.sampling.breed import BreedPolicy, Child, Member
from melissa.sampling.distributions import inverse_cdf

log = logging.getLogger("melissa.launcher")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS breed (
    simulation_id INTEGER PRIMARY KEY,
    generation INTEGER NOT NULL,
    parent INTEGER,  -- NULL: a fresh random draw
    unit TEXT NOT NULL,  -- JSON list: coordinates in the unit cube of the CDFs
    fitness REAL  -- NULL until the server reported it
)
"""
_FINISHED = (SimulationStatus.COMPLETED, SimulationStatus.FAILED, SimulationStatus.REDRAWN)
COLUMNS = ["generation", "parent", "fitness"]


@dataclass
class Bred:
    generation: int
    parent: int | None
    unit: np.ndarray
    fitness: float | None


class Breeder:
    def __init__(self, config: StudyConfig, conn: sqlite3.Connection,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`conn`: the StateStore's connection to study.db (`StateStore.connection`)."""
        self.config = config
        self.options = config.sampling.breed
        self.budget = config.study_options.parameter_sweep_size
        self.policy = BreedPolicy(self.options, len(config.parameters),
                                  config.study_options.seed)
        self.generations = self.policy.generations(self.budget)
        assert config.dl_config is not None
        # Never trained on, so no training loss: not waited for, never parents.
        self.held_out = config.dl_config.validation_simulations(self.budget)
        self._warn_if_the_first_generation_cannot_train()
        self._clock = clock
        self._waiting_since: float | None = None
        self._conn = conn
        self._conn.execute(_SCHEMA)
        self.bred: dict[int, Bred] = {
            int(sim): Bred(int(g), None if p is None else int(p), np.array(json.loads(u)),
                           None if f is None else float(f))
            for sim, g, p, u, f in self._conn.execute("SELECT * FROM breed ORDER BY 1")
        }

    def _warn_if_the_first_generation_cannot_train(self) -> None:
        """No batch before the buffer holds its watermark (FIFO: a batch), so no model and no
        fitness: a first generation sending fewer samples (one per simulation and time step)
        to each server rank waits fitness_timeout, and the next one is bred blind."""
        dl = self.config.dl_config
        assert dl is not None
        first = [s for s in range(min(self.options.generation_size, self.budget))
                 if s not in self.held_out]
        per_rank = (len(first) * self.config.study_options.nb_time_steps
                    / self.config.server_config.ranks)
        need, key = ((dl.batch_size, "batch_size") if dl.buffer == "fifo"
                     else (dl.per_server_watermark, "per_server_watermark"))
        if per_rank < need:
            log.warning("sampling.breed: the first generation sends about %d training samples "
                        "per server rank, fewer than dl_config.%s (%d) that the first batch "
                        "needs: it will have no fitness, and generation 1 will be bred from "
                        "fresh draws only after sampling.breed.fitness_timeout (%g s); lower %s "
                        "or raise sampling.breed.generation_size", per_rank, key, need,
                        self.options.fitness_timeout, key)

    @property
    def done(self) -> bool:
        """Every simulation of the budget is bred."""
        return len(self.bred) >= self.budget

    @property
    def generation(self) -> int:
        """The latest generation bred (-1 before the first)."""
        return max((b.generation for b in self.bred.values()), default=-1)

    def first_generation(self) -> list[tuple[int, list[float]]]:
        """Generation 0 (recorded here): the simulations the study starts with."""
        return self._record(0, 0, self.policy.first(min(self.options.generation_size,
                                                        self.budget)))

    def recover(self, store: StateStore) -> None:
        """After a launcher crash: simulations recorded here but not yet in the study."""
        known = {r.simulation_id for r in store.simulations()}
        missing = [(sim, self._values(b.unit)) for sim, b in self.bred.items() if sim not in known]
        if missing:
            store.add_simulations(missing)

    def on_fitness(self, simulation_id: int, fitness: float) -> None:
        bred = self.bred.get(simulation_id)
        if bred is None or not math.isfinite(fitness):
            return  # a redrawn simulation (not bred), or nonsense
        bred.fitness = fitness
        self._conn.execute("UPDATE breed SET fitness = ? WHERE simulation_id = ?",
                           (fitness, simulation_id))

    def step(self, store: StateStore) -> bool:
        """Breed the next generation if it is due; True if it added simulations."""
        if self.done:
            return False
        statuses = {r.simulation_id: r.status for r in store.simulations()}
        if any(statuses.get(sim) not in _FINISHED for sim in self.bred):
            return False
        unknown = [sim for sim, b in self.bred.items()
                   if statuses[sim] == SimulationStatus.COMPLETED and b.fitness is None
                   and sim not in self.held_out]
        now = self._clock()
        if unknown:
            if self._waiting_since is None:
                self._waiting_since = now
            if now - self._waiting_since < self.options.fitness_timeout:
                return False
            log.warning("breeding generation %d without the fitness of simulations %s: none "
                        "came within %g s (sampling.breed.fitness_timeout)",
                        self.generation + 1, unknown, self.options.fitness_timeout)
        self._waiting_since = None
        population = [Member(sim, b.unit, b.fitness) for sim, b in self.bred.items()
                      if b.fitness is not None]
        generation = self.generation + 1
        n = min(self.options.generation_size, self.budget - len(self.bred))
        children = self.policy.breed(generation, self.generations, population, n)
        rows = self._record(generation, store.last_id() + 1, children)
        store.add_simulations(rows)
        fresh = sum(c.parent is None for c in children)
        log.info("generation %d bred from %d simulations with fitness: %d children, %d of them "
                 "fresh draws", generation, len(population), n, fresh)
        return True

    def _record(self, generation: int, first_id: int,
                children: list[Child]) -> list[tuple[int, list[float]]]:
        rows = []
        nested = self._conn.in_transaction  # inside one of the store's batches
        self._conn.execute("SAVEPOINT breed" if nested else "BEGIN IMMEDIATE")
        try:
            for i, child in enumerate(children):
                sim = first_id + i
                self._conn.execute("INSERT INTO breed VALUES (?, ?, ?, ?, NULL)",
                                   (sim, generation, child.parent,
                                    json.dumps(child.unit.tolist())))
                rows.append((sim, self._values(child.unit)))
        except BaseException:
            self._conn.execute("ROLLBACK TO breed" if nested else "ROLLBACK")
            if nested:
                self._conn.execute("RELEASE breed")
            raise
        self._conn.execute("RELEASE breed" if nested else "COMMIT")
        for i, child in enumerate(children):
            self.bred[first_id + i] = Bred(generation, child.parent, child.unit, None)
        return rows

    def _values(self, unit: np.ndarray) -> list[float]:
        return [float(inverse_cdf(p, np.array(u))) for p, u in zip(self.config.parameters, unit,
                                                                      strict=True)]

    def columns(self) -> dict[int, list[str]]:
        """parameters.csv's generation, parent and fitness of each bred simulation."""
        return {sim: [str(b.generation), "" if b.parent is None else str(b.parent),
                      "" if b.fitness is None else repr(b.fitness)]
                for sim, b in self.bred.items()}

    def plot(self, path: Path) -> Path:
        """Where the simulations were placed and why: the first two parameters, coloured by
        generation, each bred child linked to its parent; and the fitness by generation."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = [p.name for p in self.config.parameters]
        sims = sorted(self.bred)
        values = np.array([self._values(self.bred[s].unit) for s in sims])
        gens = np.array([self.bred[s].generation for s in sims])
        x = values[:, 0]
        y = values[:, 1] if values.shape[1] > 1 else np.zeros(len(sims))
        at = {s: i for i, s in enumerate(sims)}
        fig, (ax, fx) = plt.subplots(1, 2, figsize=(11, 4.8))
        for s in sims:
            parent = self.bred[s].parent
            if parent is not None and parent in at:
                ax.plot([x[at[parent]], x[at[s]]], [y[at[parent]], y[at[s]]], color="0.8",
                        lw=0.6, zorder=1)
        points = ax.scatter(x, y, c=gens, cmap="viridis", s=18, zorder=2)
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1] if len(names) > 1 else "")
        ax.set_title("simulations (grey: parent to child)")
        fig.colorbar(points, ax=ax, label="generation")
        fitness = np.array([np.nan if self.bred[s].fitness is None else self.bred[s].fitness
                            for s in sims])
        fx.scatter(gens + np.linspace(-0.25, 0.25, len(sims)) % 0.5 - 0.25, fitness, s=12,
                   c=[self.bred[s].parent is None for s in sims], cmap="coolwarm")
        fx.set_yscale("log")
        fx.set_xlabel("generation")
        fx.set_ylabel("fitness (surrogate loss on the simulation)")
        fx.set_title("fitness (red: fresh draw, blue: bred)")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path
