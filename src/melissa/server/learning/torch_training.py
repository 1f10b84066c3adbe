"""The PyTorch training loop (training_loop.py): model and optimizer from the first batch,
optimizer steps with gradients averaged over the server ranks, evaluation, checkpoints.

It runs in the server's training thread and calls the user's hooks on the server object
(`DeepLearningServer`): process_sample, build_model, build_optimizer, training_step,
validation_step, on_train_start, on_validation_end, on_train_end. Ranks other than 0 train and
validate but write nothing.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from melissa.atomic import atomic_write
from melissa.server.learning.torch_distributed import Group
from melissa.server.learning.training_loop import TrainingLoop

if TYPE_CHECKING:
    from melissa.server.learning.torch_server import DeepLearningServer

log = logging.getLogger("melissa.server")

Pair = tuple[np.ndarray, np.ndarray]  # (x, y) of one sample, as process_sample made it
CHECKPOINT_FORMAT = 1


class Trainer(TrainingLoop):
    def __init__(self, server: DeepLearningServer, group: Group, device: torch.device) -> None:
        super().__init__(server, writes=group.rank == 0)
        self.server: DeepLearningServer = server
        self.group = group
        self.device = device
        self.model: torch.nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.restored_training_s = 0.0  # training time before the restart

    # -- framework hooks ------------------------------------------------------------------------
    def _seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def _all_sum(self, values: Sequence[float]) -> list[float]:
        return self.group.all_sum(values)

    def _gather(self, obj: Any) -> list[Any]:
        return self.group.gather_objects(obj)

    def close(self) -> None:
        self.group.close()

    def _tensors(self, entries: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self._arrays(entries)
        return torch.from_numpy(x), torch.from_numpy(y)

    def _setup(self, batch: list[Pair]) -> None:
        """Build model and optimizer from the first batch of the lowest rank that has one."""
        src = self.group.all_min(self.group.rank if batch else self.group.size)
        example = self._tensors(batch) if batch else None
        x, y = self.group.broadcast_object(example, src)
        model = self.server.build_model(x, y).to(self.device)
        self.group.broadcast_module(model, src)  # identical starting weights on every rank
        self.model = model
        self.optimizer = self.server.build_optimizer(model)
        if self.server.restored_training is not None:
            self._restore(self.server.restored_training)
        elif self.paths.checkpoint.exists():
            self._restore(self.paths.checkpoint.read_bytes())
        # Every rank must restart from the same step, or their collectives would not match.
        steps = self.group.all_sum([self.batches, 1])
        if steps[0] != self.batches * steps[1]:
            raise RuntimeError(f"the server ranks restored checkpoints of different batches "
                               f"(this rank: {self.batches}); delete {self.paths.checkpoints} "
                               "to start the training over")
        if self.writes:
            from melissa.server.learning.tensorboard import without_tensorflow

            without_tensorflow()
            from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

            self.writer = SummaryWriter(log_dir=str(self.paths.tensorboard),
                                        purge_step=self.purge_step)
        n_params = sum(p.numel() for p in model.parameters())
        log.info("training %s (%d parameters) on %s, %d rank(s), buffer %s of %d samples",
                 type(model).__name__, n_params, self.device, self.group.size, self.dl.buffer,
                 self.dl.buffer_size)

    def _step(self, batch: list[Pair], total: int) -> float:
        assert self.model is not None and self.optimizer is not None
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss_value = 0.0
        if batch:
            x, y = self._tensors(batch)
            loss = self.server.training_step(
                self.model, x.to(self.device, non_blocking=True),
                y.to(self.device, non_blocking=True),
            )
            # Weighted by this rank's share: the summed gradient is that of the global mean.
            (loss * (len(batch) / total)).backward()
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"training loss is {loss_value} at batch {self.batches}")
            if self.server.breeding:
                self._add_fitness(batch, self._losses(x, y))
        if self.group.size > 1:
            self.group.all_reduce_gradients([p for p in self.model.parameters()
                                             if p.requires_grad])
        self.optimizer.step()
        return loss_value

    def _losses(self, x: torch.Tensor, y: torch.Tensor) -> list[float]:
        assert self.model is not None
        with torch.no_grad():
            return self.server.sample_loss(self.model, x.to(self.device),
                                           y.to(self.device)).cpu().tolist()

    def _sample_losses(self, entries: list[Any]) -> list[float]:
        return self._losses(*self._tensors(entries))

    # -- validation -----------------------------------------------------------------------------
    def _as_input(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array)

    def _stack(self, items: list[Any]) -> torch.Tensor:
        return torch.stack(items)

    @contextlib.contextmanager
    def _evaluating(self) -> Iterator[None]:
        assert self.model is not None
        self.model.eval()
        with torch.no_grad():
            yield

    def _validation_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        assert self.model is not None
        return self.server.validation_step(self.model, x.to(self.device), y.to(self.device))

    # -- checkpoints ----------------------------------------------------------------------------
    def _restore(self, saved: bytes) -> None:
        """A restarted server continues from its last checkpoint: weights, optimizer state,
        counters."""
        assert self.model is not None and self.optimizer is not None
        state = torch.load(io.BytesIO(saved), map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.restored_training_s = float(state.get("training_s", 0.0))
        self._resumed(state)

    def checkpoint(self) -> None:
        """Every rank at the same batch: rank 0 writes the model file (checkpoints/last.pt:
        model, optimizer and counters, atomically: temp file, fsync, rename; the ranks' models
        are identical), then each rank's receive loop writes its server checkpoint, which holds
        the same training state and the buffer (what a restarted server continues from)."""
        if self.model is None or self.optimizer is None:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "model_config": getattr(self.model, "config", None),
            "optimizer": self.optimizer.state_dict(),
            **self._checkpoint_info(self.restored_training_s + self.training_seconds),
            **self._fitness_state(),
        }
        blob = io.BytesIO()
        torch.save(state, blob)
        if self.writes:
            path = self.paths.checkpoint
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path, durable=True) as tmp, open(tmp, "wb") as f:
                f.write(blob.getbuffer())
        self.server.request_checkpoint(blob.getvalue())
