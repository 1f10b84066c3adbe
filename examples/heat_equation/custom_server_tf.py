"""The heat-equation surrogate of custom_server.py, written for TensorFlow/Keras 3
(config_dl_tf.json: dl_config.framework "tensorflow"): (6 parameters, t) -> temperature field.

    "server_config": {"server_filename": "custom_server_tf.py",
                      "server_class": "HeatSurrogateServerTF"}

The same hooks as the PyTorch version (docs/deep-learning.md), with Keras objects: the network
is a keras.Model, the steps get TensorFlow tensors. The trained model is
output_dir/checkpoints/last.keras (keras.saving.load_model); it predicts scaled values:
temperature = T_CENTRE + T_HALF_RANGE * output.
"""

from __future__ import annotations

import logging
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from melissa.server.learning import Sample, TensorFlowServer, time_input

log = logging.getLogger("melissa.server")

T_CENTRE, T_HALF_RANGE = 300.0, 200.0  # inputs are drawn in [100, 500] K


def build_network(in_features: int, out_features: int, hidden: list[int]) -> keras.Model:
    layers: list[Any] = [keras.Input((in_features,))]
    layers += [keras.layers.Dense(h, activation="silu") for h in hidden]
    layers.append(keras.layers.Dense(out_features))
    return keras.Sequential(layers, name="heat_surrogate")


class HeatSurrogateServerTF(TensorFlowServer):
    def process_sample(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        nb_steps = self.config.study_options.nb_time_steps
        x = np.append(self.scaler(sample.parameters), time_input(sample.time_step, nb_steps))
        y = (sample.fields["temperature"].reshape(-1) - T_CENTRE) / T_HALF_RANGE
        return x.astype(np.float32), y.astype(np.float32)

    def build_model(self, x: np.ndarray, y: np.ndarray) -> keras.Model:
        return build_network(x.shape[1], y.shape[1], list(self.dl.hidden_layers))

    def validation_step(self, model: keras.Model, x: np.ndarray, y: np.ndarray
                        ) -> dict[str, Any]:
        prediction = model(x, training=False)
        return {
            "loss": tf.reduce_mean(tf.square(prediction - y)),
            "mae_kelvin": tf.reduce_mean(tf.abs(prediction - y)) * T_HALF_RANGE,
        }

    def on_validation_end(self, metrics: dict[str, float]) -> None:
        if "loss" in metrics:  # RMSE in kelvin: a square root of the averaged loss
            self.log_scalar("validation/rmse_kelvin", metrics["loss"] ** 0.5 * T_HALF_RANGE)

    def on_train_end(self) -> None:
        log.info("heat surrogate trained on %d simulations (validation on %d held out)",
                 len(self.simulation_parameters) - len(self.validation_ids),
                 len(self.validation_ids))
