"""The heat-equation surrogate of custom_server.py, written for TensorFlow/Keras 3
(config_dl_tf.json: dl_config.framework "tensorflow"): (6 parameters, t) -> temperature field.

    "server_config": {"server_filename": "custom_server_tf.py",
                      "server_class": "HeatSurrogateServerTF"}

The same hooks as the PyTorch version (docs/deep-learning.md), with Keras objects: the network
is a keras.Model, the steps get TensorFlow tensors; process_sample, on_validation_end and
on_train_end are heat_surrogate.py's, as in the PyTorch version. The trained model is
output_dir/checkpoints/last.keras (keras.saving.load_model); it predicts scaled values:
temperature = T_CENTRE + T_HALF_RANGE * output.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf
from heat_surrogate import T_HALF_RANGE, HeatHooks

from melissa.server.learning import TensorFlowServer


def build_network(in_features: int, out_features: int, hidden: list[int]) -> keras.Model:
    layers: list[Any] = [keras.Input((in_features,))]
    layers += [keras.layers.Dense(h, activation="silu") for h in hidden]
    layers.append(keras.layers.Dense(out_features))
    return keras.Sequential(layers, name="heat_surrogate")


class HeatSurrogateServerTF(HeatHooks, TensorFlowServer):
    def build_model(self, x: np.ndarray, y: np.ndarray) -> keras.Model:
        return build_network(x.shape[1], y.shape[1], list(self.dl.hidden_layers))

    def validation_step(self, model: keras.Model, x: np.ndarray, y: np.ndarray
                        ) -> dict[str, Any]:
        prediction = model(x, training=False)
        return {
            "loss": tf.reduce_mean(tf.square(prediction - y)),
            "mae_kelvin": tf.reduce_mean(tf.abs(prediction - y)) * T_HALF_RANGE,
        }
