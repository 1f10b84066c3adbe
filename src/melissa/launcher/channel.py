"""The launcher's end of the control channel to server rank 0 (ATTACH, EVENTs, FINISH)."""

from __future__ import annotations

import logging
from typing import Any

import zmq

from melissa.errors import ProtocolError, StudyError
from melissa.protocol import Header, Kind, decode_header, decode_json

log = logging.getLogger("melissa.launcher")


class ServerChannel:
    def __init__(self, address: str, token: bytes) -> None:
        self.address = address
        self.token = token
        self.context: zmq.Context[Any] = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 1000)
        self.socket.connect(address)

    def attach(self, timeout_s: float) -> None:
        """Register with the server; returns once it answered."""
        self.socket.send(Header(Kind.ATTACH, self.token).encode())
        for event in self.wait(timeout_s):
            if event.get("event") == "attached":
                return
        raise StudyError(
            f"the server at {self.address} did not answer within {timeout_s:g} s "
            "(launcher_config.server_timeout); see logs/server.log"
        )

    def events(self) -> list[dict[str, Any]]:
        """Every event that has arrived, without waiting."""
        return self.wait(0)

    def wait(self, timeout_s: float) -> list[dict[str, Any]]:
        """Events that arrive within `timeout_s` (returns as soon as one batch arrived)."""
        received: list[dict[str, Any]] = []
        timeout_ms = int(timeout_s * 1000)
        while self.socket.poll(timeout_ms):
            frames = self.socket.recv_multipart()
            try:
                header = decode_header(frames[0], self.token)
                if header.kind != Kind.EVENT or len(frames) != 2:
                    raise ProtocolError(f"unexpected {header.kind.name} on the control channel")
                received.append(decode_json(frames[1], "EVENT"))
            except ProtocolError as exc:
                log.warning("ignored a control message from the server: %s", exc)
            timeout_ms = 0
        return received

    def finish(self) -> None:
        self.socket.send(Header(Kind.FINISH, self.token).encode())

    def close(self) -> None:
        self.socket.close()
        self.context.term()
