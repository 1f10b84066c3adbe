"""Active sampling: the breeding policy (parents in proportion to fitness, adapting mutation
covariance, exploration schedule, out-of-bounds children shrunk back then replaced by the
parent, seeded) and the launcher's Breeder (generations, study.db, resume, parameters.csv)."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from melissa.config import parse_config
from melissa.config.models import BreedOptions
from melissa.errors import ConfigError
from melissa.launcher.breeding import COLUMNS, Breeder
from melissa.launcher.report import write_parameters_csv
from melissa.launcher.state import SimulationStatus, StateStore
from melissa.sampling.breed import BreedPolicy, Member


def population() -> list[Member]:
    return [Member(0, np.array([0.2, 0.2]), 1.0), Member(1, np.array([0.8, 0.8]), 3.0),
            Member(2, np.array([0.5, 0.5]), 0.0)]


def test_parents_are_chosen_in_proportion_to_fitness_and_children_stay_near() -> None:
    policy = BreedPolicy(BreedOptions(exploration_start=0.0, mutation_scale=0.1,
                                      min_mutation=0.01), 2, seed=1)
    children = policy.breed(1, 5, population(), 4000)
    parents = Counter(c.parent for c in children)
    assert set(parents) == {0, 1}  # fitness 0 is never a parent, nobody is fresh
    assert parents[1] / len(children) == pytest.approx(0.75, abs=0.03)
    for c in children:
        parent = population()[c.parent]  # type: ignore[index]
        assert np.all((c.unit >= 0) & (c.unit <= 1))
        assert np.abs(c.unit - parent.unit).max() < 0.2


def test_the_mutation_covariance_follows_the_fitness() -> None:
    policy = BreedPolicy(BreedOptions(mutation_scale=1.0, min_mutation=0.001), 2, seed=0)
    spread = policy.covariance(population()[:2])  # weights 1/4, 3/4 on two opposite corners
    # weighted variance along each axis: 0.25 * 0.75 * 0.6^2
    assert spread[0, 0] == pytest.approx(0.25 * 0.75 * 0.36 + 1e-6)
    concentrated = [Member(0, np.array([0.2, 0.2]), 1.0), Member(1, np.array([0.8, 0.8]), 1e-6)]
    assert policy.covariance(concentrated)[0, 0] < 1e-5  # all on one point: the floor


def test_exploration_goes_from_start_to_end_and_fresh_draws_are_uniform() -> None:
    policy = BreedPolicy(BreedOptions(exploration_start=0.8, exploration_end=0.2), 2, seed=4)
    assert [round(policy.exploration(g, 5), 3) for g in (1, 2, 3, 4)] == [0.8, 0.6, 0.4, 0.2]
    children = policy.breed(1, 5, population(), 2000)
    fresh = [c for c in children if c.parent is None]
    assert len(fresh) / len(children) == pytest.approx(0.8, abs=0.03)
    assert np.mean([c.unit for c in fresh], axis=0) == pytest.approx([0.5, 0.5], abs=0.03)
    assert all(c.parent is None for c in policy.breed(1, 5, [], 20))  # nobody has a fitness


def test_the_first_generation_and_fresh_draws_fill_the_space() -> None:
    policy = BreedPolicy(BreedOptions(exploration_start=1.0), 2, seed=6)
    first = np.array([c.unit for c in policy.first(16)])
    rng = np.random.default_rng(6)

    def gap(points: np.ndarray) -> float:  # smallest distance between two points
        d = np.linalg.norm(points[:, None] - points[None], axis=2)
        return float(d[np.triu_indices(len(points), 1)].min())

    uniform = np.median([gap(rng.random((16, 2))) for _ in range(50)])
    assert gap(first) > 1.3 * uniform  # Halton: no two simulations almost at the same place
    # Every simulation so far in the left half: the fresh draws go to the hole on the right.
    left = [Member(i, np.array([0.5 * c.unit[0], c.unit[1]]), 1.0)
            for i, c in enumerate(policy.first(16))]
    fresh = [c.unit for c in policy.breed(1, 3, left, 8)]
    assert all(u[0] > 0.5 for u in fresh), fresh


def test_out_of_bounds_children_shrink_back_then_take_the_parent() -> None:
    edge = [Member(7, np.array([1.0, 0.5]), 1.0)]
    policy = BreedPolicy(BreedOptions(exploration_start=0.0, mutation_scale=0.01,
                                      min_mutation=0.3, retries=2), 2, seed=2)
    children = policy.breed(1, 3, edge, 400)
    assert all(np.all((c.unit >= 0) & (c.unit <= 1)) for c in children)
    copies = [c for c in children if np.array_equal(c.unit, edge[0].unit)]
    # x must step inward (about one half) within three tries of halving steps
    assert 0 < len(copies) < len(children)
    never = BreedPolicy(BreedOptions(exploration_start=0.0, min_mutation=0.3, retries=0), 2, 2)
    assert sum(np.array_equal(c.unit, edge[0].unit) for c in never.breed(1, 3, edge, 400)) > len(
        copies)


def test_breeding_is_seeded() -> None:
    def draw(seed: int) -> list[list[float]]:
        policy = BreedPolicy(BreedOptions(), 2, seed)
        return [c.unit.tolist() for c in policy.first(5) + policy.breed(2, 4, population(), 5)]

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)


def study_config(tmp_path: Path, budget: int = 7, **dl: object) -> object:
    return parse_config(json.dumps({
        "output_dir": str(tmp_path),
        "study_options": {"field_names": ["u"], "nb_time_steps": 2,
                          "parameter_sweep_size": budget, "seed": 5},
        "parameters": [{"name": "a", "distribution": "uniform", "low": 10, "high": 20},
                       {"name": "b", "distribution": "loguniform", "low": 1, "high": 100}],
        "sampling": {"method": "breed", "breed": {"generation_size": 3, "fitness_timeout": 5}},
        "dl_config": {"validation_fraction": 0, "per_server_watermark": 1, **dl},
        "client_config": {"executable_command": "unused"},
    }), "test")


def test_breeder_generations_in_study_db_survive_a_restart(tmp_path: Path) -> None:
    config = study_config(tmp_path)
    db = tmp_path / "study.db"
    store = StateStore(db)
    store.init_study("00" * 16, "{}", ["a", "b"])
    now = [0.0]
    breeder = Breeder(config, store.connection, clock=lambda: now[0])  # type: ignore[arg-type]
    store.add_simulations(breeder.first_generation())
    assert len(store.simulations()) == 3 and not breeder.step(store)  # generation 0 runs
    for sim in range(3):
        store.mark_running(sim, f"job{sim}")
        store.mark_finished(sim, SimulationStatus.COMPLETED, 0, "")
    breeder.on_fitness(0, 2.0)
    breeder.on_fitness(1, 0.5)
    assert not breeder.step(store)  # simulation 2's fitness is not known yet
    now[0] = 6.0  # past fitness_timeout: bred from what is known
    assert breeder.step(store)
    rows = store.simulations()
    assert len(rows) == 6 and {r.status for r in rows[3:]} == {SimulationStatus.PENDING}
    for r in rows:
        assert 10 <= r.parameters[0] <= 20 and 1 <= r.parameters[1] <= 100
    bred = dict(breeder.bred)
    assert {b.parent for s, b in bred.items() if s >= 3} <= {None, 0, 1}
    store.close()

    store = StateStore(db)  # a resumed launcher
    again = Breeder(config, store.connection)  # type: ignore[arg-type]
    assert again.generation == 1 and not again.done
    assert {s: (b.generation, b.parent, b.fitness) for s, b in again.bred.items()} == {
        s: (b.generation, b.parent, b.fitness) for s, b in bred.items()}
    write_parameters_csv(tmp_path / "parameters.csv", ["a", "b"], store.simulations(),
                         extra=(COLUMNS, again.columns()))
    with open(tmp_path / "parameters.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0])[:6] == ["simulation_id", "a", "b", "generation", "parent", "fitness"]
    assert (table[0]["generation"], table[0]["fitness"]) == ("0", "2.0")
    assert table[2]["fitness"] == "" and table[4]["generation"] == "1"
    with store.batch():  # fitness and a generation inside one of the store's transactions
        again.on_fitness(2, 1.0)
        assert again.step(store) is False  # generation 1 has not run yet
    store.close()


def test_breed_needs_a_training_study(tmp_path: Path) -> None:
    text = json.dumps({
        "study_options": {"field_names": ["u"], "nb_time_steps": 2, "parameter_sweep_size": 4},
        "parameters": [{"name": "a", "distribution": "uniform", "low": 0, "high": 1}],
        "sampling": {"method": "breed"},
        "client_config": {"executable_command": "unused"},
    })
    with pytest.raises(ConfigError, match='sampling.method "breed" needs dl_config'):
        parse_config(text, "c.json")


def test_a_first_generation_short_of_the_watermark_is_warned_of(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """3 simulations x 2 steps = 6 samples: enough for a watermark of 1 (no warning), not for
    one of 8, nor for a FIFO's batch of 16."""
    store = StateStore(tmp_path / "study.db")
    for dl, warned in (({"per_server_watermark": 1}, None),
                       ({"per_server_watermark": 8}, "dl_config.per_server_watermark (8)"),
                       ({"buffer": "fifo", "batch_size": 16}, "dl_config.batch_size (16)")):
        caplog.clear()
        Breeder(study_config(tmp_path, **dl), store.connection)  # type: ignore[arg-type]
        if warned is None:
            assert not caplog.records
        else:
            assert f"about 6 training samples per server rank, fewer than {warned}" in caplog.text
    store.close()
