"""The training loop: batches from the buffer, optimizer steps, validation, logs, checkpoints.

It runs in the server's training thread and calls the user's hooks on the server object
(`DeepLearningServer`): process_sample, build_model, build_optimizer, training_step,
validation_step, on_train_start, on_validation_end, on_train_end. Ranks other than 0 train and
validate but write nothing.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from melissa import __version__
from melissa.atomic import atomic_write
from melissa.server.learning.buffers import BufferStats
from melissa.server.learning.metrics import MetricsLog, metrics_row, tag
from melissa.server.learning.torch_distributed import Group

if TYPE_CHECKING:
    from melissa.server.learning.torch_server import DeepLearningServer

log = logging.getLogger("melissa.server")

_WAIT_S = 0.5  # longest wait for a batch before the ranks compare notes
_VALIDATION_BATCH = 1024
Pair = tuple[np.ndarray, np.ndarray]  # (x, y) of one sample, as process_sample made it
CHECKPOINT_FORMAT = 1


@dataclass
class _Window:
    """Training figures since the last report."""

    started: float = field(default_factory=time.monotonic)
    loss_sum: float = 0.0  # sum over samples of this rank
    samples: int = 0  # of this rank
    steps: int = 0  # optimizer steps, the same on every rank (unlike samples)


class Trainer:
    def __init__(self, server: DeepLearningServer, group: Group, device: torch.device) -> None:
        self.server = server
        self.dl = server.dl
        self.group = group
        self.device = device
        self.paths = server.paths
        self.writes = group.rank == 0
        self.model: torch.nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.batches = 0
        self.samples = 0  # trained on, all ranks
        self.started = time.monotonic()
        self.restored_training_s = 0.0  # training time before the restart
        self.first_step_at: float | None = None  # monotonic time of the first optimizer step
        self.last_step_at: float | None = None
        self.validation_metrics: dict[str, float] = {}
        self.status: dict[str, Any] = {}
        # Active sampling: per-sample training loss by simulation since the last report.
        self._fitness_sums: dict[int, tuple[float, int]] = {}
        self._val_x: list[torch.Tensor] = []
        self._val_y: list[torch.Tensor] = []
        self.metrics = MetricsLog(self.paths.training_metrics) if self.writes else None
        self.writer: Any = None  # made once the counters are known (_setup)

    # -- loop -----------------------------------------------------------------------------------
    def run(self) -> None:
        torch.manual_seed(self.server.config.study_options.seed)
        self.server.on_train_start()
        window = _Window()
        try:
            while True:
                # Every rank joins this sum at least every _WAIT_S, batch or not: a rank that
                # waited for its own data here would stall the others' training, so their
                # full buffers would block their clients and reception could never end.
                batch = self.server.buffer.get_batch(self.dl.batch_size, timeout=_WAIT_S)
                receiving = 0 if self.server.buffer.exhausted else 1
                total, active = (int(v) for v in self.group.all_sum([len(batch), receiving]))
                if total == 0:
                    if active == 0:
                        break  # every rank's buffer is exhausted: all stop at the same step
                    continue  # no rank has a batch yet
                if self.model is None:
                    self._setup(batch)
                    self.first_step_at = time.monotonic()
                loss = self._step(batch, total)
                self.last_step_at = time.monotonic()
                self.batches += 1
                self.samples += total
                window.loss_sum += loss * len(batch)
                window.samples += len(batch)
                window.steps += 1
                if self.batches % self.dl.nb_batches_update == 0:
                    self._report(window)
                    window = _Window()
                if self.dl.checkpoint_interval and self.batches % self.dl.checkpoint_interval == 0:
                    self.checkpoint()
            if self.model is None:
                log.warning("no training sample arrived: no model trained")
            else:
                # Collective: decided on what every rank shares, never on this rank's samples.
                if window.steps or not self.status:  # one row per batch count
                    self._report(window)
                self.checkpoint()
                log.info("training done: %d batches, %d samples in %.1f s; validation %s",
                         self.batches, self.samples, time.monotonic() - self.started,
                         self.validation_metrics)
            self.server.on_train_end()
        finally:
            if self.writer is not None:
                self.writer.close()

    def _tensors(self, entries: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.server.training_pair(e) for e in entries]
        x = torch.from_numpy(np.stack([p[0] for p in pairs]))
        y = torch.from_numpy(np.stack([p[1] for p in pairs]))
        return x, y

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

            # A restart hides what the crashed run logged after its checkpoint: one curve.
            self.writer = SummaryWriter(log_dir=str(self.paths.tensorboard),
                                        purge_step=self.batches + 1 if self.batches else None)
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
                self._add_fitness(batch, x, y)
        if self.group.size > 1:
            self.group.all_reduce_gradients([p for p in self.model.parameters()
                                             if p.requires_grad])
        self.optimizer.step()
        return loss_value

    def _add_fitness(self, batch: list[Any], x: torch.Tensor, y: torch.Tensor) -> None:
        """Active sampling: each sample's loss (sample_loss, before this step's update), summed
        by simulation; its mean over a report window is the simulation's fitness."""
        assert self.model is not None
        with torch.no_grad():
            losses = self.server.sample_loss(self.model, x.to(self.device),
                                             y.to(self.device)).cpu().tolist()
        for entry, value in zip(batch, losses, strict=True):
            sim = int(entry[2])
            total, count = self._fitness_sums.get(sim, (0.0, 0))
            self._fitness_sums[sim] = (total + value, count + 1)

    # -- validation and reports -----------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """Mean of each validation_step metric over every held-out sample of every rank."""
        assert self.model is not None
        for entry in self.server.validation.since(len(self._val_x)):
            x_np, y_np = self.server.training_pair(entry)
            self._val_x.append(torch.from_numpy(x_np))
            self._val_y.append(torch.from_numpy(y_np))
        sums: dict[str, float] = {}
        count = len(self._val_x)
        if count:
            self.model.eval()
            with torch.no_grad():
                for start in range(0, count, _VALIDATION_BATCH):
                    x = torch.stack(self._val_x[start : start + _VALIDATION_BATCH])
                    y = torch.stack(self._val_y[start : start + _VALIDATION_BATCH])
                    metrics = self.server.validation_step(
                        self.model, x.to(self.device), y.to(self.device)
                    )
                    for key, value in metrics.items():
                        sums[key] = sums.get(key, 0.0) + float(value) * len(x)
        gathered = self.group.gather_objects((sums, count))
        n = sum(c for _, c in gathered)
        totals: dict[str, float] = {}
        for rank_sums, _ in gathered:
            for key, value in rank_sums.items():
                totals[key] = totals.get(key, 0.0) + value
        return {k: v / n for k, v in totals.items()} if n else {}

    def _report(self, window: _Window) -> None:
        """Validate, then log the window's figures (all ranks summed) on rank 0."""
        stats = self.server.buffer.stats()
        sums = self.group.all_sum([
            window.loss_sum, window.samples, stats.size, stats.capacity, stats.received,
            stats.evicted, stats.evicted_unused, stats.served, stats.distinct_served,
            len(self.server.validation),
        ])
        loss_sum, samples = sums[0], sums[1]
        total = BufferStats(
            capacity=int(sums[3]), size=int(sums[2]), received=int(sums[4]),
            evicted=int(sums[5]), evicted_unused=int(sums[6]), served=int(sums[7]),
            distinct_served=int(sums[8]),
        )
        metrics = self.validate()
        self.validation_metrics = metrics
        if self._fitness_sums:
            self.server.record_fitness({s: t / n for s, (t, n) in self._fitness_sums.items()})
            self._fitness_sums = {}
        now = time.monotonic()
        row = metrics_row(self.batches, self.samples, now - self.started, loss_sum, samples,
                          now - window.started, total, int(sums[9]), metrics)
        self.status = row
        self.server.on_validation_end(metrics)
        if not self.writes:
            return
        assert self.metrics is not None
        self.metrics.append(row)
        for key, value in row.items():
            if key not in ("batch", "wall_s") and math.isfinite(value):
                self.writer.add_scalar(tag(key), value, self.batches)
        self.writer.flush()
        log.info("batch %d: loss %.4g, validation %s, %.0f samples/s, buffer %.0f%% full, "
                 "reuse %.2f", self.batches, row["loss"], metrics, row["samples_per_s"],
                 100 * total.fill, total.reuse)

    @property
    def training_seconds(self) -> float:
        """From the first optimizer step to the latest one."""
        if self.first_step_at is None or self.last_step_at is None:
            return 0.0
        return self.last_step_at - self.first_step_at

    def log_scalar(self, name: str, value: float) -> None:
        if self.writer is not None:
            self.writer.add_scalar(name, value, self.batches)

    # -- checkpoints ----------------------------------------------------------------------------
    def _restore(self, saved: bytes) -> None:
        """A restarted server continues from its last checkpoint: weights, optimizer state,
        counters (the receive side restored the buffer of that moment)."""
        assert self.model is not None and self.optimizer is not None
        state = torch.load(io.BytesIO(saved), map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.batches, self.samples = int(state["batches"]), int(state["samples"])
        self.validation_metrics = dict(state["validation"])
        if self.metrics is not None:
            self.metrics.resume(self.batches)
        self.restored_training_s = float(state.get("training_s", 0.0))
        log.info("resumed from checkpoint: batch %d, %d samples trained", self.batches,
                 self.samples)

    def checkpoint(self) -> None:
        """Every rank at the same batch: rank 0 writes the model file (checkpoints/last.pt:
        model, optimizer and counters, atomically: temp file, fsync, rename; the ranks' models
        are identical), then each rank's receive loop writes its server checkpoint, which holds
        the same training state and the buffer (what a restarted server continues from)."""
        if self.model is None or self.optimizer is None:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "melissa_version": __version__,
            "model": self.model.state_dict(),
            "model_config": getattr(self.model, "config", None),
            "optimizer": self.optimizer.state_dict(),
            "batches": self.batches,
            "samples": self.samples,
            "training_s": self.restored_training_s + self.training_seconds,
            "validation": self.validation_metrics,
            "parameter_names": self.server.parameter_names,
            "field_names": list(self.server.config.study_options.field_names),
            "dl_config": self.dl.model_dump(mode="json"),
            **self.server.checkpoint_extra(),
        }
        blob = io.BytesIO()
        torch.save(state, blob)
        if self.writes:
            path = self.paths.checkpoint
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path, durable=True) as tmp, open(tmp, "wb") as f:
                f.write(blob.getbuffer())
        self.server.request_checkpoint(blob.getvalue())
