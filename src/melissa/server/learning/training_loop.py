"""The framework-neutral part of the training loop: batches from the buffer, report windows,
validation sums, fitness, metrics rows, TensorBoard scalars and checkpoint intervals.

`torch_training.Trainer` and `keras_training.KerasTrainer` add what needs their framework: the
seed, the model built from the first batch, one optimizer step, evaluation batches, collectives
over server ranks (the PyTorch one; a single rank is the identity here) and the checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from melissa import __version__
from melissa.server.learning.buffers import BufferStats
from melissa.server.learning.metrics import MetricsLog, metrics_row, tag

if TYPE_CHECKING:
    from melissa.server.learning.learning_server import LearningServer

log = logging.getLogger("melissa.server")

WAIT_S = 0.5  # longest wait for a batch before the ranks compare notes
VALIDATION_BATCH = 1024


@dataclass
class Window:
    """Training figures since the last report."""

    started: float = field(default_factory=time.monotonic)
    loss_sum: float = 0.0  # sum over samples of this rank
    samples: int = 0  # of this rank
    steps: int = 0  # optimizer steps, the same on every rank (unlike samples)


class TrainingLoop:
    """Subclasses set `model` in `_setup` and implement the framework hooks below."""

    def __init__(self, server: LearningServer, writes: bool = True) -> None:
        self.server = server
        self.dl = server.dl
        self.paths = server.paths
        self.writes = writes  # rank 0: metrics, TensorBoard and model files
        self.model: Any = None
        self.batches = 0
        self.samples = 0  # trained on, all ranks
        self.started = time.monotonic()
        self.first_step_at: float | None = None  # monotonic time of the first optimizer step
        self.last_step_at: float | None = None
        self.validation_metrics: dict[str, float] = {}
        self.status: dict[str, Any] = {}
        # Active sampling: by simulation, the sum and count of its samples' losses at their
        # first use (what the network predicted there before training on it); the samples used.
        self._fitness_sums: dict[int, tuple[float, int]] = {}
        self._fitness_new = False
        self._used: set[tuple[int, int]] = set()
        self._measured_upto = 0  # samples received when _measure_waiting last looked
        self._val_x: list[Any] = []
        self._val_y: list[Any] = []
        self.metrics = MetricsLog(self.paths.training_metrics) if writes else None
        self.writer: Any = None  # made once the counters are known (_setup)

    # -- framework hooks ------------------------------------------------------------------------
    def _seed(self, seed: int) -> None:
        raise NotImplementedError

    def _setup(self, batch: list[Any]) -> None:
        """Build model, optimizer and writer from the first batch (restoring a checkpoint)."""
        raise NotImplementedError

    def _step(self, batch: list[Any], total: int) -> float:
        """One optimizer step on this rank's `batch` (`total` samples over all ranks): its loss."""
        raise NotImplementedError

    def checkpoint(self) -> None:
        raise NotImplementedError

    def _sample_losses(self, entries: list[Any]) -> list[float]:
        """Active sampling: sample_loss of the model as it is on buffer entries, no update."""
        raise NotImplementedError

    def _as_input(self, array: np.ndarray) -> Any:
        """A validation array as validation_step's batches are stacked from."""
        return array

    def _stack(self, items: list[Any]) -> Any:
        return np.stack(items)

    @contextlib.contextmanager
    def _evaluating(self) -> Iterator[None]:
        yield

    def _validation_step(self, x: Any, y: Any) -> dict[str, Any]:
        return self.server.validation_step(self.model, x, y)

    def _all_sum(self, values: Sequence[float]) -> list[float]:
        """Sums over the server ranks (one rank: the values)."""
        return list(values)

    def _gather(self, obj: Any) -> list[Any]:
        return [obj]

    def close(self) -> None:
        """The training thread ends (after run, or its failure)."""

    # -- loop -----------------------------------------------------------------------------------
    def run(self) -> None:
        self._seed(self.server.config.study_options.seed)
        self.server.on_train_start()
        window = Window()
        try:
            while True:
                # Every rank joins this sum at least every WAIT_S, batch or not: a rank that
                # waited for its own data here would stall the others' training, so their
                # full buffers would block their clients and reception could never end.
                batch = self._next_batch()
                receiving = 0 if self.server.buffer.exhausted else 1
                total, active = (int(v) for v in self._all_sum([len(batch), receiving]))
                if total == 0:
                    if active == 0:
                        break  # every rank's buffer is exhausted: all stop at the same step
                    continue  # no rank has a batch yet
                if self.model is None:
                    self._setup(batch)
                started = time.monotonic()
                loss = self._step(batch, total)
                self.last_step_at = time.monotonic()
                if self.first_step_at is None:
                    self.first_step_at = started
                self.batches += 1
                self.samples += total
                window.loss_sum += loss * len(batch)
                window.samples += len(batch)
                window.steps += 1
                if self.batches % self.dl.nb_batches_update == 0:
                    self._report(window)
                    window = Window()
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

    def _next_batch(self) -> list[Any]:
        """This rank's next batch ([] if none within WAIT_S), within batches_per_sample."""
        buffer = self.server.buffer
        if self.dl.batches_per_sample is not None and not buffer.reception_ended:
            received = buffer.stats().received
            if self.batches >= self.dl.batches_per_sample * received:
                self._measure_waiting()
                buffer.wait_received(received, timeout=WAIT_S)
                return []
        batch = buffer.get_batch(self.dl.batch_size, timeout=WAIT_S)
        if not batch:
            self._measure_waiting()
        return batch

    def _measure_waiting(self) -> None:
        """Active sampling, while the training waits for data: the fitness goes out now, with
        the loss of the samples no batch has trained on yet measured as they are (the model has
        not seen them either). Else a generation would wait for batches that need more data, of
        the next generation: a FIFO short of a batch, a FIRO or reservoir of its watermark."""
        if not self.server.breeding:
            return
        stats = self.server.buffer.stats()
        # Once per sample received at most, and only if some wait unused: the training waits
        # after every sample when batches_per_sample binds, and a scan costs the buffer's size.
        if self.model is not None and stats.received > self._measured_upto and stats.unused_held:
            self._measured_upto = stats.received
            fresh = [e for e in self.server.buffer.unused() if self._key(e) not in self._used]
            if fresh:
                self._add_fitness(fresh, self._sample_losses(fresh))
        self._report_fitness()

    def _arrays(self, entries: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        pairs = [self.server.training_pair(e) for e in entries]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    def _add_fitness(self, batch: list[Any], losses: list[float]) -> None:
        """Active sampling: the loss of each sample the first time it is trained on
        (sample_loss, before this step's update) or measured while the training waits
        (_measure_waiting); a simulation's fitness is the mean over its samples. A sample
        trained on already is fitted, not predicted: its loss says little about how good the
        surrogate is there, so it is left out."""
        for entry, value in zip(batch, losses, strict=True):
            key = self._key(entry)
            if key in self._used:
                continue
            self._used.add(key)
            sim = key[0]
            total, count = self._fitness_sums.get(sim, (0.0, 0))
            self._fitness_sums[sim] = (total + value, count + 1)
            self._fitness_new = True

    @staticmethod
    def _key(entry: Any) -> tuple[int, int]:
        """(simulation id, time step) of a buffer entry."""
        sim, step = entry[2]
        return int(sim), int(step)

    def _fitness_state(self) -> dict[str, Any]:
        """For the checkpoint: a restarted server must not take replayed samples for new ones."""
        if not self.server.breeding:
            return {}
        return {"fitness_used": sorted([s, t] for s, t in self._used),
                "fitness_sums": {str(s): [t, n] for s, (t, n) in self._fitness_sums.items()}}

    def _report_fitness(self) -> None:
        if self._fitness_new:
            self.server.record_fitness({s: t / n for s, (t, n) in self._fitness_sums.items()})
            self._fitness_new = False

    # -- validation and reports -----------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """Mean of each validation_step metric over every held-out sample of every rank."""
        assert self.model is not None
        for entry in self.server.validation.since(len(self._val_x)):
            x_np, y_np = self.server.training_pair(entry)
            self._val_x.append(self._as_input(x_np))
            self._val_y.append(self._as_input(y_np))
        sums: dict[str, float] = {}
        count = len(self._val_x)
        if count:
            with self._evaluating():
                for start in range(0, count, VALIDATION_BATCH):
                    x = self._stack(self._val_x[start : start + VALIDATION_BATCH])
                    y = self._stack(self._val_y[start : start + VALIDATION_BATCH])
                    for key, value in self._validation_step(x, y).items():
                        sums[key] = sums.get(key, 0.0) + float(value) * len(x)
        gathered = self._gather((sums, count))
        n = sum(c for _, c in gathered)
        totals: dict[str, float] = {}
        for rank_sums, _ in gathered:
            for key, value in rank_sums.items():
                totals[key] = totals.get(key, 0.0) + value
        return {k: v / n for k, v in totals.items()} if n else {}

    def _report(self, window: Window) -> None:
        """Validate, then log the window's figures (all ranks summed) on rank 0."""
        stats = self.server.buffer.stats()
        sums = self._all_sum([
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
        self._report_fitness()
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
    @property
    def purge_step(self) -> int | None:
        """A restart hides what the crashed run logged after its checkpoint: one curve."""
        return self.batches + 1 if self.batches else None

    def _resumed(self, counters: dict[str, Any]) -> None:
        """The counters of a restored checkpoint (the receive side restored the buffer of that
        moment)."""
        self.batches, self.samples = int(counters["batches"]), int(counters["samples"])
        self.validation_metrics = dict(counters["validation"])
        self._used = {(int(s), int(t)) for s, t in counters.get("fitness_used", [])}
        self._fitness_sums = {int(s): (float(t), int(n))
                              for s, (t, n) in counters.get("fitness_sums", {}).items()}
        if self.metrics is not None:
            self.metrics.resume(self.batches)
        log.info("resumed from checkpoint: batch %d, %d samples trained", self.batches,
                 self.samples)

    def _checkpoint_info(self, training_s: float) -> dict[str, Any]:
        """What every checkpoint holds besides the framework's state."""
        return {
            "melissa_version": __version__,
            "batches": self.batches,
            "samples": self.samples,
            "training_s": training_s,
            "validation": self.validation_metrics,
            "parameter_names": self.server.parameter_names,
            "field_names": list(self.server.config.study_options.field_names),
            "dl_config": self.dl.model_dump(mode="json"),
            **self.server.checkpoint_extra(),
        }
