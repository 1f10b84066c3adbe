"""The server's receive loop: sockets, handshake, validation, completion, launcher channel.

A concrete server (sensitivity analysis, deep learning) subclasses `Server` and fills three hooks:
`on_field` (a field's size became known), `on_data` (a new, validated chunk) and `on_finish`
(write results); `on_hello` sees a HELLO's optional keys (deep learning reads the simulation's
parameters there). Everything about the wire and about exactly-once delivery lives here.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from melissa.config import StudyConfig
from melissa.errors import ProtocolError
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
from melissa.server.registry import FieldInfo, Registry

log = logging.getLogger("melissa.server")

_STATUS_PERIOD_S = 1.0
_MAX_BAD_MESSAGE_LINES = 1000  # beyond this, bad messages are only counted (a flood must not fill the disk)
_BATCH = 256  # messages handled between two checks of timers


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
        self.launcher: bytes | None = None
        self.endpoint = ""
        self.endpoints: list[str] = []  # of every rank, in rank order
        self.up: zmq.Socket[Any] | None = None  # rank r > 0: its channel to rank 0
        self._complete_on: dict[int, set[int]] = {}  # rank 0: simulation -> ranks done with it
        self._rank_status: dict[int, dict[str, Any]] = {}  # rank 0: latest status of each rank
        self._finish_pending = False  # rank 0: FINISH received, not yet forwarded to all ranks
        self._finish_requested = False

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

    # -- lifecycle -----------------------------------------------------------------------------
    def bind(self) -> str:
        cfg = self.config.server_config
        port = cfg.port if self.rank == 0 else 0
        address = f"tcp://{cfg.bind_address}:{port}" if port else f"tcp://{cfg.bind_address}:*"
        try:
            self.router.bind(address)
        except zmq.ZMQError as exc:
            raise ProtocolError(
                f"server_config: cannot listen on {address} ({exc}); check bind_address and port"
            ) from None
        endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        if cfg.bind_address in ("0.0.0.0", "*"):
            endpoint = endpoint.replace("0.0.0.0", socket.getfqdn(), 1)
        self.endpoint = endpoint
        self.endpoints = self.comm.allgather(endpoint) if self.comm is not None else [endpoint]
        return endpoint

    def write_rendezvous(self) -> None:
        """Publish rank 0's address atomically: the launcher polls for this file."""
        path = self.paths.rendezvous
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"address": self.endpoint, "pid": os.getpid()}))
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
            self.up.connect(self.endpoints[0])
            poller.register(self.up, zmq.POLLIN)
            self.emit_status(time.monotonic())  # introduces this rank to rank 0
        log.info("server rank %d of %d listening on %s", self.rank, self.ranks, self.endpoint)
        next_status = time.monotonic() + _STATUS_PERIOD_S
        while not self._finish_requested:
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
        if self.registry.end(header.simulation_id, header.client_rank):
            log.info("simulation %d complete on rank %d", header.simulation_id, self.rank)
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

    def rank_event(self, body: dict[str, Any]) -> None:
        try:
            rank = int(body["rank"])
            if not 0 < rank < self.ranks:
                raise ValueError(f"rank {rank}")
            if "simulation_complete" in body:
                self.rank_complete(int(body["simulation_complete"]), rank)
            if "status" in body:
                self._rank_status[rank] = dict(body["status"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"RANK_EVENT payload lacks or garbles {exc}") from None

    def forward_finish(self) -> None:
        """Rank 0 finishes once every rank can be told to (its channel has said hello): a
        ROUTER silently drops messages to a peer it has not seen yet."""
        if len(self._rank_status) < self.ranks - 1:
            return
        for rank in range(1, self.ranks):
            self.router.send_multipart(
                [_rank_identity(rank), Header(Kind.FINISH, self.token).encode()]
            )
        self._finish_requested = True

    @property
    def simulations_complete(self) -> int:
        """Simulations whose data every rank holds (meaningful on rank 0)."""
        return sum(len(done) == self.ranks for done in self._complete_on.values())

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
        }

    def emit_status(self, now: float) -> None:
        """Rank r > 0 reports to rank 0; rank 0 adds every rank's figures up for the launcher."""
        mine = self.local_status(now)
        if self.up is not None:
            self.to_rank0({"status": mine})
            return
        ranks = [mine, *self._rank_status.values()]
        chunks: Counter[str] = Counter()
        for status in ranks:
            chunks.update(status.get("chunks_received", {}))
        complete = {s for s, done in self._complete_on.items() if len(done) == self.ranks}
        self.emit({
            "event": "status",
            "messages": sum(int(r.get("messages", 0)) for r in ranks),
            "bytes": sum(int(r.get("bytes", 0)) for r in ranks),
            "bad_messages": sum(int(r.get("bad_messages", 0)) for r in ranks),
            "ingest_s": max(float(r.get("ingest_s", 0.0)) for r in ranks),
            "simulations_complete": len(complete),
            "chunks_received": {s: n for s, n in chunks.items() if int(s) not in complete},
        })
