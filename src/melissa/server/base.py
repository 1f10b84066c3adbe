"""The server's receive loop: sockets, handshake, validation, completion, launcher channel.

A concrete server (sensitivity analysis, deep learning) subclasses `Server` and fills three hooks:
`on_field` (a field's size became known), `on_data` (a new, validated chunk) and `on_finish`
(write results). Everything about the wire and about exactly-once delivery lives here.
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
    cell_ranges,
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
    """Rank `rank` of a server of `ranks` ranks (rank 0 also does the handshake and control)."""

    def __init__(
        self, config: StudyConfig, paths: StudyPaths, token: bytes, rank: int = 0, ranks: int = 1
    ) -> None:
        self.config = config
        self.paths = paths
        self.token = token
        self.rank, self.ranks = rank, ranks
        self.registry = Registry(
            config.study_options.field_names, config.study_options.nb_time_steps, rank, ranks
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
        self._finish_requested = False

    # -- hooks ---------------------------------------------------------------------------------
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
        self.write_rendezvous()
        log.info("server rank %d of %d listening on %s", self.rank, self.ranks, self.endpoint)
        next_status = time.monotonic() + _STATUS_PERIOD_S
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        while not self._finish_requested:
            if poller.poll(timeout=200):
                for _ in range(_BATCH):
                    try:
                        frames = self.router.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self.handle(frames)
                    if self._finish_requested:
                        break
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
                     len(self.registry.completed))
            self._finish_requested = True
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
            "endpoints": [self.endpoint],
            "ranges": cell_ranges(global_size, self.ranks),
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
            log.info("simulation %d complete", header.simulation_id)
            # The launcher hears of completion before the client gets its acknowledgement.
            self.emit({"event": "simulation_complete", "simulation_id": header.simulation_id})
        self.reply(peer, Kind.END_ACK, header, None)

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

    def emit_status(self, now: float) -> None:
        first = self.stats.first_data
        self.emit({
            "event": "status",
            "messages": self.stats.messages,
            "bytes": self.stats.bytes,
            "bad_messages": self.bad.total,
            "ingest_s": 0.0 if first is None else now - first,  # since the first data
            "simulations_complete": len(self.registry.completed),
            "chunks_received": {s.simulation_id: s.chunks_received
                         for s in self.registry.simulations.values() if not s.complete},
        })
