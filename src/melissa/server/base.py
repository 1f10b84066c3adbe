"""The server's receive loop: sockets, handshake, validation, completion, launcher channel.

A concrete server (sensitivity analysis, deep learning) subclasses `Server` and fills three hooks:
`on_field` (a field's size became known), `on_data` (a new, validated chunk) and `on_finish`
(write results); `on_hello` sees a HELLO's optional keys (deep learning reads the simulation's
parameters there). Everything about the wire and about exactly-once delivery lives here.

Faults: a statistics server checkpoints its whole state (the registry, and what its subclass
returns from `checkpoint_state`) every sa_config.checkpoint_interval seconds and when stopped
(`stop`, SIGTERM), always between two messages, and `restore_checkpoint` brings it back on start.
Rank 0 reports simulations silent on every rank (silence.py) and applies the launcher's ABANDON
on every rank (`on_abandon` frees what a subclass holds for them).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from melissa.config import StudyConfig
from melissa.errors import CheckpointError, ProtocolError
from melissa.paths import StudyPaths
from melissa.protocol import (
    HEADER_SIZE,
    Dtype,
    Header,
    Kind,
    curve,
    decode_header,
    decode_json,
    encode_json,
    numpy_dtype,
)
from melissa.protocol.address import advertised_address, listen_address
from melissa.server.checkpoint import Checkpoint, latest_checkpoint, next_sequence, write_checkpoint
from melissa.server.registry import FieldInfo, Registry
from melissa.server.silence import SilenceWatch

log = logging.getLogger("melissa.server")

_STATUS_PERIOD_S = 1.0
_MAX_BAD_MESSAGE_LINES = 1000  # beyond this, bad messages are only counted (a flood must not fill the disk)
_BATCH = 256  # messages handled between two checks of timers
_REGISTRY = "registry/"  # prefix of the registry's arrays in a checkpoint
_STATE_KINDS = frozenset({Kind.HELLO, Kind.DATA, Kind.END, Kind.ABANDON})  # may change the state


def _rank_identity(rank: int) -> bytes:
    """ZeroMQ routing id of rank `rank`'s channel to rank 0."""
    return f"melissa-rank-{rank}".encode()


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
        self.context: zmq.Context[Any] = zmq.Context()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.MAXMSGSIZE, config.server_config.max_message_bytes)
        self.router.setsockopt(zmq.LINGER, 2000)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 0)  # replies to vanished peers are dropped
        # server_config.encryption: this rank's CURVE public key (Z85), and every rank's.
        self.public_key = (
            curve.make_server(self.router) if config.server_config.encryption else None
        )
        self.public_keys: list[bytes] = []
        self.launcher: bytes | None = None
        self.endpoint = ""
        self.endpoints: list[str] = []  # of every rank, in rank order
        self.up: zmq.Socket[Any] | None = None  # rank r > 0: its channel to rank 0
        self._complete_on: dict[int, set[int]] = {}  # rank 0: simulation -> ranks done with it
        self._rank_status: dict[int, dict[str, Any]] = {}  # rank 0: latest status of each rank
        self._finish_pending = False  # rank 0: FINISH received, not yet forwarded to all ranks
        self._finish_requested = False
        self._to_ranks: list[list[bytes]] = []  # rank 0: held until every rank's channel is up
        self.silence = SilenceWatch(config.study_options.simulation_timeout)
        # Statistics servers checkpoint their whole state (checkpoint.py) and restore it on
        # start; deep-learning servers keep their own checkpoints of model and optimizer.
        self.checkpointing = config.sa_config is not None
        self._checkpoint_sequence = 0
        self._restored: dict[str, Any] | None = None  # rank 0: the "restored" event, if any
        self.stop_reason: str | None = None  # set by `stop`
        self._changed = False  # a message may have changed the state since the last checkpoint

    # Statistics split every field over the ranks by cells; training needs whole samples, so a
    # subclass may route each simulation's fields whole to one rank instead.
    whole_fields = False

    # -- hooks ---------------------------------------------------------------------------------
    def on_hello(self, simulation_id: int, body: dict[str, Any]) -> None:
        """A client rank's HELLO payload, before it is accepted (optional keys such as
        "parameters" are here); raising ProtocolError refuses the HELLO."""

    def on_field(self, info: FieldInfo) -> None:
        """A field's global size and shape are now known (first HELLO that declares it)."""

    def on_data(
        self, info: FieldInfo, simulation_id: int, time_step: int, local_start: int, data: np.ndarray
    ) -> None:
        """A new chunk of `info` for this rank's cells [local_start, local_start + len(data))."""

    def on_finish(self) -> list[Path]:
        """All simulations are done: write the results; returns the files written."""
        return []

    def on_abandon(self, simulation_ids: list[int]) -> None:
        """The launcher gave up on these simulations: free what is held for them."""

    def checkpoint_state(self) -> dict[str, np.ndarray]:
        """This server's state as named arrays for a checkpoint, taken between two messages
        (names must not start with "registry/": the base class saves the registry there)."""
        return {}

    def restore_state(self, state: dict[str, np.ndarray]) -> None:
        """Rebuild the state from `checkpoint_state()` output (read-only arrays: copy them)."""

    # -- lifecycle -----------------------------------------------------------------------------
    def bind(self) -> str:
        cfg = self.config.server_config
        port = cfg.port if self.rank == 0 else 0
        host = listen_address(cfg.bind_address, cfg.interface)
        address = f"tcp://{host}:{port}" if port else f"tcp://{host}:*"
        try:
            self.router.bind(address)
        except zmq.ZMQError as exc:
            raise ProtocolError(
                f"server_config: cannot listen on {address} ({exc}); check bind_address and port"
            ) from None
        endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        # Reachable from the other nodes (a wildcard bind_address is no address to connect to).
        endpoint = endpoint.replace(f"//{host}:", f"//{advertised_address(host, cfg.interface)}:", 1)
        self.endpoint = endpoint
        self.endpoints = self.comm.allgather(endpoint) if self.comm is not None else [endpoint]
        if self.public_key is not None:
            self.public_keys = (
                self.comm.allgather(self.public_key) if self.comm is not None else [self.public_key]
            )
        return endpoint

    def write_rendezvous(self) -> None:
        """Publish rank 0's address atomically: the launcher polls for this file."""
        path = self.paths.rendezvous
        tmp = path.with_suffix(".tmp")
        rendezvous: dict[str, Any] = {"address": self.endpoint, "pid": os.getpid()}
        if self.public_key is not None:
            rendezvous["public_key"] = self.public_key.decode()  # MELISSA_SERVER_KEY
        tmp.write_text(json.dumps(rendezvous))
        os.replace(tmp, path)

    def run(self) -> list[Path]:
        if not self.endpoint:
            self.bind()
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        if self.rank == 0:
            self.write_rendezvous()
        else:
            self.up = self.context.socket(zmq.DEALER)
            self.up.setsockopt(zmq.ROUTING_ID, _rank_identity(self.rank))
            self.up.setsockopt(zmq.LINGER, 2000)
            if self.public_key is not None:
                curve.make_client(self.up, self.public_keys[0])
            self.up.connect(self.endpoints[0])
            poller.register(self.up, zmq.POLLIN)
            self.emit_status(time.monotonic())  # introduces this rank to rank 0
        log.info("server rank %d of %d listening on %s", self.rank, self.ranks, self.endpoint)
        next_status = time.monotonic() + _STATUS_PERIOD_S
        interval = self.config.sa_config.checkpoint_interval if self.config.sa_config else 0.0
        periodic = self.checkpointing and interval > 0
        next_checkpoint = time.monotonic() + interval if periodic else float("inf")
        while not self._finish_requested and self.stop_reason is None:
            for sock, _ in poller.poll(timeout=200):
                if sock is self.up and self.up is not None:
                    self.from_rank0(self.up.recv_multipart())
                    continue
                for _ in range(_BATCH):
                    try:
                        frames = self.router.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self.handle(frames)
                    if self._finish_requested:
                        break
            if self._finish_pending and not self._finish_requested:
                self.forward_finish()
            now = time.monotonic()
            if now >= next_status:
                self.emit_status(now)
                next_status = now + _STATUS_PERIOD_S
            if self._to_ranks:
                self._flush_to_ranks()
            if now >= next_checkpoint:
                if self._changed:  # an idle server does not rewrite the same state
                    self.try_checkpoint()
                next_checkpoint = time.monotonic() + interval  # from the end: a slow disk
        if self.stop_reason is not None:
            log.warning("stopping on %s before the study finished", self.stop_reason)
            if self.checkpointing:
                self.try_checkpoint()
            self.close()
            return []
        self.emit_status(time.monotonic())  # the launcher's summary gets the final figures
        files = self.on_finish()
        self.emit({"event": "results_written", "files": [str(f) for f in files]})
        self.close()
        return files

    def close(self) -> None:
        if self.bad.total:
            log.warning("dropped %d bad messages: %s", self.bad.total, dict(self.bad.counts))
        self.router.close()
        if self.up is not None:
            self.up.close()
        self.context.term()

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
            self.dispatch(peer, header, payload)
            self._changed = self._changed or header.kind in _STATE_KINDS
        except ProtocolError as exc:
            self.bad.drop(f"refused {header.kind.name}: {exc}", peer)
            if header.kind in (Kind.HELLO, Kind.DATA, Kind.END):
                self.reply(peer, Kind.ERROR, header, {"error": str(exc)})

    def dispatch(self, peer: bytes, header: Header, payload: zmq.Frame | None) -> None:
        kind = header.kind
        if kind == Kind.DATA:
            self.receive_data(header, payload)
        elif kind == Kind.HELLO:
            self.hello(peer, header, self._json(payload, "HELLO"))
        elif kind == Kind.END:
            self.end(peer, header)
        elif kind == Kind.ATTACH and self.rank == 0:
            self.launcher = peer
            self.emit({"event": "attached", "endpoint": self.endpoint})
            if self._restored is not None:
                self.emit({**self._restored, "complete": sorted(self.complete_everywhere())})
        elif kind == Kind.ABANDON and self.rank == 0 and peer == self.launcher:
            body = self._json(payload, "ABANDON")
            ids = _abandoned_ids(body)
            self.to_ranks([Header(Kind.ABANDON, self.token).encode(), encode_json(body)])
            self.abandon(ids)
        elif kind == Kind.FINISH and self.rank == 0 and peer == self.launcher:
            log.info("launcher asked to finish: %d simulations complete",
                     self.simulations_complete)
            self._finish_pending = True
            self.forward_finish()
        elif kind == Kind.RANK_EVENT and self.rank == 0:
            self.rank_event(self._json(payload, "RANK_EVENT"))
        else:
            raise ProtocolError(f"unexpected {kind.name} message on server rank {self.rank}")

    @staticmethod
    def _json(payload: zmq.Frame | None, what: str) -> dict[str, Any]:
        if payload is None:
            raise ProtocolError(f"{what} without its payload frame")
        return decode_json(payload.buffer, what)

    def hello(self, peer: bytes, header: Header, body: dict[str, Any]) -> None:
        try:
            name = str(body["field"])
            global_size = int(body["global_size"])
            client_ranks = int(body["client_ranks"])
            raw_shape = body.get("shape")
            shape = tuple(int(s) for s in raw_shape) if raw_shape is not None else None
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"HELLO payload lacks or garbles {exc}") from None
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
            "endpoints": self.endpoints,
            "ranges": self.registry.ranges(info, header.simulation_id),
            "nb_time_steps": self.registry.nb_time_steps,
        }
        if self.public_keys:  # encrypted: the client connects to every rank with its key
            welcome["public_keys"] = [key.decode() for key in self.public_keys]
        self.reply(peer, Kind.WELCOME, header, welcome)

    def receive_data(self, header: Header, payload: zmq.Frame | None) -> None:
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

    def end(self, peer: bytes, header: Header) -> None:
        self.silence.heard(header.simulation_id, time.monotonic())
        if self.registry.end(header.simulation_id, header.client_rank):
            log.info("simulation %d complete on rank %d", header.simulation_id, self.rank)
            self.silence.forget(header.simulation_id)
            # Rank 0 (so the launcher) hears of it before the client gets its acknowledgement.
            if self.up is None:
                self.rank_complete(header.simulation_id, self.rank)
            else:
                self.to_rank0({"simulation_complete": header.simulation_id})
        self.reply(peer, Kind.END_ACK, header, None)

    # -- between ranks -------------------------------------------------------------------------
    def to_rank0(self, body: dict[str, Any]) -> None:
        assert self.up is not None
        body["rank"] = self.rank
        self.up.send_multipart([Header(Kind.RANK_EVENT, self.token).encode(), encode_json(body)])

    def from_rank0(self, frames: list[bytes]) -> None:
        try:
            header = decode_header(frames[0], self.token)
        except ProtocolError as exc:
            self.bad.drop(f"from rank 0: {exc}", b"rank0")
            return
        if header.kind == Kind.FINISH:
            self._finish_requested = True
        elif header.kind == Kind.ABANDON and len(frames) == 2:
            try:
                self.abandon(_abandoned_ids(decode_json(frames[1], "ABANDON")))
                self._changed = True
            except ProtocolError as exc:
                self.bad.drop(f"from rank 0: {exc}", b"rank0")

    def rank_event(self, body: dict[str, Any]) -> None:
        try:
            rank = int(body["rank"])
            if not 0 < rank < self.ranks:
                raise ValueError(f"rank {rank}")
            if "simulation_complete" in body:
                self.rank_complete(int(body["simulation_complete"]), rank)
            if "status" in body:
                status = dict(body["status"])
                status["silent_s"] = {str(int(s)): float(age)
                                      for s, age in dict(status.get("silent_s", {})).items()}
                self._rank_status[rank] = status
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"RANK_EVENT payload lacks or garbles {exc}") from None

    def forward_finish(self) -> None:
        """Rank 0 finishes once every rank can be told to (its channel has said hello): a
        ROUTER silently drops messages to a peer it has not seen yet."""
        if len(self._rank_status) < self.ranks - 1:
            return
        self.to_ranks([Header(Kind.FINISH, self.token).encode()])
        self._finish_requested = True

    def to_ranks(self, frames: list[bytes]) -> None:
        """Rank 0 -> every other rank, in order; held back until every rank's channel has said
        hello (a ROUTER silently drops messages to a peer it has not seen yet)."""
        self._to_ranks.append(frames)
        self._flush_to_ranks()

    def _flush_to_ranks(self) -> None:
        if len(self._rank_status) < self.ranks - 1:
            return
        for held in self._to_ranks:
            for rank in range(1, self.ranks):
                self.router.send_multipart([_rank_identity(rank), *held])
        self._to_ranks.clear()

    @property
    def simulations_complete(self) -> int:
        """Simulations whose data every rank holds (meaningful on rank 0)."""
        return len(self.complete_everywhere())

    def complete_everywhere(self) -> set[int]:
        """Rank 0: the simulations whose data every rank holds."""
        return {s for s, done in self._complete_on.items() if len(done) == self.ranks}

    def rank_complete(self, simulation_id: int, rank: int) -> None:
        done = self._complete_on.setdefault(simulation_id, set())
        done.add(rank)
        if len(done) == self.ranks:
            log.info("simulation %d complete", simulation_id)
            self.emit({"event": "simulation_complete", "simulation_id": simulation_id})

    def reply(self, peer: bytes, kind: Kind, to: Header, body: dict[str, Any] | None) -> None:
        header = Header(kind, self.token, to.simulation_id, to.attempt, to.client_rank,
                        to.time_step, to.field_id)
        frames = [peer, header.encode()] + ([encode_json(body)] if body is not None else [])
        self.router.send_multipart(frames)

    # -- launcher channel ----------------------------------------------------------------------
    def emit(self, event: dict[str, Any]) -> None:
        if self.launcher is None:
            return
        self.router.send_multipart(
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
        }

    def emit_status(self, now: float) -> None:
        """Rank r > 0 reports to rank 0; rank 0 adds every rank's figures up for the launcher."""
        mine = self.local_status(now)
        if self.up is not None:
            self.to_rank0({"status": mine})
            return
        ranks = [mine, *self._rank_status.values()]
        self.report_silent(ranks)
        chunks: Counter[str] = Counter()
        for status in ranks:
            chunks.update(status.get("chunks_received", {}))
        complete = self.complete_everywhere()
        self.emit({
            "event": "status",
            "messages": sum(int(r.get("messages", 0)) for r in ranks),
            "bytes": sum(int(r.get("bytes", 0)) for r in ranks),
            "bad_messages": sum(int(r.get("bad_messages", 0)) for r in ranks),
            "ingest_s": max(float(r.get("ingest_s", 0.0)) for r in ranks),
            "simulations_complete": len(complete),
            "chunks_received": {s: n for s, n in chunks.items() if int(s) not in complete},
        })

    def report_silent(self, statuses: list[dict[str, Any]]) -> None:
        """Rank 0: tell the launcher of simulations silent on every rank for simulation_timeout
        seconds, again after each further timeout of silence (SilenceWatch; ranks r > 0's ages
        are at most one status period old)."""
        attempts = {s: sim.attempt for s, sim in self.registry.simulations.items()}
        for sim, age in self.silence.newly_silent([s.get("silent_s", {}) for s in statuses],
                                                  attempts):
            log.warning("simulation %d (attempt %d) sent nothing for %.0f s "
                        "(study_options.simulation_timeout)", sim, attempts[sim], age)
            self.emit({"event": "simulation_silent", "simulation_id": sim, "silent_s": age})

    # -- abandoned simulations -----------------------------------------------------------------
    def abandon(self, simulation_ids: list[int]) -> None:
        """Refuse these simulations for good (the launcher gave up on them)."""
        new = self.registry.abandon(simulation_ids)
        for simulation_id in new:
            self.silence.forget(simulation_id)
        if new:
            log.info("abandoned simulations %s: their messages are refused from now on", new)
            self.on_abandon(new)

    # -- checkpoints ---------------------------------------------------------------------------
    def stop(self, reason: str) -> None:
        """Checkpoint and leave the receive loop after the current message (safe to call from a
        signal handler: it only sets a flag)."""
        self.stop_reason = reason

    def checkpoint(self) -> Path:
        """Write this rank's whole state (registry and `checkpoint_state()`) to a new checkpoint."""
        state = self.checkpoint_state()
        clash = sorted(name for name in state if name.startswith(_REGISTRY))
        if clash:
            raise CheckpointError(f"checkpoint_state() names {clash}: {_REGISTRY!r} is reserved")
        meta, registry_arrays = self.registry.state()
        arrays = {**{_REGISTRY + k: v for k, v in registry_arrays.items()}, **state}
        written = write_checkpoint(self.paths, self.rank, self.ranks, self._checkpoint_sequence,
                                   arrays, {"registry": meta, "server": type(self).__name__})
        self._checkpoint_sequence += 1
        self._changed = False
        log.info("checkpoint %s: %.1f MB in %.3f s (%.0f MB/s)", written.path,
                 written.nbytes / 1e6, written.seconds,
                 written.nbytes / 1e6 / max(written.seconds, 1e-9))
        return written.path

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
        found, error = None, None
        if self.checkpointing:
            try:
                found = latest_checkpoint(self.paths, self.rank)
                if found is not None:
                    self._restore(found)
            except CheckpointError as exc:
                error = f"server rank {self.rank}: {exc}"
            self._checkpoint_sequence = next_sequence(self.paths, self.rank)
        mine = (error, str(found.path) if found else None, self.registry.completed)
        everyone = self.comm.allgather(mine) if self.comm is not None else [mine]
        errors = [e for e, _, _ in everyone if e is not None]
        if errors:
            raise CheckpointError("; ".join(errors))
        for rank, (_, _, complete) in enumerate(everyone):
            for simulation_id in complete:
                self._complete_on.setdefault(simulation_id, set()).add(rank)
        if any(path is not None for _, path, _ in everyone):
            self._restored = {"event": "restored", "checkpoint": everyone[0][1]}
        return found

    def _restore(self, checkpoint: Checkpoint) -> None:
        if checkpoint.ranks != self.ranks:
            raise CheckpointError(
                f"{checkpoint.path} was written by a server of {checkpoint.ranks} ranks, this one "
                f"has {self.ranks} (server_config.ranks): restart with {checkpoint.ranks} ranks, "
                f"or delete {self.paths.checkpoints} to start the study over"
            )
        registry = {k[len(_REGISTRY):]: v for k, v in checkpoint.arrays.items()
                    if k.startswith(_REGISTRY)}
        self.registry.restore(checkpoint.meta.get("registry", {}), registry)
        try:
            self.restore_state({k: v for k, v in checkpoint.arrays.items()
                                if not k.startswith(_REGISTRY)})
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{checkpoint.path} does not fit this study's config: {exc}"
                                  ) from None
        log.info("restored %s (written %s): %d simulations known, %d complete on this rank",
                 checkpoint.path, time.strftime("%Y-%m-%d %H:%M:%S",
                                                time.localtime(checkpoint.wall_time)),
                 len(self.registry.simulations), len(self.registry.completed))


def _abandoned_ids(body: dict[str, Any]) -> list[int]:
    """The simulation ids of an ABANDON payload {"simulations": [ids]}."""
    ids = body.get("simulations")
    if not isinstance(ids, list) or not all(type(i) is int and i >= 0 for i in ids):
        raise ProtocolError(f"ABANDON payload needs \"simulations\": [ids >= 0], got {ids!r}")
    return ids
