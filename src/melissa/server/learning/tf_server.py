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

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no banner of CPU instructions in server.log

import keras
import numpy as np
import tensorflow as tf

from melissa.errors import ConfigError
from melissa.server.learning.keras_training import KerasTrainer
from melissa.server.learning.learning_server import LearningServer


def surrogate_mlp(in_features: int, out_features: int, hidden: list[int], mean: float = 0.0,
                  std: float = 1.0) -> keras.Model:
    """The default network: y = mean + std * MLP(x), SiLU hidden layers."""
    layers: list[Any] = [keras.Input((in_features,))]
    layers += [keras.layers.Dense(h, activation="silu") for h in hidden]
    layers += [keras.layers.Dense(out_features),
               keras.layers.Rescaling(scale=std if std > 0 else 1.0, offset=mean)]
    return keras.Sequential(layers, name="surrogate_mlp")


class TensorFlowServer(LearningServer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.ranks > 1:
            raise ConfigError('dl_config.framework "tensorflow" trains on one server rank: set '
                              'server_config.ranks to 1 (several ranks: framework "torch")')
        if self.dl.device == "cuda":
            raise ConfigError('dl_config.device "cuda" with framework "tensorflow": the '
                              "tensorflow-cpu wheel trains on the CPU; use \"auto\" or \"cpu\"")

    # -- hooks: override what your surrogate needs (and those of LearningServer) ----------------
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

    # -- the training thread --------------------------------------------------------------------
    def start_training(self) -> None:
        if self.dl.cpu_threads is not None:
            tf.config.threading.set_intra_op_parallelism_threads(self.dl.cpu_threads)
            tf.config.threading.set_inter_op_parallelism_threads(self.dl.cpu_threads)
        self._start_thread(KerasTrainer(self))

    def training_results(self) -> list[Path]:
        candidates = [self.paths.checkpoints / "last.keras", self.paths.training_metrics]
        return [p for p in candidates if p.exists()]
