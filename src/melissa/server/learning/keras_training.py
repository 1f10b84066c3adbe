"""The TensorFlow/Keras training loop (training_loop.py, the same hooks as the PyTorch loop),
on one server rank: the model from the first batch, a tf.function optimizer step, checkpoints.

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
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from melissa.server.learning.tensorboard import ScalarWriter
from melissa.server.learning.training_loop import TrainingLoop

if TYPE_CHECKING:
    from melissa.server.learning.tf_server import TensorFlowServer

log = logging.getLogger("melissa.server")


class KerasTrainer(TrainingLoop):
    def __init__(self, server: TensorFlowServer) -> None:
        super().__init__(server)
        self.server: TensorFlowServer = server
        self.model: keras.Model | None = None
        self.optimizer: keras.optimizers.Optimizer | None = None
        self.training_s = 0.0  # of optimizer steps, over restarts too
        self._train_step: Any = None

    # -- framework hooks ------------------------------------------------------------------------
    def _seed(self, seed: int) -> None:
        keras.utils.set_random_seed(seed)

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
        self.writer = ScalarWriter(self.paths.tensorboard, purge_step=self.purge_step)
        log.info("training %s (%d parameters) with TensorFlow %s on the CPU, buffer %s of %d "
                 "samples", type(model).__name__, model.count_params(), tf.__version__,
                 self.dl.buffer, self.dl.buffer_size)

    def _step(self, batch: list[Any], total: int) -> float:
        started = time.monotonic()
        x, y = self._arrays(batch)
        if self.server.breeding:
            self._add_fitness(batch, self._losses(x, y))
        loss = float(self._train_step(tf.constant(x), tf.constant(y)))
        if not math.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss} at batch {self.batches}")
        self.training_s += time.monotonic() - started
        return loss

    def _losses(self, x: np.ndarray, y: np.ndarray) -> list[float]:
        assert self.model is not None
        return [float(v) for v in np.asarray(self.server.sample_loss(self.model, x, y))]

    def _sample_losses(self, entries: list[Any]) -> list[float]:
        return self._losses(*self._arrays(entries))

    # -- checkpoints ----------------------------------------------------------------------------
    def _state(self) -> bytes:
        assert self.model is not None and self.optimizer is not None
        counters = {"batches": self.batches, "samples": self.samples,
                    "training_s": self.training_s, "validation": self.validation_metrics,
                    **self._fitness_state()}
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
        self.training_s = float(counters["training_s"])
        self._resumed(counters)

    def checkpoint(self) -> None:
        """The model file checkpoints/last.keras (with last.json: counters, validation, the
        study's names), then the server checkpoint a restarted server continues from."""
        assert self.model is not None
        path = self.paths.checkpoints / "last.keras"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name("last.tmp.keras")
        self.model.save(tmp)
        os.replace(tmp, path)
        json_tmp = path.with_name("last.json.tmp")
        json_tmp.write_text(json.dumps(self._checkpoint_info(self.training_s), indent=2))
        os.replace(json_tmp, path.with_name("last.json"))
        self.server.request_checkpoint(self._state())
