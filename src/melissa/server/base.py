"""The server's receive loop: handshake, validation, completion, status, launcher channel.

A concrete server (sensitivity analysis, deep learning) subclasses `Server` and overrides only
its hooks: the `on_*` methods, `checkpoint_state`/`restore_state`, and the `whole_fields` flag.
The rest is sealed (a subclass that redefines it is refused at class creation), so that
everything about the wire and about exactly-once delivery stays here and in its parts:
transport.py (sockets), relay.py (between ranks), recovery.py (checkpoints), and the
`Kind -> handler` table of `Server.handlers`.

Faults: a statistics server checkpoints its whole state (the registry, and what its subclass
returns from `checkpoint_state`) every sa_config.checkpoint_interval seconds and when stopped
(`stop`, SIGTERM), always between two messages, and `restore_checkpoint` brings it back on start.
Rank 0 reports simulations silent on every rank (silence.py) and applies the launcher's ABANDON
on every rank (`on_abandon` frees what a subclass holds for them).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from melissa.atomic import atomic_write
from melissa.config import StudyConfig
from melissa.errors import CheckpointError, ProtocolError
from melissa.paths import StudyPaths
from melissa.protocol import (
    HEADER_SIZE,
    Dtype,
    Header,
    Kind,
    decode_header,
    decode_json,
    encode_json,
    numpy_dtype,
)
from melissa.protocol.events import (
    Attached,
    Restored,
    ResultsWritten,
    ServerStatus,
    SimulationComplete,
    SimulationRefused,
    SimulationSilent,
    decode_event,
)
from melissa.server.checkpoint import Checkpoint
from melissa.server.launcher_watch import LauncherWatch
from melissa.server.recovery import DEFAULT_INTERVAL_S, Recovery
from melissa.server.registry import FieldInfo, Registry
from melissa.server.relay import RankRelay
from melissa.server.silence import SilenceWatch
from melissa.server.transport import Transport, rank_identity

log = logging.getLogger("melissa.server")

_STATUS_PERIOD_S = 1.0
_MAX_BAD_MESSAGE_LINES = 1000  # beyond this, bad messages are only counted (a flood must not fill the disk)
_BATCH = 256  # messages handled between two checks of timers
_STATE_KINDS = frozenset({Kind.HELLO, Kind.DATA, Kind.END, Kind.ABANDON})  # may change the state


class BadMessageLog:
    """Logs each dropped message once, with its reason; counts them by reason."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def drop(self, reason: str, peer: bytes) -> None:
        total = sum(self.counts.values())
        self.counts[reason.split(":")[0]] += 1
        if total < _MAX_BAD_MESSAGE_LINES:
            log.warning("dropped a message from peer %s: %s", peer.hex() or "?", reason)
        elif total == _MAX_BAD_MESSAGE_LINES:
            log.warning("more bad messages: counting them without logging each")

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class Throughput:
    messages: int = 0
    bytes: int = 0
    first_data: float | None = None  # monotonic time of the first accepted chunk


Handler = Callable[[bytes, Header, "zmq.Frame | None"], None]


class Server:
    """One rank of the server. Every rank owns a contiguous cell range of every field and talks
    to every client; rank 0 also publishes the rendezvous address, talks to the launcher, and
    gathers the other ranks' completions (RANK_EVENT over ZeroMQ, so one poll loop serves all).
    `comm` (an mpi4py communicator) is only needed with more than one rank."""

    def __init__(
        self, config: StudyConfig, paths: StudyPaths, token: bytes, comm: Any = None
    ) -> None:
        self.config = config
        self.paths = paths
        self.token = token
        self.comm = comm
        rank, ranks = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
        self.rank, self.ranks = rank, ranks
        self.registry = Registry(
            config.study_options.field_names, config.study_options.nb_time_steps, rank, ranks,
            whole_fields=self.whole_fields,
        )
        self.bad = BadMessageLog()
        self.stats = Throughput()
        self.transport = Transport(config, rank, comm)
        self.relay = RankRelay(self.transport, token, rank, ranks)
        self.launcher: bytes | None = None
        self._finish_pending = False  # rank 0: FINISH received, not yet forwarded to all ranks
        self._finish_requested = False
        self.silence = SilenceWatch(config.study_options.simulation_timeout)
        # Statistics servers checkpoint their whole state (checkpoint.py) and restore it on
        # start; deep-learning servers keep their own checkpoints of model and optimizer.
        self.checkpointing = config.sa_config is not None
        self.recovery = Recovery(paths, self.registry, rank, ranks, comm, type(self).__name__)
        self._restored: Restored | None = None  # rank 0: the "restored" event, if any
        self.stop_reason: str | None = None  # set by `stop`
        # rank 0: a server whose launcher is gone stops (launcher_watch.py)
        self.launcher_watch = LauncherWatch(config.launcher_config.launcher_timeout,
                                            time.monotonic())
        self._changed = False  # a message may have changed the state since the last checkpoint
        self._refusals_told: set[tuple[int, int]] = set()  # (simulation, attempt): _refused
        # Kind -> handler; rank 0 alone hears the launcher and the other ranks.
        self.handlers: dict[Kind, Handler] = {
            Kind.HELLO: self._hello, Kind.DATA: self._data, Kind.END: self._end,
        }
        if rank == 0:
            self.handlers.update({
                Kind.ATTACH: self._attach, Kind.ABANDON: self._abandon_message,
                Kind.FINISH: self._finish, Kind.RANK_EVENT: self._rank_event,
                Kind.HEARTBEAT: self._heartbeat,
            })

    # Statistics split every field over the ranks by cells; training needs whole samples, so a
    # subclass may route each simulation's fields whole to one rank instead.
    whole_fields = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        sealed = sorted(_SEALED.intersection(vars(cls)))
        if sealed:
            raise TypeError(
                f"{cls.__name__} redefines {', '.join(sealed)} of melissa's Server: a server "
                f"overrides only its hooks ({', '.join(sorted(HOOKS))})"
            )

    # -- hooks ---------------------------------------------------------------------------------
    def on_start(self) -> None:
        """The receive loop is about to start (after `restore_checkpoint`)."""

    def on_hello(self, simulation_id: int, body: dict[str, Any]) -> None:
        """A client rank's HELLO payload, before it is accepted (optional keys such as
        "parameters" are here); raising ProtocolError refuses the HELLO."""

    def on_field(self, info: FieldInfo) -> None:
        """A field's global size and shape are now known (first HELLO that declares it)."""

    def on_data(
        self, info: FieldInfo, simulation_id: int, time_step: int, local_start: int, data: np.ndarray
    ) -> None:
        """A new chunk of `info` for this rank's cells [local_start, local_start + len(data))."""

    def on_status(self, now: float) -> dict[str, Any]:
        """Once a second on every rank: extra keys for this rank's status (rank r > 0 sends it to
        rank 0, where `on_report` sees it); raising here stops the server."""
        return {}

    def on_report(self, event: dict[str, Any], statuses: list[dict[str, Any]]) -> None:
        """Rank 0: the "status" event about to go to the launcher (add keys to it), and every
        rank's latest status (rank 0's first)."""

    def on_finish(self) -> list[Path]:
        """All simulations are done: write the results; returns the files written."""
        return []

    def on_complete(self, simulation_id: int) -> None:
        """The simulation's data is all here (this rank's cells), once per simulation, before
        its END is acknowledged."""

    def on_abandon(self, simulation_ids: list[int]) -> None:
        """The launcher gave up on these simulations: free what is held for them."""

    def on_refused(self, simulation_id: int, attempt: int, reason: str) -> None:
        """This rank refused a HELLO, DATA or END of the simulation (already answered with an
        ERROR, and told to the launcher)."""

    def on_close(self) -> None:
        """The receive loop ended, however (results written, stopped, or an exception)."""

    def checkpoint_state(self) -> dict[str, np.ndarray]:
        """This server's state as named arrays for a checkpoint, taken between two messages
        (names must not start with "registry/": the base class saves the registry there)."""
        return {}

    def restore_state(self, state: dict[str, np.ndarray]) -> None:
        """Rebuild the state from `checkpoint_state()` output (read-only arrays: copy them)."""

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return self.transport.endpoint

    def bind(self) -> str:
        return self.transport.bind()

    def write_rendezvous(self) -> None:
        """Publish rank 0's address atomically: the launcher polls for this file."""
        rendezvous: dict[str, Any] = {"address": self.endpoint, "pid": os.getpid()}
        if self.transport.public_key is not None:
            rendezvous["public_key"] = self.transport.public_key.decode()  # MELISSA_SERVER_KEY
        with atomic_write(self.paths.rendezvous, durable=False) as tmp:
            tmp.write_text(json.dumps(rendezvous))

    def run(self) -> list[Path]:
        self.on_start()
        try:
            return self._run()
        finally:
            self.on_close()

    def _run(self) -> list[Path]:
        if not self.endpoint:
            self.bind()
        poller = zmq.Poller()
        router = self.transport.router
        poller.register(router, zmq.POLLIN)
        up = None
        if self.rank == 0:
            self.write_rendezvous()
        else:
            up = self.transport.connect_up()
            poller.register(up, zmq.POLLIN)
            self.emit_status(time.monotonic())  # introduces this rank to rank 0
        log.info("server rank %d of %d listening on %s", self.rank, self.ranks, self.endpoint)
        next_status = time.monotonic() + _STATUS_PERIOD_S
        sa = self.config.sa_config
        interval = sa.checkpoint_interval if sa is not None else 0.0  # None: adaptive
        periodic = self.checkpointing and interval != 0
        last_checkpoint = time.monotonic()  # end of the last one (or the start)
        baseline = resident_memory()  # what the state's growth is measured from
        first = interval if interval is not None else DEFAULT_INTERVAL_S
        next_checkpoint = last_checkpoint + first if periodic else float("inf")
        expected = self.config.nb_simulations
        while not self._finish_requested and self.stop_reason is None:
            for sock, _ in poller.poll(timeout=200):
                if sock is up:
                    self.from_rank0(up.recv_multipart())
                    continue
                for i in range(_BATCH):
                    try:
                        frames = router.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self.handle(frames)
                    if self._finish_requested:
                        break
                    # Large chunks on a busy machine: the status (the launcher's heartbeat)
                    # still goes out about once a period.
                    if i % 16 == 15 and time.monotonic() >= next_status:
                        break
            if self._finish_pending and not self._finish_requested:
                self.forward_finish()
            now = time.monotonic()
            if now >= next_status:
                self.emit_status(now)
                next_status = now + _STATUS_PERIOD_S
            self.relay.flush()
            if self.rank == 0:
                self._stop_without_launcher(now)
            if now >= next_checkpoint:
                # From the end of the last one, so that a slow disk or a large state (about
                # what this process's memory grew by) gets fewer: recovery.py, at most 5%.
                wait = self.recovery.interval(interval, resident_memory() - baseline)
                # Not for an idle server (the same state again), nor once every simulation is
                # complete here: the results come next.
                if (now - last_checkpoint >= wait and self._changed
                        and len(self.registry.completed) < expected):
                    self.try_checkpoint()
                    last_checkpoint = time.monotonic()
                next_checkpoint = max(last_checkpoint + wait, now + min(wait, 1.0))
        if self.stop_reason is not None:
            log.warning("stopping on %s before the study finished", self.stop_reason)
            if self.checkpointing:
                self.try_checkpoint()
            self.close()
            return []
        self.emit_status(time.monotonic())  # the launcher's summary gets the final figures
        files = self.on_finish()
        self.emit(ResultsWritten(tuple(str(f) for f in files)).to_json())
        if self.checkpointing and not (sa is not None and sa.keep_checkpoints):
            self.recovery.remove()
        self.close()
        return files

    def close(self) -> None:
        if self.bad.total:
            log.warning("dropped %d bad messages: %s", self.bad.total, dict(self.bad.counts))
        log.info("server rank %d: peak memory %.1f MB", self.rank, peak_memory() / 1e6)
        self.transport.close()

    # -- messages ------------------------------------------------------------------------------
    def handle(self, frames: list[zmq.Frame]) -> None:
        peer = frames[0].bytes
        if len(frames) < 2 or len(frames) > 3:
            self.bad.drop(f"malformed: {len(frames) - 1} frames, expected 1 or 2", peer)
            return
        try:
            header = decode_header(frames[1].buffer, self.token)
        except ProtocolError as exc:
            # Unauthenticated or garbled: no answer, so a scanner learns nothing.
            self.bad.drop(f"rejected header: {exc}", peer)
            return
        payload = frames[2] if len(frames) == 3 else None
        try:
            handler = self.handlers.get(header.kind)
            if handler is None:
                raise ProtocolError(
                    f"unexpected {header.kind.name} message on server rank {self.rank}")
            handler(peer, header, payload)
            self._changed = self._changed or header.kind in _STATE_KINDS
        except ProtocolError as exc:
            self.bad.drop(f"refused {header.kind.name}: {exc}", peer)
            if header.kind in (Kind.HELLO, Kind.DATA, Kind.END):
                self.reply(peer, Kind.ERROR, header, {"error": str(exc)})
                self._refused(header, str(exc))

    @staticmethod
    def _json(payload: zmq.Frame | None, what: str) -> dict[str, Any]:
        if payload is None:
            raise ProtocolError(f"{what} without its payload frame")
        return decode_json(payload.buffer, what)

    def _configured_shape(self, name: str, global_size: int,
                          declared: tuple[int, ...] | None) -> tuple[int, ...] | None:
        """The shape study_options.field_shapes gives a field whose clients declare none."""
        configured = self.config.study_options.field_shapes.get(name)
        if configured is None:
            return declared
        shape = tuple(configured)
        if declared is not None and declared != shape:
            raise ProtocolError(f"field {name!r}: the simulation declares shape {declared}, "
                                f"study_options.field_shapes says {shape}")
        if math.prod(shape) != global_size:
            raise ProtocolError(f"field {name!r} has {global_size} values, but "
                                f"study_options.field_shapes gives it shape {shape} "
                                f"({math.prod(shape)} values)")
        return shape

    def _hello(self, peer: bytes, header: Header, payload: zmq.Frame | None) -> None:
        body = self._json(payload, "HELLO")
        try:
            name = str(body["field"])
            global_size = int(body["global_size"])
            client_ranks = int(body["client_ranks"])
            raw_shape = body.get("shape")
            shape = tuple(int(s) for s in raw_shape) if raw_shape is not None else None
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"HELLO payload lacks or garbles {exc}") from None
        shape = self._configured_shape(name, global_size, shape)
        self.on_hello(header.simulation_id, body)
        info, new = self.registry.declare(
            header.simulation_id, header.attempt, header.client_rank, client_ranks, name,
            global_size, shape, header.offset, header.count,
        )
        self.silence.heard(header.simulation_id, time.monotonic())
        if new:
            log.info("field %r: %d cells, shape %s; this rank owns [%d, %d)",
                     name, global_size, shape, info.start, info.stop)
            self.on_field(info)
        welcome = {
            "field_id": info.field_id,
            "endpoints": self.transport.endpoints,
            "ranges": self.registry.ranges(info, header.simulation_id),
            "nb_time_steps": self.registry.nb_time_steps,
        }
        if self.transport.public_keys:  # encrypted: the client connects to every rank with its key
            welcome["public_keys"] = [key.decode() for key in self.transport.public_keys]
        self.reply(peer, Kind.WELCOME, header, welcome)

    def _data(self, peer: bytes, header: Header, payload: zmq.Frame | None) -> None:
        if payload is None:
            raise ProtocolError("DATA without its payload frame")
        if header.dtype == Dtype.NONE:
            raise ProtocolError("DATA without a dtype")
        dtype = numpy_dtype(header.dtype)
        nbytes = len(payload.buffer)
        if nbytes != header.count * dtype.itemsize:
            raise ProtocolError(
                f"DATA payload has {nbytes} bytes, header announces {header.count} x "
                f"{dtype.itemsize}"
            )
        fresh = self.registry.accept_chunk(
            header.simulation_id, header.client_rank, header.field_id, header.time_step,
            header.offset, header.count,
        )
        self.silence.heard(header.simulation_id, time.monotonic())  # duplicates too: alive
        if not fresh:
            log.debug("duplicate chunk dropped: sim %d field %d step %d rank %d",
                      header.simulation_id, header.field_id, header.time_step, header.client_rank)
            return
        info = self.registry.fields[header.field_id]
        data = np.frombuffer(payload.buffer, dtype=dtype)
        self.on_data(info, header.simulation_id, header.time_step, header.offset - info.start, data)
        if self.stats.first_data is None:
            self.stats.first_data = time.monotonic()
        self.stats.messages += 1
        self.stats.bytes += nbytes + HEADER_SIZE

    def _end(self, peer: bytes, header: Header, payload: zmq.Frame | None) -> None:
        self.silence.heard(header.simulation_id, time.monotonic())
        if self.registry.end(header.simulation_id, header.client_rank):
            log.info("simulation %d complete on rank %d", header.simulation_id, self.rank)
            self.silence.forget(header.simulation_id)
            self.on_complete(header.simulation_id)
            # Rank 0 (so the launcher) hears of it before the client gets its acknowledgement.
            if self.rank == 0:
                self.rank_complete(header.simulation_id, self.rank)
            else:
                self.relay.to_rank0({"simulation_complete": header.simulation_id})
        self.reply(peer, Kind.END_ACK, header, None)

    def _attach(self, peer: bytes, header: Header, payload: zmq.Frame | None) -> None:
        self.launcher = peer
        self.launcher_watch.heard(time.monotonic())
        self.emit(Attached(self.endpoint).to_json())
        if self._restored is not None:
            complete = tuple(sorted(self.relay.complete_everywhere()))
            self.emit(replace(self._restored, complete=complete).to_json())

    def _abandon_message(self, peer: bytes, header: Header, payload: zmq.Frame | None) -> None:
        if peer != self.launcher:
            raise ProtocolError(f"unexpected ABANDON message on server rank {self.rank}")
        body = self._json(payload, "ABANDON")
        ids = _abandoned_ids(body)
        self.relay.to_ranks([Header(Kind.ABANDON, self.token).encode(), encode_json(body)])
        self.abandon(ids)

    def _finish(self, peer: bytes, header: Header, payload: zmq.Frame | None) -> None:
        if peer != self.launcher:
            raise ProtocolError(f"unexpected FINISH message on server rank {self.rank}")
        log.info("launcher asked to finish: %d simulations complete", self.simulations_complete)
        self._finish_pending = True
        self.forward_finish()

    def _heartbeat(self, peer: bytes, header: Header, payload: zmq.Frame | None) -> None:
        if peer != self.launcher:
            raise ProtocolError(f"unexpected HEARTBEAT message on server rank {self.rank}")
        self.launcher_watch.heard(time.monotonic())

    def _refused(self, header: Header, reason: str) -> None:
        """The launcher hears of the first refused message of each simulation attempt (a
        wrong field size, ...): its summary says why the simulation failed."""
        self.on_refused(header.simulation_id, header.attempt, reason)
        key = (header.simulation_id, header.attempt)
        if key in self._refusals_told or header.simulation_id in self.registry.abandoned:
            return
        self._refusals_told.add(key)
        refused = SimulationRefused(header.simulation_id, header.attempt,
                                    f"{header.kind.name} to server rank {self.rank}: {reason}")
        if self.rank == 0:
            self.emit(refused.to_json())
        else:
            self.relay.to_rank0({"refused": refused.to_json()})

    def _rank_event(self, peer: bytes, header: Header, payload: zmq.Frame | None) -> None:
        body = self._json(payload, "RANK_EVENT")
        if "refused" in body:  # a refusal on rank r > 0, for the launcher
            self.emit(_refused_on_rank(body["refused"]).to_json())
        complete = self.relay.rank_event(body)
        if complete is not None:
            self._announce_complete(complete)

    def reply(self, peer: bytes, kind: Kind, to: Header, body: dict[str, Any] | None) -> None:
        self.transport.reply(peer, kind, self.token, to, body)

    # -- between ranks -------------------------------------------------------------------------
    def from_rank0(self, frames: list[bytes]) -> None:
        try:
            header = decode_header(frames[0], self.token)
        except ProtocolError as exc:
            self.bad.drop(f"from rank 0: {exc}", b"rank0")
            return
        if header.kind == Kind.FINISH:
            self._finish_requested = True
        elif header.kind == Kind.STOP:
            self.stop("rank 0's request: the launcher is gone")
        elif header.kind == Kind.ABANDON and len(frames) == 2:
            try:
                self.abandon(_abandoned_ids(decode_json(frames[1], "ABANDON")))
                self._changed = True
            except ProtocolError as exc:
                self.bad.drop(f"from rank 0: {exc}", b"rank0")

    def forward_finish(self) -> None:
        """Rank 0 finishes once every rank can be told to (its channel has said hello): a
        ROUTER silently drops messages to a peer it has not seen yet."""
        if not self.relay.all_connected:
            return
        self.relay.to_ranks([Header(Kind.FINISH, self.token).encode()])
        self._finish_requested = True

    @property
    def simulations_complete(self) -> int:
        """Simulations whose data every rank holds (meaningful on rank 0)."""
        return len(self.relay.complete_everywhere())

    def rank_complete(self, simulation_id: int, rank: int) -> None:
        if self.relay.rank_complete(simulation_id, rank):
            self._announce_complete(simulation_id)

    def _announce_complete(self, simulation_id: int) -> None:
        log.info("simulation %d complete", simulation_id)
        self.emit(SimulationComplete(simulation_id).to_json())

    # -- launcher channel ----------------------------------------------------------------------
    def emit(self, event: dict[str, Any]) -> None:
        if self.launcher is None:
            return
        self.transport.send(
            [self.launcher, Header(Kind.EVENT, self.token).encode(), encode_json(event)]
        )

    def local_status(self, now: float) -> dict[str, Any]:
        first = self.stats.first_data
        return {
            "messages": self.stats.messages,
            "bytes": self.stats.bytes,
            "bad_messages": self.bad.total,
            "ingest_s": 0.0 if first is None else now - first,  # since the first data
            "chunks_received": {str(s.simulation_id): s.chunks_received
                                for s in self.registry.simulations.values() if not s.complete},
            "silent_s": self.silence.ages(now, [s.simulation_id for s in
                                                self.registry.simulations.values()
                                                if not s.complete]),
            **self.on_status(now),
        }

    def emit_status(self, now: float) -> None:
        """Rank r > 0 reports to rank 0; rank 0 adds every rank's figures up for the launcher."""
        mine = self.local_status(now)
        if self.rank != 0:
            self.relay.to_rank0({"status": mine})
            return
        ranks = [mine, *self.relay.rank_status.values()]
        self.report_silent(ranks)
        chunks: Counter[str] = Counter()
        for status in ranks:
            chunks.update(status.get("chunks_received", {}))
        complete = self.relay.complete_everywhere()
        event = ServerStatus(
            messages=sum(int(r.get("messages", 0)) for r in ranks),
            bytes=sum(int(r.get("bytes", 0)) for r in ranks),
            bad_messages=sum(int(r.get("bad_messages", 0)) for r in ranks),
            ingest_s=max(float(r.get("ingest_s", 0.0)) for r in ranks),
            simulations_complete=len(complete),
            chunks_received={s: n for s, n in chunks.items() if int(s) not in complete},
        ).to_json()
        self.on_report(event, ranks)
        self.emit(event)

    def report_silent(self, statuses: list[dict[str, Any]]) -> None:
        """Rank 0: tell the launcher of simulations silent on every rank for simulation_timeout
        seconds, again after each further timeout of silence (SilenceWatch; ranks r > 0's ages
        are at most one status period old)."""
        attempts = {s: sim.attempt for s, sim in self.registry.simulations.items()}
        for sim, age in self.silence.newly_silent([s.get("silent_s", {}) for s in statuses],
                                                  attempts):
            log.warning("simulation %d (attempt %d) sent nothing for %.0f s "
                        "(study_options.simulation_timeout)", sim, attempts[sim], age)
            self.emit(SimulationSilent(sim, age).to_json())

    # -- abandoned simulations -----------------------------------------------------------------
    def abandon(self, simulation_ids: list[int]) -> None:
        """Refuse these simulations for good (the launcher gave up on them)."""
        new = self.registry.abandon(simulation_ids)
        for simulation_id in new:
            self.silence.forget(simulation_id)
        if new:
            log.info("abandoned simulations %s: their messages are refused from now on", new)
            self.on_abandon(new)

    def _stop_without_launcher(self, now: float) -> None:
        """Rank 0: stop every rank (each checkpoints) once the launcher is gone."""
        reason = self.launcher_watch.gone(now)
        if reason is None:
            return
        log.warning("%s", reason)
        stop = Header(Kind.STOP, self.token).encode()
        for rank in range(1, self.ranks):  # not held back (relay.to_ranks): rank 0 stops now
            self.transport.send([rank_identity(rank), stop])
        self.stop(reason)

    # -- checkpoints ---------------------------------------------------------------------------
    def stop(self, reason: str) -> None:
        """Checkpoint and leave the receive loop after the current message (safe to call from a
        signal handler: it only sets a flag)."""
        self.stop_reason = reason

    def checkpoint(self) -> Path:
        """Write this rank's whole state (registry and `checkpoint_state()`) to a new checkpoint."""
        path = self.recovery.checkpoint(self.checkpoint_state())
        self._changed = False
        return path

    def try_checkpoint(self) -> None:
        """A checkpoint that fails (disk full, ...) is logged; the study goes on."""
        try:
            self.checkpoint()
        except CheckpointError as exc:
            log.error("%s; the previous checkpoint is kept", exc)

    def restore_checkpoint(self) -> Checkpoint | None:
        """Before `run`, collective over the ranks: restore this rank's newest valid checkpoint
        if it has one; rank 0 learns which simulations each rank holds complete. Raises
        CheckpointError (on every rank) if any rank's checkpoint cannot be used."""
        found, everyone = self.recovery.restore(self.checkpointing, self.restore_state)
        for rank, (_, _, complete) in enumerate(everyone):
            for simulation_id in complete:
                self.relay.complete_on.setdefault(simulation_id, set()).add(rank)
        if any(path is not None for _, path, _ in everyone):
            self._restored = Restored(everyone[0][1])
        return found


HOOKS = frozenset({name for name in vars(Server) if name.startswith("on_")}
                  | {"checkpoint_state", "restore_state", "whole_fields"})
_SEALED = frozenset(name for name in vars(Server)
                    if name not in HOOKS and not name.startswith("__"))


def _refused_on_rank(obj: Any) -> SimulationRefused:
    """The refusal a rank r > 0 relayed (checked like any event)."""
    event = decode_event(obj) if isinstance(obj, dict) else None
    if not isinstance(event, SimulationRefused):
        raise ProtocolError(f"RANK_EVENT \"refused\" is not a simulation_refused event: {obj!r:.80}")
    return event


def peak_memory() -> int:
    """This process's peak resident memory in bytes (VmHWM of /proc/self/status; 0 elsewhere)."""
    return _proc_status("VmHWM:")


def resident_memory() -> int:
    """This process's resident memory in bytes (VmRSS; 0 where /proc is missing)."""
    return _proc_status("VmRSS:")


def _proc_status(key: str) -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _abandoned_ids(body: dict[str, Any]) -> list[int]:
    """The simulation ids of an ABANDON payload {"simulations": [ids]}."""
    ids = body.get("simulations")
    if not isinstance(ids, list) or not all(type(i) is int and i >= 0 for i in ids):
        raise ProtocolError(f"ABANDON payload needs \"simulations\": [ids >= 0], got {ids!r}")
    return ids
