"""The same budget of heat-equation simulations, trained online (Melissa) and offline (files).

- online: `melissa-launcher -c config_dl.json` (made this size): the simulations stream their
  fields to the server, which trains HeatSurrogateServer's network while they run; no sample is
  written.
- offline: the same simulations (same parameters) run as processes, job_limit at a time, each
  writing its fields to a .npy file; then a classic training over the files (torch DataLoader,
  shuffled epochs) of the same network, optimizer, batch size and number of optimizer steps,
  on the same training simulations (the validation ids held out in both).

Both models are then scored on fresh test simulations (never seen by either) against the exact
fields; the mean field of the training simulations is the trivial baseline. One table: test
RMSE, wall time (simulations + training) and bytes written to disk.

    .venv/bin/python examples/heat_equation/online_vs_offline.py [--sims 60] [--nx 24]
        [--steps 20] [--test-sims 20] [--job-limit 4] [--workdir DIR]

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from melissa.config import parse_config
from melissa.config.loader import strip_comments
from melissa.server.learning import ParameterScaler, time_input

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the example's own modules, imported below:
import custom_server  # the network and its scaling, as the online server uses them
import heat  # the solver

# One offline simulation: heat.py's solver writing its fields to a file instead of sending them
# (NumPy only, like the online client: no torch in the simulation processes).
WRITE_SIMULATION = """
import sys
import numpy as np
from heat import simulate
path, nx, steps, *values = sys.argv[1:]
fields = np.stack(list(simulate(*map(float, values), nx=int(nx), ny=int(nx), nb_steps=int(steps))))
np.save(path, fields)  # float64, as the solver computes them
"""


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def online(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    cfg = json.loads(strip_comments((HERE / "config_dl.json").read_text()))
    cfg["output_dir"] = str(work / "online")
    cfg["study_options"].update(parameter_sweep_size=args.sims, nb_time_steps=args.steps)
    cfg["client_config"]["executable_command"] = (
        f"python3 {HERE / 'heat.py'} --nx {args.nx} --ny {args.nx} --steps {args.steps}")
    cfg["server_config"]["server_filename"] = str(HERE / "custom_server.py")
    cfg["launcher_config"]["job_limit"] = args.job_limit
    path = work / "config_online.json"
    path.write_text(json.dumps(cfg, indent=2))
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "melissa.launcher", "-c", str(path)],
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"the online study failed:\n{proc.stdout}\n{proc.stderr}")
    out = Path(cfg["output_dir"])
    checkpoint = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    with open(out / "parameters.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {"dir": out, "wall_s": wall, "disk_bytes": directory_bytes(out),
            "batches": checkpoint["batches"], "rows": rows,
            "model": custom_server.load_model(out / "checkpoints" / "last.pt")}


def offline(args: argparse.Namespace, work: Path, study: Any, rows: list[dict[str, str]],
            batches: int) -> dict[str, Any]:
    directory = work / "offline"
    directory.mkdir()
    names = [p.name for p in study.parameters]
    started = time.perf_counter()
    pending = [(int(r["simulation_id"]), [r[n] for n in names]) for r in rows]
    running: list[subprocess.Popen[bytes]] = []
    while pending or running:
        while pending and len(running) < args.job_limit:
            sim, values = pending.pop(0)
            running.append(subprocess.Popen([
                sys.executable, "-c", WRITE_SIMULATION,
                str(directory / f"simulation_{sim:06d}.npy"), str(args.nx), str(args.steps),
                *values], cwd=HERE))
        for proc in [p for p in running if p.poll() is not None]:
            if proc.returncode != 0:
                raise SystemExit("an offline simulation failed")
            running.remove(proc)
        time.sleep(0.01)
    simulate_s = time.perf_counter() - started

    held_out = study.dl_config.validation_simulations(args.sims)
    train = [r for r in rows if int(r["simulation_id"]) not in held_out]
    scaler = ParameterScaler(study.parameters)
    dl = study.dl_config

    class Files(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __init__(self) -> None:
            self.files = [np.load(directory / f"simulation_{int(r['simulation_id']):06d}.npy",
                                  mmap_mode="r") for r in train]
            self.scaled = scaler(np.array([[float(r[n]) for n in names] for r in train]))

        def __len__(self) -> int:
            return len(self.files) * args.steps

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            sim, step = divmod(i, args.steps)
            x = np.append(self.scaled[sim], time_input(step, args.steps)).astype(np.float32)
            y = (self.files[sim][step].reshape(-1) - custom_server.T_CENTRE) \
                / custom_server.T_HALF_RANGE
            return x, y.astype(np.float32)

    torch.set_num_threads(dl.cpu_threads or torch.get_num_threads())  # as the online server
    started = time.perf_counter()
    dataset = Files()
    loader = torch.utils.data.DataLoader(dataset, batch_size=dl.batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(1))
    epochs = math.ceil(batches / len(loader))  # the same number of optimizer steps as online
    torch.manual_seed(study.study_options.seed)
    model = custom_server.build_network(len(names) + 1, args.nx * args.nx, dl.hidden_layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=dl.learning_rate)
    steps = 0
    for _ in range(epochs):
        for x, y in loader:
            if steps == batches:
                break
            optimizer.zero_grad(set_to_none=True)
            F.mse_loss(model(x), y).backward()
            optimizer.step()
            steps += 1
    torch.save(model.state_dict(), directory / "model.pt")
    return {"dir": directory, "simulate_s": simulate_s, "train_s": time.perf_counter() - started,
            "epochs": epochs, "disk_bytes": directory_bytes(directory),
            "model": model.eval()}


def test_rmse(models: dict[str, torch.nn.Module], args: argparse.Namespace, study: Any,
              train_fields: np.ndarray) -> dict[str, float]:
    """RMSE (kelvin) on fresh simulations, and that of the training simulations' mean field."""
    rng = np.random.default_rng(12345)
    bounds = [(p.low, p.high) for p in study.parameters]
    params = np.column_stack([rng.uniform(lo, hi, args.test_sims) for lo, hi in bounds])
    truth = np.array([[f.reshape(-1) for f in heat.simulate(*p, nx=args.nx, ny=args.nx,
                                                            nb_steps=args.steps)]
                      for p in params])
    scaled = np.repeat(ParameterScaler(study.parameters)(params), args.steps, axis=0)
    t = np.tile(time_input(np.arange(args.steps), args.steps), len(params))
    x = torch.from_numpy(np.column_stack([scaled, t]).astype(np.float32))
    errors = {"mean field": float(np.sqrt(np.mean((truth - train_fields.mean(axis=0)) ** 2)))}
    for name, model in models.items():
        with torch.no_grad():
            predicted = model(x).numpy().reshape(truth.shape)
        kelvin = custom_server.T_CENTRE + custom_server.T_HALF_RANGE * predicted
        errors[name] = float(np.sqrt(np.mean((truth - kelvin) ** 2)))
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=60)
    parser.add_argument("--nx", type=int, default=24)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--test-sims", type=int, default=20)
    parser.add_argument("--job-limit", type=int, default=4)
    parser.add_argument("--workdir", type=Path, help="keep the outputs here (default: a temp dir)")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="online_vs_offline_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        on = online(args, work)
        study = parse_config((on["dir"] / "study.json").read_text(), "study.json")
        off = offline(args, work, study, on["rows"], on["batches"])
        held_out = study.dl_config.validation_simulations(args.sims)
        train_fields = np.array([np.load(off["dir"] / f"simulation_{int(r['simulation_id']):06d}.npy")
                                 .reshape(args.steps, -1) for r in on["rows"]
                                 if int(r["simulation_id"]) not in held_out])
        errors = test_rmse({"online": on["model"], "offline": off["model"]}, args, study,
                           train_fields)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{args.sims} simulations of {args.nx}x{args.nx} cells x {args.steps} steps "
          f"({len(held_out)} held out for validation), {on['batches']} optimizer steps of "
          f"{study.dl_config.batch_size} samples each way; test: {args.test_sims} fresh "
          "simulations")
    print(f"{'':<9} {'test RMSE (K)':>13} {'/ mean field':>12} {'wall (s)':>9} "
          f"{'disk (MB)':>10}")
    base = errors["mean field"]
    print(f"{'online':<9} {errors['online']:>13.2f} {errors['online'] / base:>12.3f} "
          f"{on['wall_s']:>9.1f} {on['disk_bytes'] / 1e6:>10.2f}")
    offline_wall = off["simulate_s"] + off["train_s"]
    print(f"{'offline':<9} {errors['offline']:>13.2f} {errors['offline'] / base:>12.3f} "
          f"{offline_wall:>9.1f} {off['disk_bytes'] / 1e6:>10.2f}   "
          f"(simulations {off['simulate_s']:.1f} s + {off['epochs']} epochs "
          f"{off['train_s']:.1f} s)")
    print(f"{'mean field':<10}{base:>12.2f} {1:>12.3f}")
    print(json.dumps({
        "sims": args.sims, "cells": args.nx * args.nx, "steps": args.steps,
        "optimizer_steps": on["batches"], "test_sims": args.test_sims,
        "online": {"rmse_k": round(errors["online"], 3), "wall_s": round(on["wall_s"], 2),
                   "disk_bytes": on["disk_bytes"]},
        "offline": {"rmse_k": round(errors["offline"], 3), "wall_s": round(offline_wall, 2),
                    "simulate_s": round(off["simulate_s"], 2),
                    "train_s": round(off["train_s"], 2), "epochs": off["epochs"],
                    "disk_bytes": off["disk_bytes"]},
        "mean_field_rmse_k": round(base, 3),
    }))


if __name__ == "__main__":
    main()
