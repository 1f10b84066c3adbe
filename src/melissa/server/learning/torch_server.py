"""`DeepLearningServer`: online training of a PyTorch surrogate while the simulations run.

Subclass it in your own `custom_server.py` (server_config.server_filename / server_class) and
override the hooks you need (those that need no framework are in learning_server.py); every hook
has a working default, so a study with only a dl_config trains an MLP from (scaled parameters,
scaled time step) to the flattened fields.
`process_sample` runs once per sample in the receive loop (the buffer keeps its (x, y)); the other
hooks run in the training thread. See docs/deep-learning.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from melissa.errors import ConfigError
from melissa.server.learning.learning_server import LearningServer
from melissa.server.learning.torch_distributed import group_from_comm, store_host
from melissa.server.learning.torch_models import SurrogateMLP
from melissa.server.learning.torch_training import Trainer


class DeepLearningServer(LearningServer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.device = _device(self.dl.device, self.rank)

    # -- hooks: override what your surrogate needs (and those of LearningServer) ----------------
    def build_model(self, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
        """The network, given a first batch (x, y) on the CPU. Default: an MLP with
        dl_config.hidden_layers whose output scale is the first batch's mean and std."""
        return SurrogateMLP(x.shape[1], y.shape[1], self.dl.hidden_layers,
                            float(y.mean()), float(y.std()))

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """Default: Adam with dl_config.learning_rate."""
        return torch.optim.Adam(model.parameters(), lr=self.dl.learning_rate)

    def training_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss of one batch (the framework does backward, gradient averaging over ranks and
        the optimizer step). Default: mean squared error."""
        return F.mse_loss(model(x), y)

    def sample_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Active sampling (sampling.method "breed"): the loss of each sample of a training batch,
        shape (batch,), before the batch's update; a simulation's fitness is the mean over its
        samples of their loss at the first batch that trained on them. Default: each sample's
        mean squared error."""
        return ((model(x) - y) ** 2).flatten(1).mean(1)

    def validation_step(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> dict[str, torch.Tensor | float]:
        """Metrics of one validation batch, each a mean over its samples (the framework averages
        them over all held-out samples, logged as validation/<name>). Default: the loss."""
        return {"loss": F.mse_loss(model(x), y)}

    # -- the training thread --------------------------------------------------------------------
    def start_training(self) -> None:
        # The first optimizer imports torch._dynamo (~2 s of CPU): done before the server
        # listens, so that training starts as soon as the first batch is there.
        import torch._dynamo

        if self.dl.cpu_threads is not None:
            torch.set_num_threads(self.dl.cpu_threads)

        # Collective over the server's MPI ranks: here, in the thread that makes the MPI calls.
        server = self.config.server_config
        group = group_from_comm(self.comm, store_host(server.bind_address, server.interface),
                                self.device)
        self._start_thread(Trainer(self, group, self.device))

    def training_results(self) -> list[Path]:
        candidates = [self.paths.checkpoint, self.paths.training_metrics]
        return [p for p in candidates if p.exists()] if self.rank == 0 else []


def _device(setting: str, rank: int) -> torch.device:
    available = torch.cuda.is_available()
    if setting == "cuda" and not available:
        raise ConfigError("dl_config.device is \"cuda\" but torch sees no GPU here: use "
                          "\"auto\" or \"cpu\"")
    if setting == "cpu" or not available:
        return torch.device("cpu")
    return torch.device("cuda", rank % torch.cuda.device_count())
