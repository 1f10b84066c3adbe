"""Custom deep-learning server for the Lorenz system: (sigma, rho, beta, t) -> (x, y, z).

config_dl.json points at it ("server_config": {"server_filename": "custom_server.py",
"server_class": "LorenzServer"}). Compared with DeepLearningServer's defaults it
- feeds the network Fourier features of the time (trajectories oscillate around the attractor's
  wings, which a plain MLP of t fits slowly);
- scales each state component with the attractor's known extent instead of batch statistics;
- reports the mean absolute error of x, y and z separately.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from melissa.server.learning import DeepLearningServer, Sample, time_input

CENTRE = np.array([0.0, 0.0, 25.0], dtype=np.float32)  # the attractor lies within about
SCALE = np.array([20.0, 25.0, 25.0], dtype=np.float32)  # CENTRE +- SCALE


class LorenzNet(nn.Module):
    """MLP over (scaled parameters, sin/cos of the time at `frequencies` harmonics)."""

    def __init__(self, nb_parameters: int, hidden: list[int], frequencies: int) -> None:
        super().__init__()
        self.config = {"nb_parameters": nb_parameters, "hidden": hidden,
                       "frequencies": frequencies}
        self.register_buffer("harmonics", math.pi * torch.arange(1, frequencies + 1.0))
        layers: list[nn.Module] = []
        width = nb_parameters + 1 + 2 * frequencies
        for h in hidden:
            layers += [nn.Linear(width, h), nn.SiLU()]
            width = h
        layers.append(nn.Linear(width, 3))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x[:, -1:] * self.harmonics  # x = [parameters..., t in [0, 1]]
        return self.net(torch.cat([x, torch.sin(t), torch.cos(t)], dim=1))


def load_model(checkpoint: str | Path) -> LorenzNet:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = LorenzNet(**state["model_config"])
    model.load_state_dict(state["model"])
    return model.eval()


def predict(model: LorenzNet, scaled_inputs: np.ndarray) -> np.ndarray:
    """States (x, y, z) for rows of [scaled parameters..., scaled time]."""
    with torch.no_grad():
        out = model(torch.from_numpy(scaled_inputs.astype(np.float32))).numpy()
    return out * SCALE + CENTRE


class LorenzServer(DeepLearningServer):
    FREQUENCIES = 4

    def process_sample(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        nb_steps = self.config.study_options.nb_time_steps
        x = np.append(self.scaler(sample.parameters), time_input(sample.time_step, nb_steps))
        y = (sample.fields["state"] - CENTRE) / SCALE
        return x.astype(np.float32), y.astype(np.float32)

    def build_model(self, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
        return LorenzNet(x.shape[1] - 1, list(self.dl.hidden_layers), self.FREQUENCIES)

    def validation_step(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> dict[str, Any]:
        prediction = model(x)
        error = (prediction - y).abs().mean(dim=0) * torch.from_numpy(SCALE)
        return {"loss": F.mse_loss(prediction, y), "mae_x": error[0], "mae_y": error[1],
                "mae_z": error[2]}
