"""`LearningServer`: what the PyTorch `DeepLearningServer` and the TensorFlow `TensorFlowServer`
share, without a framework: the hooks whose default needs none (process_sample, process_pair,
on_train_start, on_validation_end, on_train_end, checkpoint_extra), the buffer entries, and the
training thread. Each framework's server adds build_model, build_optimizer, training_step,
sample_loss and validation_step, its trainer and its result files.
"""

from __future__ import annotations

import logging
import math
import threading
from abc import abstractmethod
from typing import Any

import numpy as np

from melissa.server.learning.receiver import StreamingServer
from melissa.server.learning.samples import ParameterScaler, Sample, time_input
from melissa.server.learning.training_loop import TrainingLoop

log = logging.getLogger("melissa.server")


class LearningServer(StreamingServer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scaler = ParameterScaler(self.config.parameters)
        self.trainer: TrainingLoop | None = None
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

    def process_pair(
        self, earlier: tuple[np.ndarray, np.ndarray], later: tuple[np.ndarray, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """sim_paired_reservoir: the (input, target) of two consecutive steps t and t + 1 of one
        simulation, each as process_sample made it (called per batch, in the training thread).
        Default: x = (x_t, y_t), y = y_t+1: the fields at t and the parameters and time give
        the fields at t + 1."""
        return np.concatenate([earlier[0], earlier[1]]), later[1]

    @abstractmethod
    def validation_step(self, model: Any, x: Any, y: Any) -> dict[str, Any]:
        """Metrics of one validation batch, each a mean over its samples."""

    def on_train_start(self) -> None:
        """The training thread started (no model yet: it is built from the first batch)."""

    def on_validation_end(self, metrics: dict[str, float]) -> None:
        """A validation ended (every nb_batches_update batches, and at the end)."""

    def on_train_end(self) -> None:
        """Training ended; the final checkpoint is written."""

    def checkpoint_extra(self) -> dict[str, Any]:
        """More entries for the checkpoint (PyTorch: tensors, numbers, strings, lists, dicts in
        last.pt; TensorFlow: JSON values in last.json)."""
        return {}

    # -- framework ------------------------------------------------------------------------------
    def encode_sample(self, sample: Sample) -> tuple[np.ndarray, ...]:
        """process_sample, once per sample in the receive loop: the buffer keeps (x, y), and
        with active sampling (simulation id, time step): the loss of a sample the first time it
        is trained on is its simulation's fitness."""
        x, y = self.process_sample(sample)
        pair = np.ascontiguousarray(x), np.ascontiguousarray(y)
        if not self.breeding:
            return pair
        return (*pair, np.array([sample.simulation_id, sample.time_step]))

    def training_pair(self, entry: Any) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of a buffer or validation entry: a sample's, or a pair's (process_pair)."""
        return self.process_pair(*entry) if self.paired else (entry[0], entry[1])

    # -- helpers for hooks ----------------------------------------------------------------------
    @property
    def model(self) -> Any:
        """The network being trained (None before the first batch)."""
        return self.trainer.model if self.trainer else None

    def log_scalar(self, name: str, value: float) -> None:
        """Add a TensorBoard scalar at the current batch (rank 0 writes)."""
        if self.trainer is not None:
            self.trainer.log_scalar(name, value)

    # -- the training thread --------------------------------------------------------------------
    def _start_thread(self, trainer: TrainingLoop) -> None:
        self.trainer = trainer
        self._thread = threading.Thread(
            target=self._train, args=(trainer,), name="melissa-training", daemon=True
        )
        self._thread.start()

    def _train(self, trainer: TrainingLoop) -> None:
        try:
            trainer.run()
        except BaseException as exc:
            log.exception("the training loop failed")
            self._error = exc
            self.buffer.abort()  # the receive loop must not block on a buffer nobody drains
        finally:
            trainer.close()

    def training_done(self, timeout: float) -> bool:
        assert self._thread is not None
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def training_error(self) -> BaseException | None:
        return self._error

    def training_status(self) -> dict[str, Any]:
        status = self.trainer.status if self.trainer else {}
        return {k: v for k, v in status.items() if math.isfinite(v)}  # JSON has no NaN
