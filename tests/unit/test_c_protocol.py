"""libmelissa's wire format against the Python protocol: the same messages encoded by C and by
Python are byte-identical (golden vectors), and the C JSON reader agrees with Python's json on
WELCOME and ERROR payloads and never crashes on garbage.

The C side is src/melissa/client/c/protocol.c, the code libmelissa sends with, compiled with a
small harness (tests/c/protocol_harness.c) under AddressSanitizer/UBSan where available.
"""

from __future__ import annotations

import json
import random
import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from melissa.client.session import ClientEnvironment
from melissa.errors import ClientError, ProtocolError
from melissa.protocol import (
    HEADER_SIZE,
    Dtype,
    Header,
    Kind,
    decode_header,
    encode_json,
    split,
    token_from_hex,
)
from tests.compiled import C_SOURCES, TEST_SOURCES, system_tool
from tests.unit.test_protocol import GOLDEN_DATA, TOKEN, header_strategy

ENV = {"MELISSA_SERVER": "tcp://x:1", "MELISSA_SIMULATION_ID": "0",
       "MELISSA_STUDY_TOKEN": "00" * 16}


class Harness:
    def __init__(self, exe: Path) -> None:
        self.exe = exe

    def __call__(self, lines: Sequence[str]) -> list[str]:
        proc = subprocess.run([str(self.exe)], input="".join(f"{line}\n" for line in lines),
                              capture_output=True, text=True, check=False, timeout=60)
        assert proc.returncode == 0, f"harness crashed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        out = proc.stdout.split("\n")[:-1]
        assert len(out) == len(lines), proc.stderr
        return out

    def one(self, line: str) -> str:
        return self([line])[0]


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Harness:
    cc = system_tool("cc")
    exe = tmp_path_factory.mktemp("harness") / "protocol_harness"
    base = [cc, "-std=c99", "-O1", "-g", "-Wall", "-Wextra", "-Werror", f"-I{C_SOURCES}",
            str(TEST_SOURCES / "protocol_harness.c"), str(C_SOURCES / "protocol.c"), "-o", str(exe)]
    sanitized = subprocess.run([*base, "-fsanitize=address,undefined",
                                "-fno-sanitize-recover=all"], capture_output=True, text=True,
                               check=False)
    if sanitized.returncode != 0:  # no sanitizer runtime here: test the plain build
        plain = subprocess.run(base, capture_output=True, text=True, check=False)
        assert plain.returncode == 0, plain.stderr
    return Harness(exe)


def header_line(h: Header) -> str:
    return (f"header {h.kind.value} {h.simulation_id} {h.attempt} {h.client_rank} {h.time_step} "
            f"{h.field_id} {h.offset} {h.count} {h.dtype.value} {h.token.hex()}")


def test_golden_data_header(harness: Harness) -> None:
    golden = Header(Kind.DATA, TOKEN, 7, 1, 2, 3, 4, 5, 6, Dtype.FLOAT32)
    assert bytes.fromhex(harness.one(header_line(golden))) == GOLDEN_DATA


def test_hello_and_end_headers_as_the_client_sends_them(harness: Harness) -> None:
    # HELLO: offset/count = this rank's cells; END: count = client ranks (docs/protocol.md).
    hello = Header(Kind.HELLO, TOKEN, simulation_id=42, attempt=3, client_rank=1, offset=17,
                   count=9)
    end = Header(Kind.END, TOKEN, simulation_id=42, attempt=3, client_rank=1, count=3)
    assert harness([header_line(hello), header_line(end)]) == [hello.encode().hex(),
                                                                end.encode().hex()]
    assert hello.encode()[:8].hex() == "4d4c534101000100"


headers = header_strategy(st.binary(min_size=16, max_size=16))


@settings(max_examples=20, deadline=None)
@given(st.lists(headers, min_size=1, max_size=40))
def test_headers_byte_identical(harness: Harness, batch: list[Header]) -> None:
    assert harness([header_line(h) for h in batch]) == [h.encode().hex() for h in batch]


def hello_line(field: str | bytes, global_size: int, ranks: int, shape: Sequence[int],
               parameters: str | None = None) -> str:
    raw = field.encode("utf-8", "surrogatepass") if isinstance(field, str) else field
    params = "-" if parameters is None else parameters.encode().hex() or "-"
    return " ".join(["hello", raw.hex() or "-", str(global_size), str(ranks), params,
                     *map(str, shape)])


def python_hello(field: str, global_size: int, ranks: int, shape: Sequence[int],
                 parameters: str | None = None) -> bytes:
    # as Session.init builds it
    hello: dict[str, Any] = {"field": field, "global_size": global_size, "client_ranks": ranks,
                             "shape": list(shape) if shape else None}
    if parameters is not None:
        hello["parameters"] = ClientEnvironment.from_environ(
            {**ENV, "MELISSA_PARAMETERS": parameters}).parameters
    return encode_json(hello)


def test_hello_payload_golden(harness: Harness) -> None:
    assert bytes.fromhex(harness.one(hello_line("temperature", 10000, 1, [100, 100]))) == (
        b'{"field":"temperature","global_size":10000,"client_ranks":1,"shape":[100,100]}')
    assert bytes.fromhex(harness.one(hello_line("u", 6, 2, []))) == (
        b'{"field":"u","global_size":6,"client_ranks":2,"shape":null}')


field_names = st.text(st.characters(codec="utf-8", blacklist_characters="\0"), min_size=1,
                      max_size=30)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(field_names, st.integers(1, 2**63 - 1), st.integers(1, 2**32 - 1),
                          st.lists(st.integers(1, 2**31 - 1), max_size=4)),
                min_size=1, max_size=30))
def test_hello_payload_byte_identical(harness: Harness, batch: list[Any]) -> None:
    # Quotes, backslashes, control characters, non-ASCII (\\u escapes, surrogate pairs).
    batch = [*batch, ('a"b\\c\n\t\x01\x7f é €', 5, 1, [5]), ("😀 𝄞", 1, 1, [])]
    lines = [hello_line(*item) for item in batch]
    assert [bytes.fromhex(x) for x in harness(lines)] == [python_hello(*item) for item in batch]


def test_hello_refuses_invalid_utf8(harness: Harness) -> None:
    for raw in (b"\xff", b"a\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80"):
        assert harness.one(hello_line(raw, 1, 1, [])) == "error"


def test_hello_with_parameters_byte_identical(harness: Harness) -> None:
    # MELISSA_PARAMETERS, as the launcher writes it (json.dumps of the parameter values), is
    # forwarded in HELLO as {name: float(value)}: floats written as Python's repr.
    cases = [json.dumps({"initial_temperature": 123.456, "diffusivity": 1e-05}),
             json.dumps({"a": 1, "b": -0.0, "c": 1e16, "d": 1e15, "e": 0.1 + 0.2, "é\u2028": 5,
                         "f": 2.0**-1074, "g": 1.7976931348623157e308, "h": -2**70}),
             '{"a": 1, "b": 2, "a": 3.5}', "{}", ' {"x" : 1E2 , "y":-0.000012e-3} ',
             '{"big": 1e400, "k\\u0000": 0}']
    lines = [hello_line("temperature", 10, 2, [2, 5], p) for p in cases]
    assert [bytes.fromhex(x) for x in harness(lines)] == [
        python_hello("temperature", 10, 2, [2, 5], p) for p in cases]


def test_parameters_refused_as_python(harness: Harness) -> None:
    for text in ["[1, 2]", '{"a": "1"}', '{"a": true}', '{"a": null}', "{", "", "nope",
                 '{"a": [1]}']:
        with pytest.raises(ClientError, match="MELISSA_PARAMETERS="):
            ClientEnvironment.from_environ({**ENV, "MELISSA_PARAMETERS": text})
        assert harness.one(f"params {text.encode().hex() or '-'}") == "error", text


@settings(max_examples=10, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-2**60, 2**60)
                .map(float), min_size=1, max_size=200))
def test_float_repr_as_python(harness: Harness, xs: list[float]) -> None:
    rng = random.Random(len(xs))
    bits = [rng.getrandbits(64) for _ in range(200)]  # every exponent, subnormals, NaN, inf
    xs = xs + [struct.unpack("<d", struct.pack("<Q", b))[0] for b in bits] + [
        2.0**e for e in range(-1074, 1024, 7)] + [float("inf"), -float("inf")]
    out = harness([f"float {struct.unpack('<Q', struct.pack('<d', x))[0]:016x}" for x in xs])
    expected = [json.dumps(x) for x in xs]
    assert out == expected


BAD_HEADERS = [
    (GOLDEN_DATA[:-1], "header frame has 71 bytes, expected 72"),
    (GOLDEN_DATA + b"\0", "header frame has 73 bytes, expected 72"),
    (b"HTTP" + GOLDEN_DATA[4:], "bad magic"),
    (GOLDEN_DATA[:4] + b"\x02\x00" + GOLDEN_DATA[6:], "protocol version 2, expected 1"),
    (GOLDEN_DATA[:6] + b"\x63\x00" + GOLDEN_DATA[8:], "unknown message kind 99"),
    (GOLDEN_DATA[:8] + b"x" * 16 + GOLDEN_DATA[24:], "wrong study token"),
    (GOLDEN_DATA[:24] + b"\xff" * 8 + GOLDEN_DATA[32:], "negative simulation id -1"),
    (GOLDEN_DATA[:64] + b"\x09" + GOLDEN_DATA[65:], "unknown dtype code 9"),
]


def test_decode_header_checks_as_python(harness: Harness) -> None:
    out = harness([f"decode {GOLDEN_DATA.hex()} {TOKEN.hex()}",
                   *(f"decode {frame.hex()} {TOKEN.hex()}" for frame, _ in BAD_HEADERS)])
    assert out[0] == "ok 3 7 1 2 3 4 5 6 2"
    for line, (_, message) in zip(out[1:], BAD_HEADERS):
        assert line.startswith("error ") and message in line, (line, message)


@settings(max_examples=10, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=2 * HEADER_SIZE), min_size=1, max_size=50))
def test_decode_header_random_bytes(harness: Harness, frames: list[bytes]) -> None:
    rng = random.Random(len(frames))
    for _ in range(20):  # one bit flipped in a good header
        flipped = bytearray(GOLDEN_DATA)
        flipped[rng.randrange(HEADER_SIZE)] ^= 1 << rng.randrange(8)
        frames.append(bytes(flipped))
    out = harness([f"decode {f.hex()} {TOKEN.hex()}" for f in frames])
    for frame, line in zip(frames, out):
        try:
            h = decode_header(frame, TOKEN)
        except ProtocolError:
            assert line.startswith("error "), (frame, line)
        else:
            assert line == (f"ok {h.kind.value} {h.simulation_id} {h.attempt} {h.client_rank} "
                            f"{h.time_step} {h.field_id} {h.offset} {h.count} {h.dtype.value}")


# ---- WELCOME and ERROR payloads ---------------------------------------------------------------

def python_welcome(payload: bytes) -> tuple[int, int, list[tuple[str, int, int]]] | None:
    """What a WELCOME says, by the strict rules of the C reader (None: it must be refused)."""
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # C: nesting deeper than 64
        return None

    def integer(v: Any, lo: int, hi: int) -> bool:
        return type(v) is int and lo <= v <= hi

    if not isinstance(obj, dict):
        return None
    fid: Any = obj.get("field_id")
    steps: Any = obj.get("nb_time_steps")
    endpoints, ranges = obj.get("endpoints"), obj.get("ranges")
    if not (integer(fid, 0, 2**32 - 1) and integer(steps, 0, 2**32 - 1)):
        return None
    if not (isinstance(endpoints, list) and isinstance(ranges, list)
            and 1 <= len(endpoints) == len(ranges)):
        return None
    out = []
    for e, r in zip(endpoints, ranges):
        if not (isinstance(e, str) and "\0" not in e and isinstance(r, list) and len(r) == 2
                and integer(r[0], 0, 2**63 - 1) and integer(r[1], r[0], 2**63 - 1)):
            return None
        out.append((e, int(r[0]), int(r[1])))
    return fid, steps, out


def c_welcome(line: str) -> tuple[int, int, list[tuple[str, int, int]]] | None:
    if not line.startswith("ok "):
        assert line.startswith("error "), line
        return None
    words = line.split()
    fid, steps, n = int(words[1]), int(words[2]), int(words[3])
    rest = words[4:]
    endpoints = [(bytes.fromhex(rest[3 * i]).decode("utf-8", "surrogatepass")
                  if rest[3 * i] != "-" else "", int(rest[3 * i + 1]), int(rest[3 * i + 2]))
                 for i in range(n)]
    return fid, steps, endpoints


def welcome_payloads(rng: random.Random) -> list[bytes]:
    """Valid WELCOMEs written in many ways, and damaged copies of them."""
    payloads = [(b'{"field_id":0,"endpoints":["tcp://127.0.0.1:37257"],"ranges":[[0,6]],'
                 b'"nb_time_steps":5}')]
    for i in range(150):
        ranks = rng.randint(1, 4)
        bounds = sorted(rng.randint(0, 2**40) for _ in range(ranks + 1))
        welcome: dict[str, Any] = {
            "field_id": rng.randint(0, 2**32 - 1),
            "endpoints": [rng.choice([f"tcp://127.0.0.1:{rng.randint(1, 65535)}",
                                      "tcp://höst-ü:1", 'a"\\/\n\t\u2028', "😀", "\ud800x", ""])
                          for _ in range(ranks)],
            "ranges": [[bounds[r], bounds[r + 1]] for r in range(ranks)],
            "nb_time_steps": rng.randint(0, 2**32 - 1),
        }
        if i % 3 == 0:
            welcome["extra"] = {"nested": [1, 2.5e-3, None, True, False, {"x": []}], "s": "é"}
        if i % 5 == 0:
            welcome = dict(reversed(list(welcome.items())))
        text = json.dumps(welcome, ensure_ascii=bool(i % 2), indent=rng.choice([None, 0, 2]),
                          separators=rng.choice([None, (",", ":"), (" , ", " :  ")]),
                          sort_keys=bool(i % 7 == 0))
        if i % 4 == 0:
            text = f" \r\n\t{text}\n "
        if i % 11 == 0:  # a repeated key: the last one wins, as in Python
            text = text.replace("{", '{"field_id": 77, ', 1)
        payloads.append(text.encode("utf-8", "surrogatepass"))
    damaged = []
    for p in payloads:
        b = bytearray(p)
        how = rng.randrange(4)
        if how == 0:
            b = b[: rng.randrange(len(b))]
        elif how == 1:
            for _ in range(rng.randint(1, 3)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        elif how == 2:
            pos = rng.randrange(len(b) + 1)
            b[pos:pos] = rng.choice([b",", b"]", b"}", b"\\", b'"', b"\\u12", b"\x00", b"-", b"1e"])
        else:
            pos = rng.randrange(len(b))
            del b[pos: pos + rng.randint(1, 5)]
        damaged.append(bytes(b))
    garbage = [b"", b"null", b"[]", b"{", b"}", b'{"field_id":1e400}', b"[" * 10000,
               b'{"a":' * 100 + b"1" + b"}" * 100, b'"\\ud800\\udc00"', b"\xff\xfe{}",
               b'{"field_id":-0,"nb_time_steps":9223372036854775808}', b"NaN", b"tru", b"-",
               b'{"field_id":0,"endpoints":["a\\u0000b"],"ranges":[[0,1]],"nb_time_steps":1}',
               (b'{"field_id\\u0000":0,"field_id":1,"endpoints":["a"],"ranges":[[0,1]],'
                b'"nb_time_steps":1}'),
               *(bytes(rng.randrange(256) for _ in range(rng.randint(1, 200))) for _ in range(100))]
    return payloads + damaged + garbage


def test_welcome_reader_agrees_with_python_json(harness: Harness) -> None:
    payloads = welcome_payloads(random.Random(2026))
    out = harness([f"welcome {p.hex() or '-'}" for p in payloads])
    accepted = 0
    for payload, line in zip(payloads, out):
        expected, got = python_welcome(payload), c_welcome(line)
        if expected is not None:
            accepted += 1
            assert got == expected, payload
        elif got is not None:  # C accepted what Python refuses: only raw non-UTF-8 bytes
            with pytest.raises(UnicodeDecodeError):
                payload.decode("utf-8")
    assert accepted > 100  # most valid ones (those with raw lone surrogates are not UTF-8)


def test_welcome_public_keys(harness: Harness) -> None:
    """An encrypted study's WELCOME carries one CURVE key per server rank; anything else in
    "public_keys" is refused, and a WELCOME without them has none."""
    keys = ["rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7", "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"]
    base = {"field_id": 0, "endpoints": ["tcp://a:1", "tcp://b:2"], "ranges": [[0, 3], [3, 6]],
            "nb_time_steps": 5}
    cases = [({**base, "public_keys": keys}, " key " + " key ".join(keys)), (base, "")]
    bad = [keys[:1], [keys[0], 7], [keys[0], keys[1][:-1]], "x" * 40, None]
    lines = harness([f"welcome {encode_json(w).hex()}" for w, _ in cases]
                    + [f"welcome {encode_json({**base, 'public_keys': k}).hex()}" for k in bad])
    for (_, tail), line in zip(cases, lines):
        assert line.startswith("ok ") and line.endswith(tail), line
    assert " key " not in lines[1]
    for line in lines[len(cases):]:
        assert line.startswith("error ") and "public" in line, line


def test_error_reason_decoded(harness: Harness) -> None:
    reasons = ["time step 9 out of range: study_options.nb_time_steps is 5",
               "unknown field 'v': study_options.field_names is ['u']", "é😀\n\"\\"]
    payloads = [encode_json({"error": r}) for r in reasons]
    payloads += [json.dumps({"x": 1, "error": reasons[1]}, indent=2, ensure_ascii=False).encode(),
                 b'{"error": 3}', b"not json", b""]
    out = harness([f"errmsg {p.hex() or '-'}" for p in payloads])
    assert [bytes.fromhex(x).decode() for x in out] == [*reasons, reasons[1], "?", "?", "?"]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 10**12), st.integers(1, 9), st.data())
def test_split_as_python(harness: Harness, size: int, ranks: int, data: st.DataObject) -> None:
    from melissa.protocol import cell_ranges
    ranges = cell_ranges(size, ranks)
    cases = []
    for _ in range(10):
        offset = data.draw(st.integers(0, size - 1))
        count = data.draw(st.integers(0, size - offset))
        cases.append((offset, count))
    flat = " ".join(f"{a} {b}" for a, b in ranges)
    out = harness([f"split {o} {c} {flat}" for o, c in cases])
    for (offset, count), line in zip(cases, out):
        assert line == "".join(f"{p.server_rank} {p.global_offset} {p.local_start} {p.count};"
                               for p in split(offset, count, ranges))


def test_token_as_python(harness: Harness) -> None:
    texts = [TOKEN.hex(), TOKEN.hex().upper(), " ".join(f"{b:02x}" for b in TOKEN), "zz" * 16,
             "ab", TOKEN.hex() + "00", "", TOKEN.hex()[:-1], "0x" + TOKEN.hex()[2:]]
    out = harness([f"token {t.encode().hex() or '-'}" for t in texts])
    for text, line in zip(texts, out):
        try:
            expected = token_from_hex(text).hex()
        except ProtocolError as exc:
            assert line.startswith("error ") and str(exc) in line, (text, line)
        else:
            assert line == expected
