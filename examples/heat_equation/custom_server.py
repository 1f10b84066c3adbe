"""A custom deep-learning server for the heat equation: (6 parameters, t) -> temperature field.

config_dl.json points at it:

    "server_config": {"server_filename": "custom_server.py", "server_class": "HeatSurrogateServer"}

What it changes from the defaults of DeepLearningServer (docs/deep-learning.md lists every hook):
- process_sample: scales the temperatures with their known physical range instead of the first
  batch's statistics (the maximum principle keeps them within the range of the inputs);
- build_model: its own network, rebuilt from the checkpoint by `load_model` below;
- validation_step: adds the mean absolute error in kelvin to the loss;
- on_validation_end / on_train_end: an extra TensorBoard curve and a last log line.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from melissa.server.learning import DeepLearningServer, Sample, time_input

log = logging.getLogger("melissa.server")

T_CENTRE, T_HALF_RANGE = 300.0, 200.0  # inputs are drawn in [100, 500] K


def build_network(in_features: int, out_features: int, hidden: list[int]) -> nn.Module:
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.SiLU()]
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def load_model(checkpoint: str | Path) -> nn.Module:
    """The trained network from output_dir/checkpoints/last.pt (it predicts scaled values:
    temperature = T_CENTRE + T_HALF_RANGE * output)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    net = build_network(**state["network"])
    net.load_state_dict(state["model"])
    return net.eval()


class HeatSurrogateServer(DeepLearningServer):
    def process_sample(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        nb_steps = self.config.study_options.nb_time_steps
        x = np.append(self.scaler(sample.parameters), time_input(sample.time_step, nb_steps))
        y = (sample.fields["temperature"].reshape(-1) - T_CENTRE) / T_HALF_RANGE
        return x.astype(np.float32), y.astype(np.float32)

    def build_model(self, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
        self.network = {"in_features": x.shape[1], "out_features": y.shape[1],
                        "hidden": list(self.dl.hidden_layers)}
        return build_network(**self.network)

    def checkpoint_extra(self) -> dict[str, Any]:
        return {"network": self.network}

    def validation_step(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> dict[str, torch.Tensor | float]:
        prediction = model(x)
        return {
            "loss": F.mse_loss(prediction, y),
            "mae_kelvin": (prediction - y).abs().mean() * T_HALF_RANGE,
        }

    def on_validation_end(self, metrics: dict[str, float]) -> None:
        if "loss" in metrics:  # RMSE in kelvin: a square root of the averaged loss
            self.log_scalar("validation/rmse_kelvin", metrics["loss"] ** 0.5 * T_HALF_RANGE)

    def on_train_end(self) -> None:
        log.info("heat surrogate trained on %d simulations (validation on %d held out)",
                 len(self.simulation_parameters) - len(self.validation_ids),
                 len(self.validation_ids))
