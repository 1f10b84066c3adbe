"""Optional ZeroMQ CURVE encryption (server_config.encryption): the socket set-up shared by the
server ranks, the launcher's control channel and the Python client.

Each server rank makes a keypair when it starts; its ROUTER is a CURVE server. Rank 0's public
key reaches the launcher in server.json and the clients in MELISSA_SERVER_KEY; the other ranks'
keys travel in WELCOME. Peers connect with an ephemeral keypair of their own: the server knows
them by the study token, not by their key. Keys are Z85 text (40 characters for 32 bytes).
"""

from __future__ import annotations

import struct
from typing import Any

import zmq
from zmq.utils import z85

from melissa.errors import ProtocolError

KEY_CHARS = 40  # Z85 encoding of a 32-byte Curve25519 key


def require_curve(what: str) -> None:
    """Fail clearly where this process's libzmq was built without CURVE (no libsodium)."""
    if not zmq.has("curve"):
        raise ProtocolError(
            f"{what} needs ZeroMQ with CURVE support, and libzmq {zmq.zmq_version()} here has "
            "none: install a pyzmq wheel (it bundles libsodium) or a libzmq built with libsodium"
        )


def public_key(text: str, what: str) -> bytes:
    """Validate a Z85 public key as given in MELISSA_SERVER_KEY, server.json or WELCOME."""
    try:
        if len(text) == KEY_CHARS and len(z85.decode(text)) == 32:
            return text.encode("ascii")
    except (ValueError, KeyError, struct.error):  # not Z85: bad character or overflow
        pass
    raise ProtocolError(f"{what} must be a {KEY_CHARS}-character Z85 CURVE public key, got {text!r}")


def make_server(sock: zmq.Socket[Any]) -> bytes:
    """Make `sock` (not yet bound) a CURVE server with a fresh keypair; returns its public key."""
    require_curve("server_config.encryption")
    public, secret = zmq.curve_keypair()
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True
    return public


def make_client(sock: zmq.Socket[Any], server_key: bytes) -> None:
    """Make `sock` (not yet connected) a CURVE client of the server whose public key is given."""
    public, secret = zmq.curve_keypair()
    sock.curve_serverkey = server_key
    sock.curve_publickey = public
    sock.curve_secretkey = secret
