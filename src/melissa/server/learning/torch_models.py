"""The default surrogate: an MLP from (scaled parameters, scaled time) to the flattened fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn


class SurrogateMLP(nn.Module):
    """y = mean + std * mlp(x): the output scale is fixed from the first batch, so the network
    itself works on numbers of order one whatever the units of the fields."""

    def __init__(
        self, in_features: int, out_features: int, hidden: list[int], mean: float = 0.0,
        std: float = 1.0,
    ) -> None:
        super().__init__()
        # What rebuilds this model from a checkpoint (load_surrogate).
        self.config: dict[str, Any] = {
            "in_features": in_features, "out_features": out_features, "hidden": list(hidden),
        }
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.SiLU()]
            width = h
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std) if std > 0 else 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mean + self.std * self.net(x)


def load_surrogate(checkpoint: str | Path, map_location: str = "cpu") -> SurrogateMLP:
    """The default model of a finished (or running) study, from output_dir/checkpoints/last.pt."""
    state = torch.load(checkpoint, map_location=map_location, weights_only=True)
    config = state.get("model_config")
    if not config:
        raise ValueError(
            f"{checkpoint} holds a custom model (no model_config): rebuild it with your own "
            "class, then load_state_dict(torch.load(...)['model'])"
        )
    model = SurrogateMLP(config["in_features"], config["out_features"], config["hidden"])
    model.load_state_dict(state["model"])
    return model.eval()
