"""Wire format: one fixed-size little-endian header frame, then at most one payload frame.

The header layout (version 1, 72 bytes) is documented in docs/protocol.md and pinned by golden
byte vectors in tests/unit/test_protocol.py. Control messages (HELLO, WELCOME, ERROR, ATTACH,
EVENT, ...) carry a small UTF-8 JSON object as payload; DATA carries the raw array bytes, never
copied on either side.

This module is on the client's import path: standard library and NumPy only.
"""

from __future__ import annotations

import enum
import hmac
import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from melissa.errors import ProtocolError

MAGIC = b"MLSA"
VERSION = 1
TOKEN_BYTES = 16

# magic, version, kind, token, simulation id, attempt, client rank, time step, field id,
# offset, count, dtype, 7 reserved bytes (zero).
_HEADER = struct.Struct("<4sHH16sqIIIIQQB7x")
HEADER_SIZE = _HEADER.size


class Kind(enum.IntEnum):
    """Message kinds. Values are part of the wire format: never renumber."""

    HELLO = 1  # client rank -> server rank 0: declares one field (JSON payload)
    WELCOME = 2  # server rank 0 -> client rank: field id, endpoints, partition (JSON)
    DATA = 3  # client rank -> owning server rank: one chunk of one field at one time step
    END = 4  # client rank -> each server rank: this rank sent everything
    END_ACK = 5  # server rank -> client rank: everything before END was received
    ERROR = 6  # server -> client: the previous message was refused (JSON {"error": ...})
    ATTACH = 16  # launcher -> server rank 0: register the control channel
    FINISH = 17  # launcher -> server rank 0: no more simulations; write results and exit
    EVENT = 18  # server rank 0 -> launcher: progress and completion events (JSON)
    RANK_EVENT = 19  # server rank r > 0 -> rank 0: completion and status of rank r (JSON)
    ABANDON = 20  # launcher -> rank 0 -> every rank: never accept these simulations again (JSON)
    HEARTBEAT = 21  # launcher -> server rank 0, every second: the launcher is alive
    STOP = 22  # server rank 0 -> every rank: checkpoint and exit (the launcher is gone)


class Dtype(enum.IntEnum):
    """Element type of a DATA payload."""

    NONE = 0
    FLOAT64 = 1
    FLOAT32 = 2


_NUMPY_DTYPES: dict[Dtype, np.dtype[Any]] = {Dtype.FLOAT64: np.dtype("<f8"), Dtype.FLOAT32: np.dtype("<f4")}


def dtype_code(dtype: np.dtype[Any]) -> Dtype:
    """The wire code of a NumPy dtype; only little-endian float64/float32 travel."""
    for code, np_dtype in _NUMPY_DTYPES.items():
        if np.dtype(dtype) == np_dtype:
            return code
    raise ProtocolError(f"unsupported dtype {np.dtype(dtype)}: send float64 or float32 arrays")


def numpy_dtype(code: Dtype) -> np.dtype[Any]:
    return _NUMPY_DTYPES[code]


def token_from_hex(text: str) -> bytes:
    """Decode the study token as given in MELISSA_STUDY_TOKEN (hex of 16 bytes)."""
    try:
        token = bytes.fromhex(text)
    except ValueError:
        raise ProtocolError("study token must be hexadecimal (MELISSA_STUDY_TOKEN)") from None
    if len(token) != TOKEN_BYTES:
        raise ProtocolError(
            f"study token must be {TOKEN_BYTES} bytes ({2 * TOKEN_BYTES} hex digits), "
            f"got {len(token)}"
        )
    return token


@dataclass(frozen=True)
class Header:
    kind: Kind
    token: bytes
    simulation_id: int = 0
    attempt: int = 0
    client_rank: int = 0
    time_step: int = 0
    field_id: int = 0
    offset: int = 0
    count: int = 0
    dtype: Dtype = Dtype.NONE

    def encode(self) -> bytes:
        try:
            return _HEADER.pack(
                MAGIC,
                VERSION,
                self.kind,
                self.token,
                self.simulation_id,
                self.attempt,
                self.client_rank,
                self.time_step,
                self.field_id,
                self.offset,
                self.count,
                self.dtype,
            )
        except struct.error as exc:
            raise ProtocolError(f"cannot encode {self.kind.name} header: {exc}") from None


def decode_header(frame: bytes | memoryview, token: bytes) -> Header:
    """Parse and authenticate a header frame; raise ProtocolError saying what is wrong."""
    if len(frame) != HEADER_SIZE:
        raise ProtocolError(f"header frame has {len(frame)} bytes, expected {HEADER_SIZE}")
    (magic, version, kind, msg_token, sim, attempt, rank, step, field, offset, count, dtype) = (
        _HEADER.unpack(frame)
    )
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {magic!r}: not a Melissa message")
    if version != VERSION:
        raise ProtocolError(
            f"protocol version {version}, expected {VERSION}: clients, server and launcher "
            "must come from the same Melissa release"
        )
    if not hmac.compare_digest(msg_token, token):
        raise ProtocolError("wrong study token")
    try:
        kind_enum = Kind(kind)
    except ValueError:
        raise ProtocolError(f"unknown message kind {kind}") from None
    try:
        dtype_enum = Dtype(dtype)
    except ValueError:
        raise ProtocolError(f"unknown dtype code {dtype}") from None
    if sim < 0:
        raise ProtocolError(f"negative simulation id {sim}")
    return Header(kind_enum, msg_token, sim, attempt, rank, step, field, offset, count, dtype_enum)


def encode_json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def decode_json(frame: bytes | memoryview, what: str, max_bytes: int = 1 << 20) -> dict[str, Any]:
    """Decode a control payload; `what` names the message in the error."""
    if len(frame) > max_bytes:
        raise ProtocolError(f"{what} payload of {len(frame)} bytes exceeds {max_bytes}")
    try:
        obj = json.loads(bytes(frame))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"{what} payload is not JSON: {exc}") from None
    except RecursionError:  # e.g. "[" * 100000, from an authenticated but hostile peer
        raise ProtocolError(f"{what} payload nests too deeply") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what} payload must be a JSON object")
    return obj
