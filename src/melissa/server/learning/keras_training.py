"""The TensorFlow/Keras training loop: batches from the buffer, optimizer steps, validation,
metrics, TensorBoard, checkpoints; the same hooks as the PyTorch loop (torch_training.py), on
one server rank.

The state a restarted server continues from (weights, optimizer variables, counters) travels as
an .npz blob in the server checkpoint; rank 0 also writes the model file checkpoints/last.keras.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from melissa import __version__
from melissa.server.learning.metrics import MetricsLog, metrics_row, tag
from melissa.server.learning.tensorboard import ScalarWriter

if TYPE_CHECKING:
    from melissa.server.learning.tf_server import TensorFlowServer

log = logging.getLogger("melissa.server")

_WAIT_S = 0.5
_VALIDATION_BATCH = 1024


@dataclass
class _Window:
    started: float = field(default_factory=time.monotonic)
    loss_sum: float = 0.0
    samples: int = 0
    steps: int = 0


class KerasTrainer:
    def __init__(self, server: TensorFlowServer) -> None:
        self.server = server
        self.dl = server.dl
        self.paths = server.paths
        self.model: keras.Model | None = None
        self.optimizer: keras.optimizers.Optimizer | None = None
        self.batches = 0
        self.samples = 0
        self.started = time.monotonic()
        self.training_s = 0.0  # of optimizer steps, over restarts too
        self.first_step_at: float | None = None  # monotonic time of the first optimizer step
        self.last_step_at: float | None = None
        self.validation_metrics: dict[str, float] = {}
        self.status: dict[str, Any] = {}
        self.metrics = MetricsLog(self.paths.training_metrics)
        self.writer: ScalarWriter | None = None
        self._val_x: list[np.ndarray] = []
        self._val_y: list[np.ndarray] = []
        self._fitness_sums: dict[int, tuple[float, int]] = {}
        self._train_step: Any = None

    # -- loop -----------------------------------------------------------------------------------
    def run(self) -> None:
        keras.utils.set_random_seed(self.server.config.study_options.seed)
        self.server.on_train_start()
        window = _Window()
        try:
            while True:
                batch = self.server.buffer.get_batch(self.dl.batch_size, timeout=_WAIT_S)
                if not batch:
                    if self.server.buffer.exhausted:
                        break
                    continue
                if self.model is None:
                    self._setup(batch)
                started = time.monotonic()
                loss = self._step(batch)
                self.last_step_at = time.monotonic()
                self.first_step_at = self.first_step_at or started
                self.training_s += self.last_step_at - started
                self.batches += 1
                self.samples += len(batch)
                window.loss_sum += loss * len(batch)
                window.samples += len(batch)
                window.steps += 1
                if self.batches % self.dl.nb_batches_update == 0:
                    self._report(window)
                    window = _Window()
                if self.dl.checkpoint_interval and self.batches % self.dl.checkpoint_interval == 0:
                    self.checkpoint()
            if self.model is None:
                log.warning("no training sample arrived: no model trained")
            else:
                if window.steps or not self.status:  # one row per batch count
                    self._report(window)
                self.checkpoint()
                log.info("training done: %d batches, %d samples in %.1f s; validation %s",
                         self.batches, self.samples, time.monotonic() - self.started,
                         self.validation_metrics)
            self.server.on_train_end()
        finally:
            if self.writer is not None:
                self.writer.close()

    def _arrays(self, entries: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        pairs = [self.server.training_pair(e) for e in entries]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    def _setup(self, batch: list[Any]) -> None:
        x, y = self._arrays(batch)
        model = self.server.build_model(x, y)
        model(x[:1])  # builds the weights
        optimizer = self.server.build_optimizer(model)
        optimizer.build(model.trainable_variables)
        self.model, self.optimizer = model, optimizer

        @tf.function(reduce_retracing=True)
        def train_step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                loss = self.server.training_step(model, x, y)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss

        self._train_step = train_step
        if self.server.restored_training is not None:
            self._restore(self.server.restored_training)
        self.writer = ScalarWriter(self.paths.tensorboard,
                                   purge_step=self.batches + 1 if self.batches else None)
        log.info("training %s (%d parameters) with TensorFlow %s on the CPU, buffer %s of %d "
                 "samples", type(model).__name__, model.count_params(), tf.__version__,
                 self.dl.buffer, self.dl.buffer_size)

    def _step(self, batch: list[Any]) -> float:
        x, y = self._arrays(batch)
        if self.server.breeding:
            self._add_fitness(batch, x, y)
        loss = float(self._train_step(tf.constant(x), tf.constant(y)))
        if not math.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss} at batch {self.batches}")
        return loss

    def _add_fitness(self, batch: list[Any], x: np.ndarray, y: np.ndarray) -> None:
        assert self.model is not None
        losses = np.asarray(self.server.sample_loss(self.model, x, y)).tolist()
        for entry, value in zip(batch, losses, strict=True):
            total, count = self._fitness_sums.get(int(entry[2]), (0.0, 0))
            self._fitness_sums[int(entry[2])] = (total + value, count + 1)

    # -- validation and reports -----------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        assert self.model is not None
        for entry in self.server.validation.since(len(self._val_x)):
            x, y = self.server.training_pair(entry)
            self._val_x.append(x)
            self._val_y.append(y)
        sums: dict[str, float] = {}
        count = len(self._val_x)
        for start in range(0, count, _VALIDATION_BATCH):
            x = np.stack(self._val_x[start : start + _VALIDATION_BATCH])
            y = np.stack(self._val_y[start : start + _VALIDATION_BATCH])
            for key, value in self.server.validation_step(self.model, x, y).items():
                sums[key] = sums.get(key, 0.0) + float(value) * len(x)
        return {k: v / count for k, v in sums.items()} if count else {}

    def _report(self, window: _Window) -> None:
        metrics = self.validate()
        self.validation_metrics = metrics
        if self._fitness_sums:
            self.server.record_fitness({s: t / n for s, (t, n) in self._fitness_sums.items()})
            self._fitness_sums = {}
        now = time.monotonic()
        row = metrics_row(self.batches, self.samples, now - self.started, window.loss_sum,
                          window.samples, now - window.started, self.server.buffer.stats(),
                          len(self.server.validation), metrics)
        self.status = row
        self.server.on_validation_end(metrics)
        self.metrics.append(row)
        assert self.writer is not None
        for key, value in row.items():
            if key not in ("batch", "wall_s") and math.isfinite(value):
                self.writer.add_scalar(tag(key), value, self.batches)
        self.writer.flush()
        log.info("batch %d: loss %.4g, validation %s, %.0f samples/s", self.batches,
                 row["loss"], metrics, row["samples_per_s"])

    @property
    def training_seconds(self) -> float:
        """From the first optimizer step to the latest one (as the PyTorch trainer's)."""
        if self.first_step_at is None or self.last_step_at is None:
            return 0.0
        return self.last_step_at - self.first_step_at

    def log_scalar(self, name: str, value: float) -> None:
        if self.writer is not None:
            self.writer.add_scalar(name, value, self.batches)

    # -- checkpoints ----------------------------------------------------------------------------
    def _state(self) -> bytes:
        assert self.model is not None and self.optimizer is not None
        counters = {"batches": self.batches, "samples": self.samples,
                    "training_s": self.training_s, "validation": self.validation_metrics}
        arrays = {f"weight{i}": w for i, w in enumerate(self.model.get_weights())}
        arrays |= {f"optimizer{i}": np.asarray(v) for i, v in enumerate(self.optimizer.variables)}
        blob = io.BytesIO()
        np.savez(blob, counters=np.frombuffer(json.dumps(counters).encode(), np.uint8), **arrays)
        return blob.getvalue()

    def _restore(self, saved: bytes) -> None:
        assert self.model is not None and self.optimizer is not None
        with np.load(io.BytesIO(saved)) as data:
            counters = json.loads(data["counters"].tobytes())
            self.model.set_weights([data[f"weight{i}"]
                                    for i in range(len(self.model.get_weights()))])
            for i, variable in enumerate(self.optimizer.variables):
                variable.assign(data[f"optimizer{i}"])
        self.batches, self.samples = int(counters["batches"]), int(counters["samples"])
        self.training_s = float(counters["training_s"])
        self.validation_metrics = dict(counters["validation"])
        self.metrics.resume(self.batches)
        log.info("resumed from checkpoint: batch %d, %d samples trained", self.batches,
                 self.samples)

    def checkpoint(self) -> None:
        """The model file checkpoints/last.keras (with last.json: counters, validation, the
        study's names), then the server checkpoint a restarted server continues from."""
        assert self.model is not None
        path = self.paths.checkpoints / "last.keras"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name("last.tmp.keras")
        self.model.save(tmp)
        os.replace(tmp, path)
        info = {"melissa_version": __version__, "batches": self.batches, "samples": self.samples,
                "training_s": self.training_s, "validation": self.validation_metrics,
                "parameter_names": self.server.parameter_names,
                "field_names": list(self.server.config.study_options.field_names),
                "dl_config": self.dl.model_dump(mode="json"), **self.server.checkpoint_extra()}
        json_tmp = path.with_name("last.json.tmp")
        json_tmp.write_text(json.dumps(info, indent=2))
        os.replace(json_tmp, path.with_name("last.json"))
        self.server.request_checkpoint(self._state())
