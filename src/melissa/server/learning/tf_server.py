"""`TensorFlowServer`: online training of a Keras 3 surrogate (TensorFlow backend) while the
simulations run; `dl_config.framework: "tensorflow"`.

The same hooks as the PyTorch `DeepLearningServer` (docs/deep-learning.md), with Keras objects:
`build_model` returns a `keras.Model`, `build_optimizer` a Keras optimizer, `training_step`,
`validation_step` and `sample_loss` get the model and NumPy/TensorFlow batches. The same buffers,
validation, metrics, TensorBoard curves and checkpoints (the model file is
checkpoints/last.keras). One server rank, on the CPU (the tensorflow-cpu wheel). Only this module
and keras_training.py import TensorFlow.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no banner of CPU instructions in server.log

import keras
import numpy as np
import tensorflow as tf

from melissa.errors import ConfigError
from melissa.server.learning.keras_training import KerasTrainer
from melissa.server.learning.receiver import StreamingServer
from melissa.server.learning.samples import ParameterScaler, Sample, time_input

log = logging.getLogger("melissa.server")


def surrogate_mlp(in_features: int, out_features: int, hidden: list[int], mean: float = 0.0,
                  std: float = 1.0) -> keras.Model:
    """The default network: y = mean + std * MLP(x), SiLU hidden layers."""
    layers: list[Any] = [keras.Input((in_features,))]
    layers += [keras.layers.Dense(h, activation="silu") for h in hidden]
    layers += [keras.layers.Dense(out_features),
               keras.layers.Rescaling(scale=std if std > 0 else 1.0, offset=mean)]
    return keras.Sequential(layers, name="surrogate_mlp")


class TensorFlowServer(StreamingServer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.ranks > 1:
            raise ConfigError('dl_config.framework "tensorflow" trains on one server rank: set '
                              'server_config.ranks to 1 (several ranks: framework "torch")')
        if self.dl.device == "cuda":
            raise ConfigError('dl_config.device "cuda" with framework "tensorflow": the '
                              "tensorflow-cpu wheel trains on the CPU; use \"auto\" or \"cpu\"")
        self.scaler = ParameterScaler(self.config.parameters)
        self.trainer: KerasTrainer | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # -- hooks: override what your surrogate needs ----------------------------------------------
    def process_sample(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        """(input, target) of one sample, once as it arrives. Default: x = scaled parameters and
        time step in [0, 1], y = every field flattened and concatenated, both float32."""
        x = np.append(self.scaler(sample.parameters),
                      time_input(sample.time_step, self.config.study_options.nb_time_steps))
        y = np.concatenate([sample.fields[name].reshape(-1) for name in sample.fields])
        return x.astype(np.float32), y.astype(np.float32, copy=False)

    def process_pair(
        self, earlier: tuple[np.ndarray, np.ndarray], later: tuple[np.ndarray, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """sim_paired_reservoir: (x, y) of steps t and t + 1. Default: x = (x_t, y_t),
        y = y_t+1."""
        return np.concatenate([earlier[0], earlier[1]]), later[1]

    def build_model(self, x: np.ndarray, y: np.ndarray) -> keras.Model:
        """The network, given a first batch. Default: an MLP with dl_config.hidden_layers whose
        output scale is the first batch's mean and std."""
        return surrogate_mlp(x.shape[1], y.shape[1], self.dl.hidden_layers, float(y.mean()),
                             float(y.std()))

    def build_optimizer(self, model: keras.Model) -> keras.optimizers.Optimizer:
        """Default: Adam with dl_config.learning_rate."""
        return keras.optimizers.Adam(learning_rate=self.dl.learning_rate)

    def training_step(self, model: keras.Model, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """The mean loss of one batch (traced by tf.function; the framework takes the gradient
        and applies the optimizer). Default: mean squared error."""
        return tf.reduce_mean(tf.square(model(x, training=True) - y))

    def validation_step(self, model: keras.Model, x: np.ndarray, y: np.ndarray
                        ) -> dict[str, Any]:
        """Batch means of per-sample metrics on held-out samples. Default: the loss."""
        return {"loss": tf.reduce_mean(tf.square(model(x, training=False) - y))}

    def sample_loss(self, model: keras.Model, x: np.ndarray, y: np.ndarray) -> Any:
        """Active sampling: each sample's loss, shape (batch,). Default: mean squared error."""
        error = tf.square(model(x, training=False) - y)
        return tf.reduce_mean(tf.reshape(error, (tf.shape(error)[0], -1)), axis=1)

    def on_train_start(self) -> None:
        """The training thread started (no model yet: it is built from the first batch)."""

    def on_validation_end(self, metrics: dict[str, float]) -> None:
        """A validation ended (every nb_batches_update batches, and at the end)."""

    def on_train_end(self) -> None:
        """Training ended; the final checkpoint is written."""

    def checkpoint_extra(self) -> dict[str, Any]:
        """More entries for checkpoints/last.json (JSON values)."""
        return {}

    # -- framework ------------------------------------------------------------------------------
    def encode_sample(self, sample: Sample) -> tuple[np.ndarray, ...]:
        x, y = self.process_sample(sample)
        pair = np.ascontiguousarray(x), np.ascontiguousarray(y)
        return (*pair, np.array(sample.simulation_id)) if self.breeding else pair

    def training_pair(self, entry: Any) -> tuple[np.ndarray, np.ndarray]:
        return self.process_pair(*entry) if self.paired else (entry[0], entry[1])

    @property
    def model(self) -> keras.Model | None:
        return self.trainer.model if self.trainer else None

    def log_scalar(self, name: str, value: float) -> None:
        """Add a TensorBoard scalar at the current batch."""
        if self.trainer is not None:
            self.trainer.log_scalar(name, value)

    def start_training(self) -> None:
        if self.dl.cpu_threads is not None:
            tf.config.threading.set_intra_op_parallelism_threads(self.dl.cpu_threads)
            tf.config.threading.set_inter_op_parallelism_threads(self.dl.cpu_threads)
        self.trainer = KerasTrainer(self)
        self._thread = threading.Thread(target=self._train, args=(self.trainer,),
                                        name="melissa-training", daemon=True)
        self._thread.start()

    def _train(self, trainer: KerasTrainer) -> None:
        try:
            trainer.run()
        except BaseException as exc:
            log.exception("the training loop failed")
            self._error = exc
            self.buffer.abort()

    def training_done(self, timeout: float) -> bool:
        assert self._thread is not None
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def training_error(self) -> BaseException | None:
        return self._error

    def training_results(self) -> list[Path]:
        candidates = [self.paths.checkpoints / "last.keras", self.paths.training_metrics]
        return [p for p in candidates if p.exists()]

    def training_status(self) -> dict[str, Any]:
        status = self.trainer.status if self.trainer else {}
        return {k: v for k, v in status.items() if math.isfinite(v)}
