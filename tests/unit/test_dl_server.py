"""The deep-learning server's training side in one process (its buffer fed directly): restart
from a checkpoint, a failing user hook stopping the server with a clear error, the receive side
refusing a HELLO without parameters, and the training figures reaching melissa-monitor."""

from __future__ import annotations

import csv
import json
import time
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
    deadline = time.monotonic() + 60
    while not server.training_done(timeout=0.05):  # as the receive loop does
        server.serve_checkpoint_request()
        assert time.monotonic() < deadline
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


def test_paired_buffer_trains_on_consecutive_steps(tmp_path: Path) -> None:
    """sim_paired_reservoir: the network learns x(t), y(t) -> y(t + 1) (process_pair)."""
    server = DeepLearningServer(
        study(tmp_path, buffer="sim_paired_reservoir", drain_batches=20), StudyPaths(tmp_path),
        bytes(16))
    seen: list[int] = []
    original = server.process_pair

    def spy(earlier: Any, later: Any) -> Any:
        assert later[0][0] == earlier[0][0] + 1  # same simulation, next step
        seen.append(1)
        return original(earlier, later)

    server.process_pair = spy  # type: ignore[method-assign]
    items = (((sim, step), (np.array([step, sim], np.float32), np.full(2, sim + step, np.float32)))
             for sim in range(4) for step in range(5))
    train(server, items)
    assert server.trainer is not None and server.trainer.batches == 20
    assert server.model is not None and server.model.net[0].in_features == 4  # (x_t, y_t)
    assert seen


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_a_restarted_server_continues_with_its_buffer(tmp_path: Path, framework: str) -> None:
    """The server checkpoint (receive loop side) holds the buffer with its use flags and the
    training state: a new server restored from it goes on from the same batch and buffer."""
    from melissa.server.select import server_class

    config = study(tmp_path, buffer="reservoir", framework=framework, checkpoint_interval=3)
    paths = StudyPaths(tmp_path)
    first = server_class(config)(config, paths, bytes(16))
    train(first, pairs(20, seed=1))  # until each sample was used; the last checkpoint at the end
    kept = first.buffer.stats()
    assert first.trainer is not None and first.trainer.batches >= 5
    done = first.trainer.batches

    again = server_class(config)(config, paths, bytes(16))
    assert again.restore_checkpoint() is not None
    assert again.buffer.stats() == kept  # contents, use counts, counters
    assert again.restored_training is not None
    train(again, pairs(4, seed=2))  # 4 new samples: trained on from the restored state
    assert again.trainer is not None and again.trainer.batches > done
    assert again.buffer.stats().received == 24
    with open(paths.training_metrics, newline="") as f:
        batches = [int(float(r["batch"])) for r in csv.DictReader(f)]
    assert batches == sorted(set(batches)) and batches[-1] == again.trainer.batches, str(batches)
