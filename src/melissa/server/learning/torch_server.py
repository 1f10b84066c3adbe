"""`DeepLearningServer`: online training of a PyTorch surrogate while the simulations run.

Subclass it in your own `custom_server.py` (server_config.server_filename / server_class) and
override the hooks you need; every hook has a working default, so a study with only a dl_config
trains an MLP from (scaled parameters, scaled time step) to the flattened fields.
`process_sample` runs once per sample in the receive loop (the buffer keeps its (x, y)); the other
hooks run in the training thread. See docs/deep-learning.md.
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from melissa.errors import ConfigError
from melissa.server.learning.receiver import StreamingServer
from melissa.server.learning.samples import ParameterScaler, Sample, time_input
from melissa.server.learning.torch_distributed import group_from_comm, store_host
from melissa.server.learning.torch_models import SurrogateMLP
from melissa.server.learning.torch_training import Trainer

log = logging.getLogger("melissa.server")


class DeepLearningServer(StreamingServer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.device = _device(self.dl.device, self.rank)
        self.scaler = ParameterScaler(self.config.parameters)
        self.trainer: Trainer | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # -- hooks: override what your surrogate needs ----------------------------------------------
    def process_sample(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        """(input, target) of one sample, called once per sample as it arrives (in the receive
        loop; the buffer keeps the pair). Default: x = scaled parameters and time step in
        [0, 1], y = every field flattened and concatenated, both float32."""
        x = np.append(
            self.scaler(sample.parameters),
            time_input(sample.time_step, self.config.study_options.nb_time_steps),
        )
        y = np.concatenate([sample.fields[name].reshape(-1) for name in sample.fields])
        return x.astype(np.float32), y.astype(np.float32, copy=False)

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

    def validation_step(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> dict[str, torch.Tensor | float]:
        """Metrics of one validation batch, each a mean over its samples (the framework averages
        them over all held-out samples, logged as validation/<name>). Default: the loss."""
        return {"loss": F.mse_loss(model(x), y)}

    def on_train_start(self) -> None:
        """The training thread started (no model yet: it is built from the first batch)."""

    def on_validation_end(self, metrics: dict[str, float]) -> None:
        """A validation ended (every nb_batches_update batches, and at the end)."""

    def on_train_end(self) -> None:
        """Training ended; the final checkpoint is written."""

    def checkpoint_extra(self) -> dict[str, Any]:
        """More entries for the checkpoint (tensors, numbers, strings, lists, dicts)."""
        return {}

    # -- framework ------------------------------------------------------------------------------
    def encode_sample(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        """process_sample, once per sample in the receive loop: the buffer keeps (x, y)."""
        x, y = self.process_sample(sample)
        return np.ascontiguousarray(x), np.ascontiguousarray(y)

    # -- helpers for hooks ----------------------------------------------------------------------
    @property
    def model(self) -> nn.Module | None:
        return self.trainer.model if self.trainer else None

    def log_scalar(self, name: str, value: float) -> None:
        """Add a TensorBoard scalar at the current batch (rank 0 writes)."""
        if self.trainer is not None:
            self.trainer.log_scalar(name, value)

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
        self.trainer = Trainer(self, group, self.device)
        self._thread = threading.Thread(
            target=self._train, args=(self.trainer,), name="melissa-training", daemon=True
        )
        self._thread.start()

    def _train(self, trainer: Trainer) -> None:
        try:
            trainer.run()
        except BaseException as exc:
            log.exception("the training loop failed")
            self._error = exc
            self.buffer.abort()  # the receive loop must not block on a buffer nobody drains
        finally:
            trainer.group.close()

    def training_done(self, timeout: float) -> bool:
        assert self._thread is not None
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def training_error(self) -> BaseException | None:
        return self._error

    def training_results(self) -> list[Path]:
        candidates = [self.paths.checkpoint, self.paths.training_metrics]
        return [p for p in candidates if p.exists()] if self.rank == 0 else []

    def training_status(self) -> dict[str, Any]:
        status = self.trainer.status if self.trainer else {}
        return {k: v for k, v in status.items() if math.isfinite(v)}  # JSON has no NaN


def _device(setting: str, rank: int) -> torch.device:
    available = torch.cuda.is_available()
    if setting == "cuda" and not available:
        raise ConfigError("dl_config.device is \"cuda\" but torch sees no GPU here: use "
                          "\"auto\" or \"cpu\"")
    if setting == "cpu" or not available:
        return torch.device("cpu")
    return torch.device("cuda", rank % torch.cuda.device_count())
