"""Training throughput from the stream against an offline DataLoader over files of the same
samples, with the same model, batch size and optimizer, in the same run; and the buffers' cost
per sample.

- stream: a DeepLearningServer (real ZeroMQ socket, receive loop, FIFO buffer, training thread)
  fed by K client processes that send precomputed heat-equation fields as fast as they can;
  rate = samples trained / time from the first to the last optimizer step. FIFO uses each
  sample once, so this is what the stream sustains end to end (receive, assemble, encode, buffer,
  train), training and receiving sharing the process.
- reservoir: the same stream into a Reservoir holding every sample; the training loop draws
  batches while data arrives and then as many samples again: the loop's own rate from the buffer.
- offline: the same samples written one file per simulation (float64, as a solver writes them),
  then one epoch of a torch DataLoader over them (shuffled, same scaling as process_sample).
- memory: the same training steps on samples already stacked in memory (the ceiling).
- buffer: put + batched get of (x, y) pairs for each policy, one thread, per sample; and the
  receive side's whole work per sample (assemble, process_sample, put), without sockets.
- per buffer: the stream with each of the five buffers (the reservoirs hold every sample and
  train as many samples again after the end; sim_paired_reservoir trains x(t), y(t) -> y(t+1),
  a wider input);
- tensorflow: the FIFO stream into the TensorFlow/Keras 3 server (same MLP, optimizer, batch),
  against the PyTorch one ("stream") in the same run.

    .venv/bin/python bench/dl_throughput.py [--sims 128] [--steps 25] [--nx 32] [--batch 32]
                                            [--clients 2] [--threads 1] [--repeats 3]

Each figure is the best of --repeats runs (the runs of the four interleaved). The last line
printed is one JSON object with every figure and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from melissa.config import parse_config
from melissa.launcher.channel import ServerChannel
from melissa.paths import StudyPaths
from melissa.server.learning import ParameterScaler, make_buffer, time_input
from melissa.server.learning.buffers import POLICIES
from melissa.server.learning.torch_models import SurrogateMLP
from melissa.server.learning.torch_server import DeepLearningServer
from melissa.server.registry import FieldInfo

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples" / "heat_equation"))
import heat  # after the path insert above

NAMES = ["initial", "left", "right", "top", "bottom", "diffusivity"]
BOUNDS = [(100, 500)] * 5 + [(0.5, 2.0)]
HIDDEN = [256, 256]

CLIENT = """
import json, os, sys, numpy as np, melissa.client as melissa
data = np.load(sys.argv[1])
names, params, fields = list(data["names"]), data["params"], data["fields"]  # read once
for sim in [int(s) for s in sys.argv[2:]]:
    os.environ["MELISSA_SIMULATION_ID"] = str(sim)
    os.environ["MELISSA_PARAMETERS"] = json.dumps(dict(zip(names, params[sim].tolist())))
    melissa._session = None  # one process plays several simulations, one after the other
    melissa.init("temperature", fields.shape[2])
    for field in fields[sim]:
        melissa.send("temperature", field)
    melissa.finalize()
"""


def study_config(
    args: argparse.Namespace, output_dir: Path, buffer: str = "fifo", framework: str = "torch"
) -> dict[str, Any]:
    return {
        "output_dir": str(output_dir),
        "study_options": {"field_names": ["temperature"], "nb_time_steps": args.steps,
                          "parameter_sweep_size": args.sims, "seed": 1},
        "parameters": [{"name": n, "distribution": "uniform", "low": lo, "high": hi}
                       for n, (lo, hi) in zip(NAMES, BOUNDS)],
        "dl_config": {"buffer": buffer, "batch_size": args.batch, "framework": framework,
                      "buffer_size": (args.sims * args.steps if "reservoir" in buffer
                                      else 8 * args.batch),
                      "per_server_watermark": args.batch, "nb_batches_update": 10**9,
                      "drain_batches": args.sims * args.steps // args.batch,
                      "checkpoint_interval": 0, "validation_fraction": 0.0,
                      "hidden_layers": HIDDEN, "device": "cpu", "cpu_threads": args.threads},
        "client_config": {"executable_command": "unused"},
    }


def make_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    params = np.column_stack([rng.uniform(lo, hi, args.sims) for lo, hi in BOUNDS])
    fields = np.array([[f.reshape(-1) for f in heat.simulate(*p, nx=args.nx, ny=args.nx,
                                                             nb_steps=args.steps)]
                       for p in params])
    return params, fields


def stream(
    args: argparse.Namespace, work: Path, data_file: Path, buffer: str, framework: str = "torch"
) -> dict[str, float]:
    paths = StudyPaths(work / f"stream_{buffer}_{framework}")
    paths.make_dirs()
    config = parse_config(json.dumps(study_config(args, paths.root, buffer, framework)), "bench")
    token = secrets.token_bytes(16)
    torch.manual_seed(1)
    server: Any
    if framework == "tensorflow":
        from melissa.server.learning.tf_server import TensorFlowServer

        server = TensorFlowServer(config, paths, token)
    else:
        server = DeepLearningServer(config, paths, token)
    server.bind()
    thread = threading.Thread(target=server.run, name="receive")
    thread.start()  # the socket moves to this thread before any use (thread start is a barrier)
    channel = ServerChannel(server.endpoint, token)
    channel.attach(30)
    env = {**os.environ, "MELISSA_SERVER": server.endpoint, "MELISSA_STUDY_TOKEN": token.hex()}
    shares = np.array_split(np.arange(args.sims), args.clients)
    started = time.perf_counter()
    clients = [subprocess.Popen([sys.executable, "-c", CLIENT, str(data_file),
                                 *[str(s) for s in share]], env=env) for share in shares]
    for c in clients:
        if c.wait(timeout=600) != 0:
            raise SystemExit("a client failed")
    channel.finish()
    thread.join(timeout=600)
    channel.close()
    trainer = server.trainer
    assert trainer is not None and trainer.samples >= args.sims * args.steps * (
        0.9 if buffer == "sim_paired_reservoir" else 1), trainer
    return {
        "samples": trainer.samples,
        "training_s": trainer.training_seconds,
        "samples_per_s": trainer.samples / trainer.training_seconds,
        "end_to_end_s": time.perf_counter() - started,
    }


class SimulationFiles(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Samples from one .npy file per simulation, scaled as the server's process_sample."""

    def __init__(self, directory: Path, scaled: np.ndarray, steps: int) -> None:
        self.files = [np.load(directory / f"simulation_{i:06d}.npy", mmap_mode="r")
                      for i in range(len(scaled))]
        self.scaled = scaled
        self.steps = steps

    def __len__(self) -> int:
        return len(self.files) * self.steps

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        sim, step = divmod(i, self.steps)
        x = np.append(self.scaled[sim], time_input(step, self.steps)).astype(np.float32)
        return x, np.asarray(self.files[sim][step], dtype=np.float32)


def train_epoch(batches: Any, out_features: int, first_y: torch.Tensor) -> tuple[int, float]:
    torch.manual_seed(1)
    model = SurrogateMLP(7, out_features, HIDDEN, float(first_y.mean()), float(first_y.std()))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    samples, started = 0, time.perf_counter()
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = F.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        samples += len(x)
    return samples, time.perf_counter() - started


def offline(args: argparse.Namespace, work: Path, scaled: np.ndarray,
            fields: np.ndarray) -> dict[str, float]:
    directory = work / "offline"
    directory.mkdir(parents=True)
    started = time.perf_counter()
    for i, f in enumerate(fields):
        np.save(directory / f"simulation_{i:06d}.npy", f)  # float64, as the solver has them
    write_s = time.perf_counter() - started
    files = SimulationFiles(directory, scaled, args.steps)
    loader = torch.utils.data.DataLoader(files, batch_size=args.batch, shuffle=True,
                                         generator=torch.Generator().manual_seed(1))
    first_y = torch.from_numpy(fields[0, : args.batch].astype(np.float32))
    samples, seconds = train_epoch(loader, fields.shape[2], first_y)
    return {"samples": samples, "training_s": seconds, "samples_per_s": samples / seconds,
            "write_s": write_s,
            "disk_bytes": sum(p.stat().st_size for p in directory.iterdir())}


def memory(args: argparse.Namespace, scaled: np.ndarray, fields: np.ndarray) -> dict[str, float]:
    t = np.tile(time_input(np.arange(args.steps), args.steps), len(scaled))
    x = torch.from_numpy(
        np.column_stack([np.repeat(scaled, args.steps, axis=0), t]).astype(np.float32))
    y = torch.from_numpy(fields.reshape(len(x), -1).astype(np.float32))
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    batches = [(x[i], y[i]) for i in order.split(args.batch)]
    samples, seconds = train_epoch(batches, y.shape[1], y[: args.batch])
    return {"samples": samples, "training_s": seconds, "samples_per_s": samples / seconds}


def receive_cost(args: argparse.Namespace, params: np.ndarray, fields: np.ndarray) -> float:
    """Microseconds per sample of the receive side's own work (assemble the chunk into a
    sample, process_sample, put into the buffer), without sockets or a training thread."""
    config = parse_config(json.dumps(study_config(args, Path("unused"))), "bench")
    dl = config.dl_config
    assert dl is not None
    config = config.model_copy(update={"dl_config": dl.model_copy(
        update={"buffer_size": args.sims * args.steps})})
    server = DeepLearningServer(config, StudyPaths(Path("unused")), bytes(16))
    info = FieldInfo(0, "temperature", fields.shape[2], None, 0, fields.shape[2])
    server.on_field(info)
    for sim, p in enumerate(params):
        server.on_hello(sim, {"parameters": dict(zip(NAMES, p.tolist()))})
    started = time.perf_counter()
    for sim in range(args.sims):
        for step in range(args.steps):
            server.on_data(info, sim, step, 0, fields[sim, step])
    seconds = time.perf_counter() - started
    server.close()
    return seconds / (args.sims * args.steps) * 1e6


def buffer_costs(args: argparse.Namespace, out_features: int) -> dict[str, float]:
    """Microseconds per sample of put + batched get, one thread (no waiting involved)."""
    n = 20000
    pair = (np.zeros(7, np.float32), np.zeros(out_features, np.float32))
    costs = {}
    for policy in POLICIES:
        buffer = make_buffer(policy, n, args.batch, seed=0)  # type: ignore[arg-type]
        paired = policy == "sim_paired_reservoir"
        started = time.perf_counter()
        for i in range(n):
            buffer.put(((i // args.steps, i % args.steps), pair) if paired else pair)
        buffer.end_reception()
        served = 0
        while batch := buffer.get_batch(args.batch, timeout=0):
            served += len(batch)
        costs[policy] = (time.perf_counter() - started) / n * 1e6
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=128)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--nx", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, both sides")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs each")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params, fields = make_data(args)
    config = parse_config(json.dumps(study_config(args, Path("unused"))), "bench")
    scaled = ParameterScaler(config.parameters)(params)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data_file = work / "data.npz"
        np.savez(data_file, params=params, fields=fields, names=np.array(NAMES))
        runs: dict[str, list[dict[str, float]]] = {
            "stream": [], "offline": [], "memory": [],
            **{b: [] for b in POLICIES if b != "fifo"}, "tensorflow": []}
        for r in range(args.repeats):  # interleaved, so that a busy moment hits all alike
            runs["stream"].append(stream(args, work / str(r), data_file, "fifo"))
            for b in POLICIES[1:]:
                runs[b].append(stream(args, work / str(r), data_file, b))
            runs["tensorflow"].append(stream(args, work / str(r), data_file, "fifo",
                                             "tensorflow"))
            runs["offline"].append(offline(args, work / str(r), scaled, fields))
            runs["memory"].append(memory(args, scaled, fields))
        results = {k: max(v, key=lambda x: x["samples_per_s"]) for k, v in runs.items()}
    costs = buffer_costs(args, fields.shape[2])
    receive_us = min(receive_cost(args, params, fields) for _ in range(args.repeats))
    step_us = 1e6 / results["memory"]["samples_per_s"]
    print(f"best of {args.repeats}; {args.sims} simulations x {args.steps} steps of {args.nx}x{args.nx} cells = "
          f"{args.sims * args.steps} samples; MLP 7-{'-'.join(map(str, HIDDEN))}-"
          f"{fields.shape[2]}, batch {args.batch}, {args.threads} torch thread(s), "
          f"{args.clients} client processes; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores")
    print(f"{'source':<20} {'samples/s':>10} {'vs memory':>10}")
    for name, r in results.items():
        print(f"{name:<20} {r['samples_per_s']:>10.0f} "
              f"{r['samples_per_s'] / results['memory']['samples_per_s']:>10.2f}")
    print(f"stream / offline: {results['stream']['samples_per_s'] / results['offline']['samples_per_s']:.2f}"
          f"; offline files {results['offline']['disk_bytes'] / 1e6:.1f} MB written in "
          f"{results['offline']['write_s']:.2f} s; stream end to end "
          f"{results['stream']['end_to_end_s']:.1f} s")
    print(f"tensorflow / torch (FIFO stream): "
          f"{results['tensorflow']['samples_per_s'] / results['stream']['samples_per_s']:.2f}")
    print("buffer put+get per sample (us): " + ", ".join(f"{k} {v:.2f}" for k, v in costs.items())
          + f"; receive side per sample (assemble, process_sample, put): {receive_us:.1f} us"
          + f"; training per sample: {step_us:.0f} us")
    print(json.dumps({
        "samples": args.sims * args.steps, "cells": args.nx * args.nx, "batch": args.batch,
        "threads": args.threads, "clients": args.clients, **{
            f"{k}_samples_per_s": round(v["samples_per_s"], 1) for k, v in results.items()},
        "stream_vs_offline": round(results["stream"]["samples_per_s"]
                                   / results["offline"]["samples_per_s"], 3),
        "tensorflow_vs_torch": round(results["tensorflow"]["samples_per_s"]
                                     / results["stream"]["samples_per_s"], 3),
        "stream_vs_memory": round(results["stream"]["samples_per_s"]
                                  / results["memory"]["samples_per_s"], 3),
        "offline_disk_bytes": results["offline"]["disk_bytes"],
        "buffer_us_per_sample": {k: round(v, 3) for k, v in costs.items()},
        "receive_us_per_sample": round(receive_us, 2),
        "train_step_us_per_sample": round(step_us, 1),
    }))


if __name__ == "__main__":
    main()
