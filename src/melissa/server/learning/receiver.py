"""The receive side of online training, independent of the training framework.

`StreamingServer` keeps the base server's single-threaded receive loop (its ZeroMQ socket never
leaves the thread that made it) and turns the data into samples, then each sample into a training
item once (`encode_sample`, e.g. the (x, y) arrays of a network): held-out simulations go to the
validation set, the others into the bounded training buffer. A subclass brings the training loop,
which runs in its own thread from `start_training` on, draws batches from the buffer while
simulations still stream, and ends once the buffer is exhausted after `end_reception`. A full
FIFO/FIRO buffer blocks the receive loop, so ZeroMQ's high-water marks push back on the clients.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from melissa.config.models import DLConfig
from melissa.errors import ConfigError, MelissaError
from melissa.server.base import Server
from melissa.server.learning.buffers import BufferClosed, SampleBuffer, make_buffer
from melissa.server.learning.samples import (
    Sample,
    SampleAssembler,
    ValidationSet,
    parameters_from_hello,
)
from melissa.server.registry import FieldInfo

log = logging.getLogger("melissa.server")

_STATUS_PERIOD_S = 1.0


class TrainingError(MelissaError):
    """The training loop failed; the server stops (the traceback is in server.log)."""


class StreamingServer(Server, ABC):
    whole_fields = True  # a simulation's samples go whole to rank (simulation id mod ranks)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        dl = self.config.dl_config
        if dl is None:
            raise ConfigError(
                f"{type(self).__name__} trains a surrogate: the study needs a dl_config section"
            )
        self.dl: DLConfig = dl
        options = self.config.study_options
        self.parameter_names = [p.name for p in self.config.parameters]
        self.validation_ids = dl.validation_simulations(options.parameter_sweep_size)
        # Each rank has its own buffer and random stream.
        self.buffer: SampleBuffer[Any] = make_buffer(
            dl.buffer, dl.buffer_size, dl.per_server_watermark,
            seed=options.seed * 1009 + self.rank, drain_batches=dl.drain_batches,
        )
        # sim_paired_reservoir: the buffer and the validation set hold pairs of (sim, step).
        self.paired = dl.buffer == "sim_paired_reservoir"
        self.validation: ValidationSet[Any] = ValidationSet(paired=self.paired)
        self.assembler = SampleAssembler(list(options.field_names))
        self.simulation_parameters: dict[int, np.ndarray] = {}

    # -- receive loop (main thread) -------------------------------------------------------------
    def on_hello(self, simulation_id: int, body: dict[str, Any]) -> None:
        values = parameters_from_hello(body, self.parameter_names, simulation_id)
        self.simulation_parameters[simulation_id] = values

    def on_field(self, info: FieldInfo) -> None:
        self.assembler.declare(info)

    def on_data(
        self, info: FieldInfo, simulation_id: int, time_step: int, local_start: int, data: np.ndarray
    ) -> None:
        fields = self.assembler.add(info, simulation_id, time_step, local_start, data)
        if fields is None:
            return
        sample = Sample(simulation_id, time_step, self.simulation_parameters[simulation_id], fields)
        item = self.encode_sample(sample)
        if simulation_id in self.validation_ids:
            self.validation.add(item, (simulation_id, time_step))
            return
        try:
            # blocks while a FIFO/FIRO buffer is full
            self.buffer.put(((simulation_id, time_step), item) if self.paired else item)
        except BufferClosed:
            self.raise_if_training_failed()
            raise

    def run(self) -> list[Path]:
        self.start_training()
        try:
            return super().run()
        finally:
            self.buffer.abort()  # on any way out, a training thread still waiting wakes up

    def emit_status(self, now: float) -> None:
        self.raise_if_training_failed()  # the receive loop's once-a-second tick
        super().emit_status(now)

    def emit(self, event: dict[str, Any]) -> None:
        if event.get("event") == "status":
            event = {**event, "training": self.training_status()}
        super().emit(event)

    def on_finish(self) -> list[Path]:
        self.buffer.end_reception()
        log.info("reception ended: %s; training on what the buffer holds",
                 self.buffer.stats())
        while not self.training_done(timeout=_STATUS_PERIOD_S):
            self.emit_status(time.monotonic())  # the launcher sees training go on
        self.raise_if_training_failed()
        return self.training_results()

    # -- the training side ----------------------------------------------------------------------
    @abstractmethod
    def encode_sample(self, sample: Sample) -> Any:
        """What the buffer keeps of a sample (called once per sample, in the receive loop)."""

    @abstractmethod
    def start_training(self) -> None:
        """Start the training loop in its own thread; it draws from self.buffer."""

    @abstractmethod
    def training_done(self, timeout: float) -> bool:
        """Wait up to `timeout` s for the training loop to end; True once it has."""

    @abstractmethod
    def training_error(self) -> BaseException | None:
        """The exception that stopped the training loop, if one did."""

    @abstractmethod
    def training_results(self) -> list[Path]:
        """Files the training wrote (checkpoint, metrics), once it is done."""

    @abstractmethod
    def training_status(self) -> dict[str, Any]:
        """Latest training figures, for the launcher's status events."""

    def raise_if_training_failed(self) -> None:
        error = self.training_error()
        if error is not None:
            raise TrainingError(
                f"the training loop failed: {type(error).__name__}: {error} "
                "(traceback in server.log)"
            ) from error
