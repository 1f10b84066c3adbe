"""Active sampling end to end (examples/peak/config_breed.json): on a model whose difficulty is
a narrow peak in a 2-D parameter space, a study that breeds its simulations gets a surrogate with
a lower held-out error than the same study drawn at random, same seed and budget, and places more
simulations near the peak than uniform sampling would; parameters.csv says where each simulation
came from (generation, parent, fitness), breed.png shows it. (bench/breed.py measures the same
over several seeds and budgets: bench/RESULTS.md.)"""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from melissa.config.loader import strip_comments
from melissa.server.learning import load_surrogate
from tests.integration.conftest import REPO

PEAK_DIR = REPO / "examples" / "peak"
BUDGET, STEPS, CELLS, GRID = 60, 4, 8, 31
spec = importlib.util.spec_from_file_location("example_peak", PEAK_DIR / "peak.py")
assert spec and spec.loader
peak = importlib.util.module_from_spec(spec)
spec.loader.exec_module(peak)


def config(method: str) -> dict[str, Any]:
    cfg = json.loads(strip_comments((PEAK_DIR / "config_breed.json").read_text()))
    cfg["output_dir"] = method
    cfg["study_options"]["parameter_sweep_size"] = BUDGET
    cfg["sampling"]["method"] = method
    cfg["client_config"]["executable_command"] = (
        f"{sys.executable} {PEAK_DIR / 'peak.py'} --steps {STEPS} --cells {CELLS}")
    # One simulation at a time: the samples arrive in the same order in every run, and the
    # training keeps pace with them (batches_per_sample) however loaded the machine is, so the
    # fitness, and what is bred from it, hardly varies (with 4 at a time under load, the fitness
    # ratio near / far from the peak fell to 2.0 once, against 3 to 10 here).
    cfg["launcher_config"]["job_limit"] = 1
    return cfg


NEAR = 3 * peak.SIGMA  # where the peak is more than 1% of its height


def near_peak(xy: np.ndarray) -> np.ndarray:
    return np.hypot(xy[:, 0] - peak.PEAK[0], xy[:, 1] - peak.PEAK[1]) < NEAR


def table(out: Path) -> list[dict[str, str]]:
    with open(out / "parameters.csv", newline="") as f:
        return list(csv.DictReader(f))


def held_out_rmse(out: Path) -> float:
    """The trained surrogate against peak.simulate on a GRID x GRID grid over [0, 1]^2 (points
    that are no simulation of either study), every time step and cell."""
    axis = np.linspace(0.0, 1.0, GRID)
    points = [(x, y) for x in axis for y in axis]
    t = np.arange(STEPS) / (STEPS - 1)
    inputs = torch.tensor([[x, y, s] for x, y in points for s in t], dtype=torch.float32)
    truth = np.concatenate([np.stack(list(peak.simulate(x, y, STEPS, CELLS))) for x, y in points])
    with torch.no_grad():
        predicted = load_surrogate(out / "checkpoints" / "last.pt")(inputs).numpy()
    return float(np.sqrt(((predicted - truth) ** 2).mean()))


def test_breeding_beats_random_sampling_near_a_narrow_peak(launcher: Any) -> None:
    runs = {method: launcher(config(method)) for method in ("random", "breed")}
    for run in runs.values():
        assert run.returncode == 0, run.output
    bred_run = runs["breed"]

    rows = table(bred_run.output_dir)
    assert len(rows) == BUDGET and {r["status"] for r in rows} == {"completed"}
    generations = [int(r["generation"]) for r in rows]
    assert generations == sorted(generations) and max(generations) == BUDGET // 10 - 1
    bred = [r for r in rows if r["parent"]]
    assert bred and all(int(r["generation"]) > int(rows[int(r["parent"])]["generation"])
                        for r in bred)
    assert all(float(r["fitness"]) >= 0 for r in rows)  # every simulation was trained on
    assert (bred_run.output_dir / "breed.png").stat().st_size > 0

    xy = np.array([(float(r["x"]), float(r["y"])) for r in rows])
    near = near_peak(xy)
    uniform = np.pi * NEAR**2  # a uniform draw's chance to land near the peak (7%)
    # Generation 0 (Halton, seed 3) has one simulation near the peak, by far the worst fitted:
    # the generation bred from it concentrates there (3 or more of 10 near: 3% under uniform
    # draws; 4 in 28 of 29 runs, 1 in a run with 4 simulations at a time on a loaded machine).
    # Later generations follow the fitness wherever the surrogate is worst, the peak once
    # learnt no longer, so the study's share varies from run to run (13-30% in those runs) and
    # is only asked to beat uniform draws'.
    generation = np.array(generations)
    assert near[generation == 0].sum() == 1
    assert near[generation == 1].sum() >= 3, near[generation == 1]
    assert near.mean() > uniform, near.mean()
    # The fitness (the surrogate's error on a simulation before it trained on it) is highest
    # where the model is hard: near the peak.
    fitness = np.array([float(r["fitness"]) for r in rows])
    assert np.median(fitness[near]) > 2 * np.median(fitness[~near])
    # The children of the parents near the peak stay close (the mutation adapts to them).
    parents_near = [r for r in bred if near[int(r["parent"])]]
    assert parents_near, bred
    distance = [np.hypot(*(xy[int(r["simulation_id"])] - xy[int(r["parent"])]))
                for r in parents_near]
    assert np.median(distance) < 0.25, distance

    # The point of it: a better surrogate for the same number of simulations.
    error = {method: held_out_rmse(run.output_dir) for method, run in runs.items()}
    assert error["breed"] < 0.8 * error["random"], error


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_a_buffer_short_of_a_batch_does_not_hold_the_breeding_back(
        launcher: Any, framework: str) -> None:
    """A FIFO buffer trains in whole batches: generations of 5 simulations x 4 steps leave 4
    samples short of a batch of 16 until the next generation, which is bred only once every
    simulation has its fitness. The server measures the waiting samples' loss as they are, so
    each generation is bred from the fitness of every simulation, never after
    fitness_timeout."""
    cfg = config("breed")
    cfg["study_options"]["parameter_sweep_size"] = 15
    cfg["sampling"]["breed"].update(generation_size=5, fitness_timeout=20)
    cfg["dl_config"].update(framework=framework, buffer="fifo", drain_batches=50)
    run = launcher(cfg)
    assert run.returncode == 0, run.output
    rows = table(run.output_dir)
    assert [r["generation"] for r in rows] == [str(g) for g in range(3) for _ in range(5)]
    assert all(float(r["fitness"]) > 0 for r in rows), rows
    log = (run.output_dir / "logs" / "launcher.log").read_text()
    assert "without the fitness" not in log, log
