"""The launcher's end of the control channel to server rank 0 (ATTACH, EVENTs, ABANDON, FINISH)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import zmq

from melissa.errors import ProtocolError, StudyError
from melissa.protocol import Header, Kind, curve, decode_header, decode_json, encode_json
from melissa.protocol.events import Attached, Event, ServerStatus, decode_event

log = logging.getLogger("melissa.launcher")


class ServerChannel:
    def __init__(self, address: str, token: bytes, server_key: str | None = None) -> None:
        """`server_key`: the "public_key" of server.json, when the server encrypts (CURVE)."""
        self.address = address
        self.token = token
        self.context: zmq.Context[Any] = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 1000)
        if server_key is not None:
            curve.make_client(self.socket, curve.public_key(server_key, "server.json public_key"))
        self.socket.connect(address)

    def attach(self, timeout_s: float) -> list[Event]:
        """Register with the server. Returns the events that followed its answer up to its
        first status event: a server restored from a checkpoint says so ("restored") before."""
        self.socket.send(Header(Kind.ATTACH, self.token).encode())
        deadline = time.monotonic() + timeout_s
        after: list[Event] | None = None  # events since "attached"
        while time.monotonic() < deadline:
            for event in self.wait(deadline - time.monotonic()):
                if after is not None:
                    after.append(event)
                    if isinstance(event, ServerStatus):
                        return after
                elif isinstance(event, Attached):
                    after = []
        if after is not None:
            return after
        raise StudyError(
            f"the server at {self.address} did not answer within {timeout_s:g} s "
            "(launcher_config.server_timeout); see logs/server.log"
        )

    def events(self) -> list[Event]:
        """Every event that has arrived, without waiting."""
        return self.wait(0)

    def wait(self, timeout_s: float) -> list[Event]:
        """Events that arrive within `timeout_s` (returns as soon as one batch arrived)."""
        received: list[Event] = []
        timeout_ms = int(timeout_s * 1000)
        while self.socket.poll(timeout_ms):
            frames = self.socket.recv_multipart()
            try:
                header = decode_header(frames[0], self.token)
                if header.kind != Kind.EVENT or len(frames) != 2:
                    raise ProtocolError(f"unexpected {header.kind.name} on the control channel")
                received.append(decode_event(decode_json(frames[1], "EVENT")))
            except ProtocolError as exc:
                log.warning("ignored a control message from the server: %s", exc)
            timeout_ms = 0
        return received

    def abandon(self, simulations: Sequence[int]) -> None:
        """The launcher gave up on these simulations: the server frees and refuses them."""
        self.socket.send_multipart([Header(Kind.ABANDON, self.token).encode(),
                                    encode_json({"simulations": list(simulations)})])

    def finish(self) -> None:
        self.socket.send(Header(Kind.FINISH, self.token).encode())

    def close(self) -> None:
        self.socket.close()
        self.context.term()
