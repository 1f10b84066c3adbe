"""A custom deep-learning server for the heat equation: (6 parameters, t) -> temperature field.

config_dl.json points at it:

    "server_config": {"server_filename": "custom_server.py", "server_class": "HeatSurrogateServer"}

What it changes from the defaults of DeepLearningServer (docs/deep-learning.md lists every hook):
- build_model: its own network, rebuilt from the checkpoint by `load_model` below;
- validation_step: adds the mean absolute error in kelvin to the loss;
- process_sample, on_validation_end, on_train_end: from heat_surrogate.py (the same in the
  TensorFlow version, custom_server_tf.py): temperatures scaled with their physical range, an
  extra TensorBoard curve and a last log line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from heat_surrogate import T_CENTRE, T_HALF_RANGE, HeatHooks
from torch import nn

from melissa.server.learning import DeepLearningServer

__all__ = ["T_CENTRE", "T_HALF_RANGE", "HeatSurrogateServer", "build_network", "load_model"]


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


class HeatSurrogateServer(HeatHooks, DeepLearningServer):
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
