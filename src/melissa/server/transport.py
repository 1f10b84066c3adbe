"""One server rank's sockets: the ROUTER that clients, the launcher and the other ranks talk to,
and on rank r > 0 its DEALER channel to rank 0 (so one poll loop serves everything)."""

from __future__ import annotations

from typing import Any

import zmq

from melissa.config import StudyConfig
from melissa.errors import ProtocolError
from melissa.protocol import Header, Kind, curve, encode_json
from melissa.protocol.address import advertised_address, listen_address

_RECEIVE_QUEUE = 16  # messages queued per peer


def rank_identity(rank: int) -> bytes:
    """ZeroMQ routing id of rank `rank`'s channel to rank 0."""
    return f"melissa-rank-{rank}".encode()


class Transport:
    """`comm` (an mpi4py communicator) is only needed with more than one rank: `bind` shares
    every rank's address (and CURVE public key) with all of them."""

    def __init__(self, config: StudyConfig, rank: int, comm: Any = None) -> None:
        self.config = config
        self.rank = rank
        self.comm = comm
        self.context: zmq.Context[Any] = zmq.Context()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.MAXMSGSIZE, config.server_config.max_message_bytes)
        self.router.setsockopt(zmq.LINGER, 2000)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 0)  # replies to vanished peers are dropped
        # Backpressure: a rank that falls behind its clients holds at most this many messages
        # per client (ZeroMQ's default, 1000 chunks of MBs each, let a starved server queue GBs);
        # beyond, the client's sends wait.
        self.router.setsockopt(zmq.RCVHWM, _RECEIVE_QUEUE)
        # server_config.encryption: this rank's CURVE public key (Z85), and every rank's.
        self.public_key = (
            curve.make_server(self.router) if config.server_config.encryption else None
        )
        self.public_keys: list[bytes] = []
        self.endpoint = ""
        self.endpoints: list[str] = []  # of every rank, in rank order
        self.up: zmq.Socket[Any] | None = None  # rank r > 0: its channel to rank 0

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
        bound_port = self.router.getsockopt_string(zmq.LAST_ENDPOINT).rpartition(":")[2]
        # Reachable from the other nodes (a wildcard bind_address is no address to connect to).
        endpoint = f"tcp://{advertised_address(host, cfg.interface)}:{bound_port}"
        self.endpoint = endpoint
        self.endpoints = self.comm.allgather(endpoint) if self.comm is not None else [endpoint]
        if self.public_key is not None:
            self.public_keys = (
                self.comm.allgather(self.public_key) if self.comm is not None else [self.public_key]
            )
        return endpoint

    def connect_up(self) -> zmq.Socket[Any]:
        """Rank r > 0: open its channel to rank 0."""
        up = self.context.socket(zmq.DEALER)
        up.setsockopt(zmq.ROUTING_ID, rank_identity(self.rank))
        up.setsockopt(zmq.LINGER, 2000)
        if self.public_key is not None:
            curve.make_client(up, self.public_keys[0])
        up.connect(self.endpoints[0])
        self.up = up
        return up

    def send(self, frames: list[bytes]) -> None:
        """Frames through the ROUTER; the first is the peer's routing id."""
        self.router.send_multipart(frames)

    def send_up(self, frames: list[bytes]) -> None:
        assert self.up is not None
        self.up.send_multipart(frames)

    def reply(self, peer: bytes, kind: Kind, token: bytes, to: Header,
              body: dict[str, Any] | None) -> None:
        """Answer `to` with a header that echoes its simulation, attempt, rank, step, field."""
        header = Header(kind, token, to.simulation_id, to.attempt, to.client_rank,
                        to.time_step, to.field_id)
        self.send([peer, header.encode()] + ([encode_json(body)] if body is not None else []))

    def close(self) -> None:
        self.router.close()
        if self.up is not None:
            self.up.close()
        self.context.term()
