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
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from melissa.config.models import DLConfig
from melissa.errors import CheckpointError, ConfigError, MelissaError
from melissa.protocol.events import Fitness
from melissa.server.base import Server
from melissa.server.learning import snapshot
from melissa.server.learning.buffers import BufferClosed, BufferState, SampleBuffer, make_buffer
from melissa.server.learning.samples import (
    Sample,
    SampleAssembler,
    ValidationSet,
    parameters_from_hello,
)
from melissa.server.registry import FieldInfo

log = logging.getLogger("melissa.server")

_STATUS_PERIOD_S = 1.0
_SERVE_PERIOD_S = 0.1  # how often a blocked receive loop looks for a checkpoint request


@dataclass
class _CheckpointRequest:
    """The training thread, waiting at a batch boundary, asks for a checkpoint."""

    training: bytes  # its own state, opaque here
    done: threading.Event = field(default_factory=threading.Event)


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
        # Checkpoints hold the registry, the buffer, the validation set and the training state,
        # all of one moment: the training thread asks (every checkpoint_interval batches and at
        # the end) and waits; this receive loop writes, between two messages.
        self.checkpointing = True
        self._request: _CheckpointRequest | None = None
        self._request_lock = threading.Lock()
        self._pending: Any = None  # an item a full buffer has not taken yet
        self._training_blob = b""  # the request's training state, while it is written
        self._stopped = threading.Event()  # the receive loop is gone: nobody serves requests
        self.restored_training: bytes | None = None  # for the training side, from a checkpoint
        # Active sampling (sampling.method "breed"): the training measures each simulation's
        # per-sample training loss, its fitness, which goes to the launcher.
        self.breeding = self.config.sampling.method == "breed"
        self._fitness: dict[int, float] = {}  # this rank's, complete simulations
        self._fitness_lock = threading.Lock()
        self._fitness_sent: dict[int, float] = {}  # rank 0: as last reported to the launcher

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
        entry = ((simulation_id, time_step), item) if self.paired else item
        while True:  # a full FIFO/FIRO buffer blocks; the training may want a checkpoint then
            try:
                self.buffer.put(entry, timeout=_SERVE_PERIOD_S)
                break
            except TimeoutError:
                self.serve_checkpoint_request(pending=entry)
            except BufferClosed:
                self.raise_if_training_failed()
                raise
        self.serve_checkpoint_request()

    def on_start(self) -> None:
        self.start_training()

    def on_close(self) -> None:
        self._stopped.set()
        self.buffer.abort()  # on any way out, a training thread still waiting wakes up

    # -- checkpoints ----------------------------------------------------------------------------
    def request_checkpoint(self, training: bytes) -> bool:
        """From the training thread, at a batch boundary: have the receive loop write a
        checkpoint with `training` (the training side's state) and wait for it. False if the
        receive loop is gone."""
        request = _CheckpointRequest(training)
        with self._request_lock:
            self._request = request
        while not request.done.wait(_SERVE_PERIOD_S):
            if self._stopped.is_set():
                return False
        return True

    def serve_checkpoint_request(self, pending: Any = None) -> None:
        """Receive loop, after a sample went into the buffer, once a second, or while a full
        buffer holds back `pending`: write the checkpoint the training thread waits for, if it
        asked for one (the registry, the buffer and the network are then of one moment)."""
        with self._request_lock:
            request, self._request = self._request, None
        if request is None:
            return
        self._pending, self._training_blob = pending, request.training
        try:
            self.checkpoint()
        except CheckpointError as exc:
            log.error("%s; the previous checkpoint is kept", exc)
        finally:
            self._pending = None
            request.done.set()

    def checkpoint_state(self) -> dict[str, np.ndarray]:
        """The receive side and the latest training state the training thread handed over
        (stopped by SIGTERM, the server writes one more checkpoint from the receive loop: its
        buffer may then count as used a few samples the network of that state has not seen)."""
        state = self.buffer.state()
        if self._pending is not None:  # a sample the full buffer had not taken: it is one
            state = BufferState([*state.items, self._pending], [*state.used, False],
                                state.counters, state.rng)
            state.counters["received"] += 1
        return snapshot.encode(state, self.paired, self.validation, self.assembler,
                               self.simulation_parameters, self._training_blob)

    def restore_state(self, state: dict[str, np.ndarray]) -> None:
        restored = snapshot.decode(state, self.paired)
        self.buffer.restore(restored.buffer)
        for key, item in restored.validation:
            self.validation.add(item, key or (0, 0))
        for info in self.registry.fields.values():
            self.assembler.declare(info)
        self.assembler.restore_partials(restored.partials)
        self.simulation_parameters.update(restored.parameters)
        self.restored_training = restored.training
        self._training_blob = restored.training or b""
        stats = self.buffer.stats()
        log.info("restored the training buffer: %d samples (%d received in all), %d held-out "
                 "samples", stats.size, stats.received, len(self.validation))

    def on_status(self, now: float) -> dict[str, Any]:
        self.raise_if_training_failed()  # the receive loop's once-a-second tick
        self.serve_checkpoint_request()  # an idle loop serves a request at least this often
        if not self.breeding:
            return {}
        with self._fitness_lock:  # every value so far: rank 0 keeps each rank's latest status
            return {"fitness": {str(s): f for s, f in self._fitness.items()}}

    # -- fitness (active sampling) ---------------------------------------------------------------
    def record_fitness(self, fitness: dict[int, float]) -> None:
        """Training thread: the latest fitness of these simulations."""
        with self._fitness_lock:
            self._fitness.update(fitness)

    def _emit_fitness(self, statuses: list[dict[str, Any]]) -> None:
        """Rank 0: a "fitness" event for each simulation whose fitness is new or changed."""
        merged: dict[str, float] = {}
        for status in statuses:
            merged.update(status.get("fitness", {}))
        for sim, fitness in merged.items():
            if self._fitness_sent.get(int(sim)) != fitness:
                self._fitness_sent[int(sim)] = fitness
                self.emit(Fitness(int(sim), float(fitness)).to_json())

    def on_report(self, event: dict[str, Any], statuses: list[dict[str, Any]]) -> None:
        event["training"] = self.training_status()
        if self.breeding:
            self._emit_fitness(statuses)

    def on_finish(self) -> list[Path]:
        self.buffer.end_reception()
        log.info("reception ended: %s; training on what the buffer holds",
                 self.buffer.stats())
        next_status = time.monotonic()
        while not self.training_done(timeout=_SERVE_PERIOD_S):
            self.serve_checkpoint_request()
            if time.monotonic() >= next_status:
                self.emit_status(time.monotonic())  # the launcher sees training go on
                next_status = time.monotonic() + _STATUS_PERIOD_S
        self.raise_if_training_failed()
        if self.breeding:  # the fitness measured at the very end too
            self.emit_status(time.monotonic())
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
