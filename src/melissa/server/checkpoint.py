"""Checkpoints of one server rank: named NumPy arrays plus JSON metadata, one file per checkpoint.

File layout (little-endian; format version 1):

    b"MLSACKPT" | header length (uint64) | header (UTF-8 JSON) | zero padding to 64 bytes |
    each array's raw bytes (C order), each padded to 64 bytes | SHA-256 of everything before (32)

The header holds the format version, rank, ranks, sequence number, wall time, the caller's
metadata and, for each array, its name, dtype, shape and offset from the start of the data. No
pickle: arrays are written as raw bytes, straight from their memory, and checksummed while they
are written. A checkpoint is written to a temporary file in the same directory, fsynced, renamed
over its final name and the directory fsynced (atomic_write), so a final name is always complete;
the checksum catches what happened to it afterwards (truncation, bit rot, a partial copy).
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from melissa.atomic import atomic_write
from melissa.errors import CheckpointError
from melissa.paths import StudyPaths

log = logging.getLogger("melissa.server")

FORMAT_VERSION = 1
KEEP = 2  # checkpoints kept per rank: the newest, and the one before in case it is damaged
_MAGIC = b"MLSACKPT"
_PREFIX = struct.Struct("<8sQ")  # magic, header length
_DIGEST = 32  # SHA-256
_ALIGN = 64


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    rank: int
    ranks: int
    sequence: int
    wall_time: float  # time.time() when it was written
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]  # read-only views on the file's bytes


@dataclass(frozen=True)
class Written:
    path: Path
    nbytes: int
    seconds: float


def write_checkpoint(
    paths: StudyPaths,
    rank: int,
    ranks: int,
    sequence: int,
    arrays: dict[str, np.ndarray],
    meta: dict[str, Any],
) -> Written:
    """Write checkpoint `sequence` of `rank` atomically, then delete all but the KEEP newest."""
    started = time.perf_counter()
    final = paths.server_checkpoint(rank, sequence)
    final.parent.mkdir(parents=True, exist_ok=True)
    flat = {name: _as_bytes(name, array) for name, array in arrays.items()}
    table, offset = [], 0
    for name, array in arrays.items():
        table.append({"name": name, "dtype": array.dtype.str, "shape": list(array.shape),
                      "offset": offset})
        offset += _padded(flat[name].nbytes)
    header = json.dumps({
        "format_version": FORMAT_VERSION, "rank": rank, "ranks": ranks, "sequence": sequence,
        "wall_time": time.time(), "meta": meta, "arrays": table,
    }).encode()
    # A temporary file left by a rank killed while writing has this very name (the sequence after
    # the newest final file), so the next write replaces it.
    try:
        with atomic_write(final, durable=True) as tmp, open(tmp, "wb") as f:
            digest = hashlib.sha256()
            _put(f, digest, _PREFIX.pack(_MAGIC, len(header)) + header)
            _put(f, digest, bytes(_padded(_PREFIX.size + len(header)) - _PREFIX.size - len(header)))
            for data in flat.values():
                _put(f, digest, data)
                _put(f, digest, bytes(_padded(data.nbytes) - data.nbytes))
            f.write(digest.digest())
            nbytes = f.tell()
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {final}: {exc}") from None
    for old in paths.server_checkpoints(rank)[KEEP:]:
        old.unlink(missing_ok=True)
    return Written(final, nbytes, time.perf_counter() - started)


def read_checkpoint(path: Path) -> Checkpoint:
    """Read and verify one checkpoint file; CheckpointError says why it is unusable."""
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise CheckpointError(f"cannot read it: {exc}") from None
    raw.flags.writeable = False
    if raw.nbytes < _PREFIX.size + _DIGEST:
        raise CheckpointError(f"truncated: {raw.nbytes} bytes")
    magic, header_len = _PREFIX.unpack_from(raw.data)
    if magic != _MAGIC:
        raise CheckpointError("not a Melissa server checkpoint (bad magic)")
    body = raw[:-_DIGEST]
    if hashlib.sha256(body.data).digest() != raw[-_DIGEST:].tobytes():
        raise CheckpointError("checksum mismatch (truncated, partial or corrupt file)")
    try:
        header = json.loads(body[_PREFIX.size : _PREFIX.size + header_len].tobytes())
        if header["format_version"] != FORMAT_VERSION:
            raise CheckpointError(
                f"format version {header['format_version']}, this Melissa reads {FORMAT_VERSION}"
            )
        data = body[_padded(_PREFIX.size + header_len) :]
        arrays = {entry["name"]: _array(data, entry) for entry in header["arrays"]}
        return Checkpoint(path, int(header["rank"]), int(header["ranks"]),
                          int(header["sequence"]), float(header["wall_time"]),
                          dict(header["meta"]), arrays)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"malformed header: {exc!r}") from None


def latest_checkpoint(paths: StudyPaths, rank: int) -> Checkpoint | None:
    """The newest of `rank`'s checkpoints that verifies; each unusable one is logged and skipped."""
    for path in paths.server_checkpoints(rank):
        try:
            checkpoint = read_checkpoint(path)
        except CheckpointError as exc:
            log.warning("checkpoint %s is unusable (%s); trying the one before", path, exc)
            continue
        if checkpoint.rank != rank:
            log.warning("checkpoint %s is unusable (written by rank %d, not %d); trying the one "
                        "before", path, checkpoint.rank, rank)
            continue
        return checkpoint
    return None


def next_sequence(paths: StudyPaths, rank: int) -> int:
    """A sequence number above every existing checkpoint of `rank`, usable or not."""
    existing = paths.server_checkpoints(rank)
    return int(existing[0].stem.rsplit("-", 1)[1]) + 1 if existing else 0


def _as_bytes(name: str, array: np.ndarray) -> np.ndarray:
    """The array's bytes as a flat uint8 view (a copy only if it is not C-contiguous)."""
    if not isinstance(array, np.ndarray) or array.dtype.hasobject:
        raise CheckpointError(f"checkpoint array {name!r} must be a NumPy array of plain values")
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def _array(data: np.ndarray, entry: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(entry["dtype"])
    shape = tuple(int(n) for n in entry["shape"])
    count = int(np.prod(shape, dtype=np.int64))
    start = int(entry["offset"])
    if dtype.hasobject or start < 0 or start + count * dtype.itemsize > data.nbytes:
        raise ValueError(f"array {entry['name']!r} does not fit the file")
    return data[start : start + count * dtype.itemsize].view(dtype).reshape(shape)


def _put(f: BinaryIO, digest: Any, data: bytes | np.ndarray) -> None:
    digest.update(data)
    f.write(data)  # type: ignore[arg-type]


def _padded(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN
