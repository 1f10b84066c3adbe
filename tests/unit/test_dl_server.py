"""The deep-learning server's training side in one process (its buffer fed directly): restart
from a checkpoint, a failing user hook stopping the server with a clear error, the receive side
refusing a HELLO without parameters, and the training figures reaching melissa-monitor."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from melissa.config import parse_config
from melissa.errors import ProtocolError
from melissa.launcher.state import SimulationStatus
from melissa.launcher.status import build_snapshot
from melissa.monitor.render import plain
from melissa.paths import StudyPaths
from melissa.protocol.events import ServerStatus
from melissa.server.learning.buffers import BufferClosed
from melissa.server.learning.receiver import TrainingError
from melissa.server.learning.torch_server import DeepLearningServer


def study(tmp_path: Path, **dl: Any) -> Any:
    return parse_config(json.dumps({
        "output_dir": str(tmp_path),
        "study_options": {"field_names": ["u"], "nb_time_steps": 2, "parameter_sweep_size": 4},
        "parameters": [{"name": "a", "distribution": "uniform", "low": 0, "high": 1}],
        "dl_config": {"buffer": "fifo", "batch_size": 4, "buffer_size": 32,
                      "per_server_watermark": 4, "nb_batches_update": 2, "checkpoint_interval": 0,
                      "validation_fraction": 0, "hidden_layers": [8], "device": "cpu", **dl},
        "client_config": {"executable_command": "unused"},
    }), "test")


def pairs(n: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    for _ in range(n):
        x = rng.random(2, dtype=np.float32)
        yield x, np.array([x.sum(), x[0] - x[1]], dtype=np.float32)


def train(server: DeepLearningServer, items: Iterator[tuple[np.ndarray, np.ndarray]]) -> None:
    server.start_training()
    for item in items:
        server.buffer.put(item, timeout=30)
    server.buffer.end_reception()
    assert server.training_done(timeout=60)
    server.raise_if_training_failed()
    server.close()


def test_a_restarted_server_continues_from_the_checkpoint(tmp_path: Path) -> None:
    paths = StudyPaths(tmp_path)
    first = DeepLearningServer(study(tmp_path), paths, bytes(16))
    train(first, pairs(20, seed=1))  # 5 batches of 4
    saved = torch.load(paths.checkpoint, weights_only=True)
    assert (saved["batches"], saved["samples"]) == (5, 20)

    again = DeepLearningServer(study(tmp_path), paths, bytes(16))
    train(again, pairs(8, seed=2))  # 2 more batches
    assert again.trainer is not None
    assert (again.trainer.batches, again.trainer.samples) == (7, 28)
    resumed = torch.load(paths.checkpoint, weights_only=True)
    assert [s["step"].item() for s in resumed["optimizer"]["state"].values()] == [7.0] * 4
    with open(paths.training_metrics, newline="") as f:
        assert [int(float(r["batch"])) for r in csv.DictReader(f)] == [2, 4, 5, 6, 7]


class Failing(DeepLearningServer):
    def training_step(self, model: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise ValueError("shapes do not match: fix process_sample")


def test_a_failing_hook_stops_the_receive_side_with_its_message(tmp_path: Path) -> None:
    server = Failing(study(tmp_path), StudyPaths(tmp_path), bytes(16))
    server.start_training()
    with pytest.raises(BufferClosed):
        for item in pairs(100, seed=0):  # the buffer is aborted once the loop fails
            server.buffer.put(item, timeout=30)
    assert server.training_done(timeout=30)
    with pytest.raises(TrainingError, match="ValueError: shapes do not match: fix process_sample"):
        server.raise_if_training_failed()
    server.close()


def test_hello_without_parameters_is_refused(tmp_path: Path) -> None:
    server = DeepLearningServer(study(tmp_path), StudyPaths(tmp_path), bytes(16))
    with pytest.raises(ProtocolError, match="HELLO carries no 'parameters' object"):
        server.on_hello(3, {"field": "u"})
    with pytest.raises(ProtocolError, match=r"HELLO parameters \['b'\] do not match .*\['a'\]"):
        server.on_hello(3, {"parameters": {"b": 1.0}})
    server.on_hello(3, {"parameters": {"a": 0.25}})
    assert server.simulation_parameters[3].tolist() == [0.25]
    server.close()


def test_training_figures_reach_the_monitor() -> None:
    training = {"batch": 300.0, "samples": 4800.0, "loss": 0.0123, "validation_loss": 0.02,
                "samples_per_s": 9000.0, "buffer_fill": 0.38, "buffer_reuse": 12.6}
    snap = build_snapshot(
        output_dir=Path("/s"), scheduler="local", state="running", elapsed_s=1.0, job_limit=1,
        counts=dict.fromkeys(SimulationStatus, 0), failures=[],
        running=[], server_job={}, server=ServerStatus(training=training), chunks_expected=1,
        recent_mb_s=None, log_of=lambda s: Path("/s"),
    )
    assert snap["server"]["training"] == training
    assert ("training    batch 300, 4800 samples, loss 0.0123, validation 0.02, 9000 samples/s,"
            " buffer 38% full, reuse 12.6") in plain(snap)
    snap["server"]["training"] = {}
    assert "training" not in plain(snap)


def test_the_client_reads_melissa_parameters_for_its_hello() -> None:
    from melissa.client.session import ClientEnvironment
    from melissa.errors import ClientError

    env = {"MELISSA_SERVER": "tcp://h:1", "MELISSA_SIMULATION_ID": "2",
           "MELISSA_STUDY_TOKEN": "00" * 16}
    assert ClientEnvironment.from_environ(env).parameters is None  # HELLO without the key
    given = ClientEnvironment.from_environ({**env, "MELISSA_PARAMETERS": '{"a": 1, "b": -2e-5}'})
    assert given.parameters == {"a": 1.0, "b": -2e-5}
    for bad in ("[1, 2]", '{"a": "x"}', '{"a": true}', "{"):
        with pytest.raises(ClientError, match="is not a JSON object of numbers"):
            ClientEnvironment.from_environ({**env, "MELISSA_PARAMETERS": bad})
