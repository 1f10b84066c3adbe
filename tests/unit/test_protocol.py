"""Wire format: golden bytes, round trips, and every way a header can be wrong."""

from __future__ import annotations

import itertools
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from melissa.errors import ProtocolError
from melissa.protocol import (
    HEADER_SIZE,
    Dtype,
    Header,
    Kind,
    cell_range,
    cell_ranges,
    decode_header,
    decode_json,
    dtype_code,
    split,
    token_from_hex,
)

TOKEN = bytes(range(16))

# A DATA header as version 1 lays it out (docs/protocol.md). The C client must produce the same.
GOLDEN_DATA = bytes.fromhex(
    "4d4c5341" "0100" "0300" "000102030405060708090a0b0c0d0e0f"
    "0700000000000000" "01000000" "02000000" "03000000" "04000000"
    "0500000000000000" "0600000000000000" "02" "00000000000000"
)


def test_golden_data_header() -> None:
    header = Header(Kind.DATA, TOKEN, 7, 1, 2, 3, 4, 5, 6, Dtype.FLOAT32)
    assert header.encode() == GOLDEN_DATA
    assert HEADER_SIZE == len(GOLDEN_DATA) == 72
    assert decode_header(GOLDEN_DATA, TOKEN) == header


def header_strategy(tokens: st.SearchStrategy[bytes]) -> st.SearchStrategy[Header]:
    """Every header the format can carry (shared with the C encoder's golden tests)."""
    return st.builds(
        Header,
        kind=st.sampled_from(list(Kind)),
        token=tokens,
        simulation_id=st.integers(0, 2**63 - 1),
        attempt=st.integers(0, 2**32 - 1),
        client_rank=st.integers(0, 2**32 - 1),
        time_step=st.integers(0, 2**32 - 1),
        field_id=st.integers(0, 2**32 - 1),
        offset=st.integers(0, 2**64 - 1),
        count=st.integers(0, 2**64 - 1),
        dtype=st.sampled_from(list(Dtype)),
    )


headers = header_strategy(st.just(TOKEN))


@given(headers)
def test_round_trip(header: Header) -> None:
    assert decode_header(header.encode(), TOKEN) == header


@given(st.binary(max_size=2 * HEADER_SIZE))
def test_random_bytes_never_crash(frame: bytes) -> None:
    try:
        decode_header(frame, TOKEN)
    except ProtocolError:
        pass


def _mutate(offset: int, fmt: str, value: object) -> bytes:
    frame = bytearray(GOLDEN_DATA)
    struct.pack_into(fmt, frame, offset, value)
    return bytes(frame)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (GOLDEN_DATA[:-1], "header frame has 71 bytes, expected 72"),
        (GOLDEN_DATA + b"\0", "header frame has 73 bytes, expected 72"),
        (_mutate(0, "<4s", b"HTTP"), "bad magic b'HTTP'"),
        (_mutate(4, "<H", 2), "protocol version 2, expected 1"),
        (_mutate(6, "<H", 99), "unknown message kind 99"),
        (_mutate(8, "<16s", b"x" * 16), "wrong study token"),
        (_mutate(24, "<q", -1), "negative simulation id -1"),
        (_mutate(64, "<B", 9), "unknown dtype code 9"),
    ],
)
def test_bad_headers(frame: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message.replace("(", r"\(").replace("[", r"\[")):
        decode_header(frame, TOKEN)


def test_token_hex() -> None:
    assert token_from_hex(TOKEN.hex()) == TOKEN
    with pytest.raises(ProtocolError, match="hexadecimal"):
        token_from_hex("zz" * 16)
    with pytest.raises(ProtocolError, match="16 bytes"):
        token_from_hex("ab")


def test_json_payloads() -> None:
    assert decode_json(b'{"a": 1}', "HELLO") == {"a": 1}
    with pytest.raises(ProtocolError, match="HELLO payload is not JSON"):
        decode_json(b"\xff{", "HELLO")
    with pytest.raises(ProtocolError, match="nests too deeply"):
        decode_json(b"[" * 100_000, "HELLO")
    with pytest.raises(ProtocolError, match="must be a JSON object"):
        decode_json(b"[1]", "HELLO")
    with pytest.raises(ProtocolError, match="exceeds"):
        decode_json(b"{}" + b" " * 100, "HELLO", max_bytes=10)


def test_dtypes() -> None:
    assert dtype_code(np.dtype(np.float64)) == Dtype.FLOAT64
    assert dtype_code(np.dtype(np.float32)) == Dtype.FLOAT32
    with pytest.raises(ProtocolError, match="unsupported dtype int64"):
        dtype_code(np.dtype(np.int64))


@given(st.integers(0, 10_000), st.integers(1, 17))
def test_partition_covers_once(size: int, ranks: int) -> None:
    ranges = cell_ranges(size, ranks)
    assert ranges[0][0] == 0 and ranges[-1][1] == size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    sizes = [b - a for a, b in ranges]
    assert max(sizes) - min(sizes) <= 1


@given(st.integers(1, 1000), st.integers(1, 7), st.data())
def test_split_reassembles(size: int, ranks: int, data: st.DataObject) -> None:
    offset = data.draw(st.integers(0, size - 1))
    count = data.draw(st.integers(0, size - offset))
    pieces = split(offset, count, cell_ranges(size, ranks))
    assert sum(p.count for p in pieces) == count
    for p in pieces:
        start, stop = cell_range(size, ranks, p.server_rank)
        assert start <= p.global_offset and p.global_offset + p.count <= stop
        assert p.local_start == p.global_offset - offset
