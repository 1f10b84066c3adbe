"""Deep-surrogate studies end to end through melissa-launcher on the CPU: the examples' configs
and custom servers (made small), the default server from config alone, and what a user gets:
a loss that decreases while data still arrives, a checkpoint that reloads into the model that
was validated, TensorBoard scalars, and a surrogate that beats predicting the mean field."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from melissa.config import parse_config
from melissa.config.loader import strip_comments
from melissa.server.learning import ParameterScaler, load_surrogate, time_input
from tests.integration.conftest import REPO, LauncherRun

HEAT_DIR = REPO / "examples" / "heat_equation"
LORENZ_DIR = REPO / "examples" / "lorenz"
NX, STEPS, SIMS = 12, 8, 24
# The surrogate's RMSE on held-out simulations must be at most this fraction of the RMSE of
# predicting, for every time step and cell, the mean field of the training simulations.
MARGIN = 0.3


def module(path: Path) -> ModuleType:
    """Import an example file as melissa's loader does: its neighbours importable."""
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(f"example_{path.parent.name}_{path.stem}", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def example_config(directory: Path, **changes: Any) -> dict[str, Any]:
    """An example's config_dl.json with absolute paths and `changes` merged into its sections."""
    cfg = json.loads(strip_comments((directory / "config_dl.json").read_text()))
    cfg["output_dir"] = "out"
    server = cfg.get("server_config", {})
    if "server_filename" in server:
        server["server_filename"] = str(directory / server["server_filename"])
    for section, values in changes.items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
        else:
            cfg[section] = values
    return cfg


def metrics(run: LauncherRun) -> list[dict[str, float]]:
    with open(run.output_dir / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def scalars(run: LauncherRun) -> dict[str, list[float]]:
    events = EventAccumulator(str(run.output_dir / "tensorboard"))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def ensemble(
    run: LauncherRun, simulate: Any, **options: Any
) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """(config, parameters, fields[sim, step, values], held-out mask) recomputed offline."""
    study = parse_config((run.output_dir / "study.json").read_text(), "study.json")
    rows = run.parameters()
    assert {r["status"] for r in rows} == {"completed"}, rows
    names = [p.name for p in study.parameters]
    params = np.array([[float(r[n]) for n in names] for r in rows])
    runs = [np.stack(list(simulate(*p, **options))) for p in params]
    fields = np.stack([r.reshape(len(r), -1) for r in runs])
    ids = [int(r["simulation_id"]) for r in rows]
    held_out = study.dl_config.validation_simulations(study.study_options.parameter_sweep_size)
    return study, params, fields, np.isin(ids, sorted(held_out))


def inputs(study: Any, params: np.ndarray, steps: int) -> np.ndarray:
    """The default process_sample's x for every (simulation, step), in that order."""
    scaled = np.repeat(ParameterScaler(study.parameters)(params), steps, axis=0)
    t = np.tile(time_input(np.arange(steps), steps), len(params))
    return np.column_stack([scaled, t]).astype(np.float32)


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def test_heat_surrogate_trains_online(launcher: Any) -> None:
    heat, server = module(HEAT_DIR / "heat.py"), module(HEAT_DIR / "custom_server.py")
    cfg = example_config(
        HEAT_DIR,
        study_options={"nb_time_steps": STEPS, "parameter_sweep_size": SIMS, "seed": 3},
        dl_config={"batch_size": 16, "buffer_size": 600, "per_server_watermark": 32,
                   "drain_batches": 1200, "nb_batches_update": 20, "checkpoint_interval": 300,
                   "learning_rate": 0.003, "validation_fraction": 0.2, "hidden_layers": [64, 64],
                   "device": "cpu"},
        client_config={"executable_command":
                       f"python3 {HEAT_DIR / 'heat.py'} --nx {NX} --ny {NX} --steps {STEPS}"},
        launcher_config={"job_limit": 2},
    )
    run = launcher(cfg)
    assert run.returncode == 0, run.output
    rows = metrics(run)
    received = rows[-1]["buffer_received"]
    # Training started while simulations still streamed, and the loss went down by 10x.
    assert rows[0]["buffer_received"] < received, rows[:3]
    assert rows[-1]["loss"] < rows[0]["loss"] / 10
    assert rows[-1]["validation_loss"] < rows[0]["validation_loss"] / 10
    assert rows[-1]["buffer_reuse"] > 1 and rows[-1]["buffer_evicted"] == 0

    study, params, fields, held_out = ensemble(run, heat.simulate, nx=NX, ny=NX, nb_steps=STEPS)
    assert received == (SIMS - held_out.sum()) * STEPS
    assert rows[-1]["validation_samples"] == held_out.sum() * STEPS
    # The summary tells the validation error; a training study has no statistics or plots.
    held = int(rows[-1]["validation_samples"])
    assert re.search(rf"validation loss +│ {rows[-1]['validation_loss']:.4g} over {held} "
                     "held-out samples", run.output), run.output
    assert not (run.output_dir / "statistics").exists()
    assert not (run.output_dir / "plots").exists()

    # The checkpoint holds the model that was validated last, and the counters.
    checkpoint = torch.load(run.output_dir / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["batches"] == rows[-1]["batch"] and checkpoint["samples"] == rows[-1]["samples"]
    assert set(checkpoint["optimizer"]["state"])  # Adam's moments are saved too
    model = server.load_model(run.output_dir / "checkpoints" / "last.pt")
    with torch.no_grad():
        scaled = model(torch.from_numpy(inputs(study, params[held_out], STEPS))).numpy()
    predicted = server.T_CENTRE + server.T_HALF_RANGE * scaled.reshape(held_out.sum(), STEPS, -1)
    surrogate = rmse(predicted, fields[held_out])
    logged = np.sqrt(checkpoint["validation"]["loss"]) * server.T_HALF_RANGE
    assert surrogate == pytest.approx(logged, rel=1e-3)

    mean_field = fields[~held_out].mean(axis=0)
    baseline = rmse(mean_field[None], fields[held_out])
    assert surrogate < MARGIN * baseline, (surrogate, baseline)

    # TensorBoard has every figure of metrics.csv, plus the custom server's own curve.
    tb = scalars(run)
    for tag in ("train/loss", "validation/loss", "validation/mae_kelvin", "train/samples_per_s",
                "buffer/fill", "buffer/reuse", "buffer/received", "validation/rmse_kelvin"):
        assert len(tb[tag]) == len(rows), tag
    assert tb["train/loss"] == pytest.approx([r["loss"] for r in rows], rel=1e-6)
    assert tb["validation/rmse_kelvin"][-1] == pytest.approx(logged, rel=1e-4)
    assert "results_written" not in run.output and str(run.output_dir / "checkpoints") in run.output


@pytest.mark.parametrize("server_ranks", [1, 2])
def test_default_server_from_config_alone_with_a_fifo_buffer(
    launcher: Any, tmp_path: Path, server_ranks: int
) -> None:
    """No custom server: the default MLP; FIFO uses each sample exactly once. With 2 server
    ranks each simulation's samples go to one rank and training is data-parallel (gloo)."""
    heat = module(HEAT_DIR / "heat.py")
    cfg = example_config(
        HEAT_DIR,
        study_options={"nb_time_steps": 5, "parameter_sweep_size": 16, "seed": 1},
        dl_config={"buffer": "fifo", "batch_size": 8, "buffer_size": 20, "per_server_watermark": 8,
                   "nb_batches_update": 4, "checkpoint_interval": 0, "validation_fraction": 0.25,
                   "hidden_layers": [32], "device": "cpu"},
        client_config={"executable_command": f"python3 {HEAT_DIR / 'heat.py'} --nx 6 --ny 5 --steps 5"},
        server_config={"server_filename": None, "server_class": None, "ranks": server_ranks},
    )
    run = launcher(cfg)
    assert run.returncode == 0, run.output
    rows = metrics(run)
    last = rows[-1]
    assert last["samples"] == last["buffer_received"] == 12 * 5  # 4 simulations held out
    assert last["buffer_reuse"] == 1.0 and last["buffer_fill"] == 0.0

    study, params, fields, held_out = ensemble(run, heat.simulate, nx=6, ny=5, nb_steps=5)
    model = load_surrogate(run.output_dir / "checkpoints" / "last.pt")
    with torch.no_grad():
        predicted = model(torch.from_numpy(inputs(study, params[held_out], 5))).numpy()
    checkpoint = torch.load(run.output_dir / "checkpoints" / "last.pt", weights_only=True)
    mse = np.mean((predicted.reshape(held_out.sum(), 5, -1) - fields[held_out]) ** 2)
    assert mse == pytest.approx(checkpoint["validation"]["loss"], rel=1e-3)


def test_lorenz_surrogate_beats_the_mean_trajectory(launcher: Any) -> None:
    lorenz, server = module(LORENZ_DIR / "lorenz.py"), module(LORENZ_DIR / "custom_server.py")
    steps, sims = 30, 40
    cfg = example_config(
        LORENZ_DIR,
        study_options={"nb_time_steps": steps, "parameter_sweep_size": sims},
        dl_config={"buffer_size": 1200, "per_server_watermark": 200, "drain_batches": 1500,
                   "nb_batches_update": 250, "checkpoint_interval": 0, "device": "cpu"},
        client_config={"executable_command":
                       f"python3 {LORENZ_DIR / 'lorenz.py'} --steps {steps} --t-end 1.5"},
    )
    run = launcher(cfg)
    assert run.returncode == 0, run.output
    study, params, states, held_out = ensemble(run, lorenz.simulate, nb_steps=steps, t_end=1.5)
    model = server.load_model(run.output_dir / "checkpoints" / "last.pt")
    predicted = server.predict(model, inputs(study, params[held_out], steps))
    surrogate = rmse(predicted.reshape(held_out.sum(), steps, 3), states[held_out])
    baseline = rmse(states[~held_out].mean(axis=0)[None], states[held_out])
    assert surrogate < MARGIN * baseline, (surrogate, baseline)
    assert {"validation/mae_x", "validation/mae_z"} <= set(scalars(run))


@pytest.mark.parametrize("buffer", ["batch_reservoir", "sim_paired_reservoir"])
def test_default_server_with_the_other_buffers(launcher: Any, buffer: str) -> None:
    """batch_reservoir and sim_paired_reservoir from the config: every sample arrives in the
    buffer; the paired one trains x(t), y(t) -> y(t + 1) (input: 6 parameters, t, 30 cells)."""
    cfg = example_config(
        HEAT_DIR,
        study_options={"nb_time_steps": 5, "parameter_sweep_size": 8, "seed": 1},
        dl_config={"buffer": buffer, "batch_size": 4, "buffer_size": 40, "per_server_watermark": 8,
                   "drain_batches": 30, "nb_batches_update": 10, "checkpoint_interval": 0,
                   "validation_fraction": 0.25, "hidden_layers": [16], "device": "cpu"},
        client_config={"executable_command":
                       f"python3 {HEAT_DIR / 'heat.py'} --nx 6 --ny 5 --steps 5"},
        server_config={"server_filename": None, "server_class": None},
    )
    run = launcher(cfg)
    assert run.returncode == 0, run.output
    last = metrics(run)[-1]
    assert last["buffer_received"] == 6 * 5  # 2 of 8 simulations held out
    assert last["validation_samples"] == (2 * 4 if buffer == "sim_paired_reservoir" else 2 * 5)
    assert np.isfinite(last["validation_loss"])
    checkpoint = torch.load(run.output_dir / "checkpoints" / "last.pt", weights_only=True)
    in_features = checkpoint["model_config"]["in_features"]
    assert in_features == (7 + 30 if buffer == "sim_paired_reservoir" else 7)


def test_batches_per_sample_ties_the_training_to_the_data(launcher: Any) -> None:
    """While simulations still send, at most batches_per_sample batches per sample received
    (the training waits for data beyond), then drain_batches: without it the training loop
    would run thousands of batches while the simulations start and run."""
    cfg = example_config(
        HEAT_DIR,
        study_options={"nb_time_steps": 5, "parameter_sweep_size": 6, "seed": 1},
        dl_config={"buffer": "reservoir", "batch_size": 4, "buffer_size": 40,
                   "per_server_watermark": 8, "batches_per_sample": 2, "drain_batches": 30,
                   "nb_batches_update": 10, "checkpoint_interval": 0, "validation_fraction": 0,
                   "hidden_layers": [16], "device": "cpu"},
        client_config={"executable_command":
                       f"python3 {HEAT_DIR / 'heat.py'} --nx 6 --ny 5 --steps 5"},
        server_config={"server_filename": None, "server_class": None},
        launcher_config={"job_limit": 2},
    )
    run = launcher(cfg)
    assert run.returncode == 0, run.output
    checkpoint = torch.load(run.output_dir / "checkpoints" / "last.pt", weights_only=True)
    assert 30 < checkpoint["batches"] <= 2 * 6 * 5 + 30, checkpoint["batches"]
