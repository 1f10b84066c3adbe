"""One simulation's connection to the Melissa server (what melissa.client's functions drive).

Light on purpose: standard library, NumPy and pyzmq only (thousands of short clients import it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from melissa.errors import ClientError, ProtocolError
from melissa.protocol import (
    Header,
    Kind,
    Piece,
    curve,
    decode_header,
    decode_json,
    dtype_code,
    encode_json,
    split,
    token_from_hex,
)

DEFAULT_TIMEOUT_S = 60.0
# Below this size zmq copies anyway; above it the payload is sent zero-copy and send() waits until
# zmq no longer needs the buffer, so the simulation may overwrite its array as soon as send returns.
_ZERO_COPY_BYTES = 64 * 1024


@dataclass(frozen=True)
class ClientEnvironment:
    """What the launcher gives every client job (docs/architecture.md, 'Client side')."""

    server: str
    simulation_id: int
    token: bytes
    attempt: int
    timeout_s: float
    # MELISSA_PARAMETERS: the simulation's parameter values, forwarded in HELLO (deep learning).
    parameters: dict[str, float] | None = None
    # MELISSA_SERVER_KEY: server rank 0's CURVE public key, when the study is encrypted.
    server_key: bytes | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ClientEnvironment:
        env = os.environ if environ is None else environ
        missing = [
            k for k in ("MELISSA_SERVER", "MELISSA_SIMULATION_ID", "MELISSA_STUDY_TOKEN")
            if not env.get(k)
        ]
        if missing:
            raise ClientError(
                f"{', '.join(missing)} not set: run this simulation through melissa-launcher, "
                "which sets MELISSA_SERVER, MELISSA_SIMULATION_ID and MELISSA_STUDY_TOKEN"
            )
        try:
            token = token_from_hex(env["MELISSA_STUDY_TOKEN"])
        except ProtocolError as exc:
            raise ClientError(str(exc)) from None
        return cls(
            server=env["MELISSA_SERVER"],
            simulation_id=_int_env(env, "MELISSA_SIMULATION_ID", None),
            token=token,
            attempt=_int_env(env, "MELISSA_ATTEMPT", 0),
            timeout_s=_float_env(env, "MELISSA_TIMEOUT", DEFAULT_TIMEOUT_S),
            parameters=_parameters_env(env),
            server_key=_server_key_env(env),
        )


def _server_key_env(env: Mapping[str, str]) -> bytes | None:
    text = env.get("MELISSA_SERVER_KEY")
    if not text:
        return None
    try:
        curve.require_curve("MELISSA_SERVER_KEY (an encrypted study)")
        return curve.public_key(text, "MELISSA_SERVER_KEY")
    except ProtocolError as exc:
        raise ClientError(str(exc)) from None


def _parameters_env(env: Mapping[str, str]) -> dict[str, float] | None:
    text = env.get("MELISSA_PARAMETERS")
    if text is None:
        return None
    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        values = None
    if not isinstance(values, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values()
    ):
        raise ClientError(
            f"MELISSA_PARAMETERS={text!r} is not a JSON object of numbers (the launcher sets it)"
        )
    return {str(k): float(v) for k, v in values.items()}


def _int_env(env: Mapping[str, str], key: str, default: int | None) -> int:
    text = env.get(key)
    if text is None and default is not None:
        return default
    try:
        value = int(str(text))
    except ValueError:
        raise ClientError(f"{key}={text!r} is not an integer") from None
    if value < 0:
        raise ClientError(f"{key}={value} must not be negative")
    return value


def _float_env(env: Mapping[str, str], key: str, default: float) -> float:
    text = env.get(key)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ClientError(f"{key}={text!r} is not a number of seconds") from None
    if not value > 0:
        raise ClientError(f"{key}={text!r} must be a positive number of seconds")
    return value


@dataclass
class _Field:
    name: str
    field_id: int
    local_size: int
    pieces: list[Piece]
    nb_time_steps: int
    steps_sent: int = 0


@dataclass
class Session:
    """The client side of the protocol for one rank of one simulation."""

    env: ClientEnvironment
    rank: int = 0
    ranks: int = 1
    _context: zmq.Context[Any] = field(default_factory=zmq.Context)
    _sockets: dict[int, zmq.Socket[Any]] = field(default_factory=dict)
    _endpoints: list[str] = field(default_factory=list)
    _server_keys: list[bytes] = field(default_factory=list)  # per server rank (encrypted)
    _fields: dict[str, _Field] = field(default_factory=dict)
    _finalized: bool = False

    # -- sockets ------------------------------------------------------------------------------
    def _socket(self, server_rank: int) -> zmq.Socket[Any]:
        sock = self._sockets.get(server_rank)
        if sock is None:
            address = self.env.server if server_rank == 0 else self._endpoints[server_rank]
            sock = self._context.socket(zmq.DEALER)
            timeout_ms = int(self.env.timeout_s * 1000)
            sock.setsockopt(zmq.SNDTIMEO, timeout_ms)  # a dead server must not block send forever
            sock.setsockopt(zmq.LINGER, timeout_ms)
            if self.env.server_key is not None:
                key = self.env.server_key if server_rank == 0 else self._server_keys[server_rank]
                curve.make_client(sock, key)
            try:
                sock.connect(address)
            except zmq.ZMQError as exc:
                sock.close(0)
                raise ClientError(f"cannot connect to the Melissa server at {address!r}: {exc}")
            self._sockets[server_rank] = sock
        return sock

    def _header(self, kind: Kind, **fields: Any) -> bytes:
        return Header(
            kind, self.env.token, self.env.simulation_id, self.env.attempt, self.rank, **fields
        ).encode()

    def _send(self, server_rank: int, frames: list[Any], what: str) -> None:
        try:
            self._socket(server_rank).send_multipart(frames)
        except zmq.Again:
            raise ClientError(
                f"{what}: the Melissa server at {self._address(server_rank)} accepted nothing "
                f"for {self.env.timeout_s:g} s (MELISSA_TIMEOUT); is the study still running?"
            ) from None

    def _address(self, server_rank: int) -> str:
        return self.env.server if server_rank == 0 else self._endpoints[server_rank]

    def _receive(self, server_rank: int, expected: Kind, what: str) -> dict[str, Any]:
        """Wait for the server's answer; an ERROR answer or a timeout raises ClientError."""
        sock = self._socket(server_rank)
        if not sock.poll(int(self.env.timeout_s * 1000)):
            raise ClientError(
                f"{what}: no answer from the Melissa server at {self._address(server_rank)} "
                f"within {self.env.timeout_s:g} s (MELISSA_TIMEOUT); is the study running, "
                "and are MELISSA_SERVER and MELISSA_STUDY_TOKEN right (and MELISSA_SERVER_KEY, "
                "set exactly when the study is encrypted)?"
            )
        header, payload = self._decode(sock.recv_multipart(), what)
        if header.kind == Kind.ERROR:
            raise ClientError(f"{what}: refused by the server: {payload.get('error', '?')}")
        if header.kind != expected:
            raise ClientError(f"{what}: unexpected {header.kind.name} from the server")
        return payload

    def _decode(self, frames: list[bytes], what: str) -> tuple[Header, dict[str, Any]]:
        try:
            header = decode_header(frames[0], self.env.token)
            payload = decode_json(frames[1], what) if len(frames) > 1 else {}
        except (ProtocolError, IndexError) as exc:
            raise ClientError(f"{what}: garbled answer from the server: {exc}") from None
        return header, payload

    def _check_errors(self) -> None:
        """Raise on an ERROR the server sent about an earlier DATA message (non-blocking)."""
        for sock in self._sockets.values():
            while sock.poll(0):
                header, payload = self._decode(sock.recv_multipart(), "send")
                if header.kind == Kind.ERROR:
                    raise ClientError(f"refused by the server: {payload.get('error', '?')}")

    # -- API ----------------------------------------------------------------------------------
    def init(
        self,
        name: str,
        local_size: int,
        offset: int,
        global_size: int,
        shape: tuple[int, ...] | None,
    ) -> None:
        if self._finalized:
            raise ClientError(f"init({name!r}) after finalize()")
        if name in self._fields:
            raise ClientError(f"field {name!r} initialised twice")
        hello = {
            "field": name,
            "global_size": global_size,
            "client_ranks": self.ranks,
            "shape": list(shape) if shape is not None else None,
        }
        if self.env.parameters is not None:
            hello["parameters"] = self.env.parameters
        what = f"init({name!r})"
        frames = [self._header(Kind.HELLO, offset=offset, count=local_size), encode_json(hello)]
        # Rank 0 first: it is the authority on the field's size; then every other server rank,
        # so each knows this client's layout before its DATA arrives.
        self._send(0, frames, what)
        welcome = self._receive(0, Kind.WELCOME, what)
        try:
            endpoints = [str(e) for e in welcome["endpoints"]]
            ranges = [(int(a), int(b)) for a, b in welcome["ranges"]]
            field_id, nb_steps = int(welcome["field_id"]), int(welcome["nb_time_steps"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ClientError(f"{what}: malformed WELCOME from the server: {exc}") from None
        if not endpoints or len(endpoints) != len(ranges):
            raise ClientError(f"{what}: malformed WELCOME: {len(endpoints)} endpoints for "
                              f"{len(ranges)} cell ranges")
        self._endpoints = endpoints
        self._server_keys = self._welcome_keys(welcome, len(endpoints), what)
        for server_rank in range(1, len(endpoints)):
            self._send(server_rank, frames, what)
        for server_rank in range(1, len(endpoints)):
            self._receive(server_rank, Kind.WELCOME, what)
        pieces = split(offset, local_size, ranges)
        self._fields[name] = _Field(name, field_id, local_size, pieces, nb_steps)

    def _welcome_keys(self, welcome: dict[str, Any], ranks: int, what: str) -> list[bytes]:
        """The CURVE keys of the server ranks, from WELCOME (encrypted studies only)."""
        if self.env.server_key is None:
            return []
        keys = welcome.get("public_keys")
        if not isinstance(keys, list) or len(keys) != ranks:
            raise ClientError(f"{what}: malformed WELCOME: no public key for each of the "
                              f"{ranks} server ranks (MELISSA_SERVER_KEY is set)")
        try:
            return [curve.public_key(str(k), "WELCOME public key") for k in keys]
        except ProtocolError as exc:
            raise ClientError(f"{what}: malformed WELCOME: {exc}") from None

    def send(self, name: str, data: Any) -> None:
        fld = self._fields.get(name)
        if fld is None:
            if self._finalized:
                raise ClientError(f"send({name!r}) after finalize()")
            raise ClientError(f"send({name!r}) before init({name!r})")
        array = _as_payload(name, data, fld.local_size)
        if fld.steps_sent >= fld.nb_time_steps:
            raise ClientError(
                f"send({name!r}): all {fld.nb_time_steps} time steps (study_options.nb_time_steps)"
                " were already sent"
            )
        self._check_errors()
        code = dtype_code(array.dtype)
        zero_copy = array.nbytes >= _ZERO_COPY_BYTES
        trackers = []
        for piece in fld.pieces:
            header = self._header(
                Kind.DATA,
                time_step=fld.steps_sent,
                field_id=fld.field_id,
                offset=piece.global_offset,
                count=piece.count,
                dtype=code,
            )
            chunk = array[piece.local_start : piece.local_start + piece.count]
            try:
                tracker = self._socket(piece.server_rank).send_multipart(
                    [header, chunk.data], copy=not zero_copy, track=zero_copy
                )
            except zmq.Again:
                raise ClientError(
                    f"send({name!r}): the Melissa server accepted nothing for "
                    f"{self.env.timeout_s:g} s (MELISSA_TIMEOUT); is the study still running?"
                ) from None
            if tracker is not None:
                trackers.append(tracker)
        try:
            for tracker in trackers:
                tracker.wait(self.env.timeout_s)
        except zmq.NotDone:
            raise ClientError(
                f"send({name!r}): the Melissa server took no data for {self.env.timeout_s:g} s "
                "(MELISSA_TIMEOUT); is the study still running?"
            ) from None
        fld.steps_sent += 1

    def finalize(self) -> None:
        if self._finalized:
            raise ClientError("finalize() called twice")
        short = [f for f in self._fields.values() if f.steps_sent != f.nb_time_steps]
        if short:
            f = short[0]
            raise ClientError(
                f"finalize() after {f.steps_sent} of the {f.nb_time_steps} time steps of field "
                f"{f.name!r} (study_options.nb_time_steps); the simulation is not complete"
            )
        self._check_errors()
        # Every server rank learns that this client rank is done, even one it sent nothing.
        targets = range(len(self._endpoints)) if self._endpoints else [0]
        for server_rank in targets:
            self._send(server_rank, [self._header(Kind.END, count=self.ranks)], "finalize()")
        for server_rank in targets:
            self._receive(server_rank, Kind.END_ACK, "finalize()")
        self._finalized = True
        self._fields.clear()
        self.close()

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
        self._context.term()


def _as_payload(name: str, data: Any, local_size: int) -> np.ndarray:
    if not isinstance(data, np.ndarray):
        raise ClientError(f"send({name!r}): expected a NumPy array, got {type(data).__name__}")
    if data.dtype.kind != "f" or data.dtype.itemsize not in (4, 8):
        raise ClientError(
            f"send({name!r}): dtype {data.dtype} not supported; send float64 or float32"
        )
    if data.size != local_size:
        raise ClientError(
            f"send({name!r}): array has {data.size} values, init declared local_size={local_size}"
        )
    # The wire is little-endian; for the usual native, C-contiguous array this is a view.
    return np.ascontiguousarray(data.reshape(-1), dtype=data.dtype.newbyteorder("<"))
