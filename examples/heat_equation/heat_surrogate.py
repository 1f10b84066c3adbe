"""What the heat surrogate's PyTorch and TensorFlow servers (custom_server.py,
custom_server_tf.py) share: the scaling of the temperatures and the hooks that need no framework.

- process_sample: scales the temperatures with their known physical range instead of the first
  batch's statistics (the maximum principle keeps them within the range of the inputs);
- on_validation_end / on_train_end: an extra TensorBoard curve and a last log line.

Melissa puts a server file's directory on the import path, so the server files import it.
"""

from __future__ import annotations

import logging

import numpy as np

from melissa.server.learning import Sample, time_input
from melissa.server.learning.learning_server import LearningServer

log = logging.getLogger("melissa.server")

T_CENTRE, T_HALF_RANGE = 300.0, 200.0  # inputs are drawn in [100, 500] K


class HeatHooks(LearningServer):
    """Listed before the framework's server class: `class S(HeatHooks, DeepLearningServer)`."""

    def process_sample(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        nb_steps = self.config.study_options.nb_time_steps
        x = np.append(self.scaler(sample.parameters), time_input(sample.time_step, nb_steps))
        y = (sample.fields["temperature"].reshape(-1) - T_CENTRE) / T_HALF_RANGE
        return x.astype(np.float32), y.astype(np.float32)

    def on_validation_end(self, metrics: dict[str, float]) -> None:
        if "loss" in metrics:  # RMSE in kelvin: a square root of the averaged loss
            self.log_scalar("validation/rmse_kelvin", metrics["loss"] ** 0.5 * T_HALF_RANGE)

    def on_train_end(self) -> None:
        log.info("heat surrogate trained on %d simulations (validation on %d held out)",
                 len(self.simulation_parameters) - len(self.validation_ids),
                 len(self.validation_ids))
