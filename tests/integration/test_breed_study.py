"""Active sampling end to end (examples/peak/config_breed.json, made small): on a model whose
difficulty is a narrow peak in a 2-D parameter space, breeding places more simulations near the
peak than uniform sampling would; parameters.csv says where each simulation came from (generation,
parent, fitness), breed.png shows it. (The held-out error against random sampling is measured in
bench/breed.py: see bench/RESULTS.md.)"""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from melissa.config.loader import strip_comments
from tests.integration.conftest import REPO

PEAK_DIR = REPO / "examples" / "peak"
BUDGET, STEPS, CELLS = 60, 4, 8
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
    return cfg


NEAR = 3 * peak.SIGMA  # where the peak is more than 1% of its height


def near_peak(xy: np.ndarray) -> np.ndarray:
    return np.hypot(xy[:, 0] - peak.PEAK[0], xy[:, 1] - peak.PEAK[1]) < NEAR


def table(out: Path) -> list[dict[str, str]]:
    with open(out / "parameters.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_breeding_samples_near_the_peak(launcher: Any) -> None:
    bred_run = launcher(config("breed"))
    assert bred_run.returncode == 0, bred_run.output

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
    uniform = np.pi * NEAR**2  # a uniform draw's chance to land near the peak
    assert near_peak(xy).mean() > 2 * uniform, near_peak(xy).mean()
    # The children of the parents near the peak stay close (the mutation adapts to them).
    parents_near = [r for r in bred if near_peak(xy[[int(r["parent"])]])[0]]
    assert parents_near, bred
    distance = [np.hypot(*(xy[int(r["simulation_id"])] - xy[int(r["parent"])]))
                for r in parents_near]
    assert np.median(distance) < 0.25, distance
