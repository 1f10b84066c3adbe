"""Zarr v3 results, written by every server rank in parallel: no rank holds more than its cells.

One store per field (statistics/<field>.zarr), the same variables, dims, coordinates and
attributes as the NetCDF file (output.py), so `xr.open_zarr(path)` (or `xr.open_dataset`) gives
one dataset whatever the number of ranks. Rank 0 creates the store's metadata; then each rank
writes its own cells of every variable, a few time steps at a time, straight from its state.

Chunks: one time step (and one threshold, quantile level or parameter) by a run of cells that is
contiguous in C order: (1, ..., 1, c, n_d+1, ..., n_k) over the field's shape. A chunk is no
longer than the smallest rank's range, so it touches at most two ranks; a rank writes the chunks
inside its range alone and in parallel with the others, then the chunks it shares with a
neighbour in two rounds (even ranks, then odd), each rank reading back and completing what the
other wrote. The store is written under a temporary name and renamed once complete.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec
from zarr.storage import LocalStore

from melissa.atomic import fsync_path
from melissa.server.sa.output import (
    PARAMETER_DIMS,
    cell_dims,
    dataset_attrs,
    leading_dim,
    long_name,
)

TARGET_CHUNK_CELLS = 1 << 18  # 2 MiB of float64 per chunk: large writes, small reads for plots
TIME_BLOCK_BYTES = 64 << 20  # results computed per block of time steps, about this many bytes

Box = tuple[int, tuple[slice, ...]]  # flat start of a C-contiguous box, and its slices


class DurableStore(LocalStore):
    """A local store that fsyncs every file it writes (the results survive a power loss)."""

    async def set(self, key: str, value: Any) -> None:
        await super().set(key, value)
        await asyncio.to_thread(fsync_path, self.root / key)


def chunk_shape(shape: tuple[int, ...], max_cells: int) -> tuple[int, ...]:
    """The largest (1, ..., 1, c, full inner dims) of at most max_cells cells: C-contiguous."""
    for d in range(len(shape)):
        inner = math.prod(shape[d + 1:])
        if inner <= max_cells:
            return (1,) * d + (max(1, min(shape[d], max_cells // inner)),) + tuple(shape[d + 1:])
    return (1,) * len(shape)  # unreachable: the innermost dim has inner = 1


def boxes(a: int, b: int, shape: tuple[int, ...]) -> list[Box]:
    """Flat cells [a, b) of an array of `shape` (C order) as C-contiguous boxes."""
    if a >= b:
        return []
    if len(shape) == 1:
        return [(a, (slice(a, b),))]
    inner = math.prod(shape[1:])
    i0, r0 = divmod(a, inner)
    i1, r1 = divmod(b, inner)

    def within(row: int, lo: int, hi: int) -> list[Box]:
        return [(row * inner + start, (slice(row, row + 1), *sub))
                for start, sub in boxes(lo, hi, shape[1:])]

    if i0 == i1:
        return within(i0, r0, r1)
    out = within(i0, r0, inner) if r0 else []
    first = i0 + 1 if r0 else i0
    if first < i1:
        out.append((first * inner, (slice(first, i1), *(slice(None),) * (len(shape) - 1))))
    if r1:
        out += within(i1, 0, r1)
    return out


def _chunk_bounds(cell: int, shape: tuple[int, ...], chunks: tuple[int, ...]) -> tuple[int, int]:
    """Flat [start, stop) of the chunk holding flat cell `cell` (chunks as chunk_shape)."""
    d = next(i for i, c in enumerate(chunks) if c != 1 or i == len(chunks) - 1)
    inner = math.prod(shape[d + 1:])
    row = shape[d] * inner  # cells per index of the dims before d
    prefix, within = divmod(cell, row)
    start = prefix * row + within // (chunks[d] * inner) * chunks[d] * inner
    return start, min(start + chunks[d] * inner, (prefix + 1) * row)


def whole_chunks(start: int, stop: int, shape: tuple[int, ...], chunks: tuple[int, ...]
                 ) -> tuple[int, int]:
    """The part [a, b) of a rank's cells [start, stop) made of whole chunks, which the rank
    writes alone; [start, a) and [b, stop) are pieces of chunks shared with a neighbour."""
    if start >= stop:
        return start, start
    head_start, head_stop = _chunk_bounds(start, shape, chunks)
    a = start if head_start == start else min(head_stop, stop)
    tail_start, tail_stop = _chunk_bounds(stop - 1, shape, chunks)
    b = stop if tail_stop == stop else max(tail_start, a)
    return a, b


class ZarrResults:
    """One field's Zarr store, written collectively by the `ranks` server ranks (each with its
    cell range in `ranges`); `comm` is None on one rank."""

    def __init__(
        self,
        path: Path,
        field: str,
        *,
        nb_time_steps: int,
        shape: tuple[int, ...] | None,
        global_size: int,
        leading: dict[str, list[float] | list[str]],
        variables: dict[str, np.dtype],
        ranges: list[tuple[int, int]],
        rank: int,
        comm: Any,
        compression: str,
        durable: bool,
        per_parameter: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp")
        self.field = field
        self.steps = nb_time_steps
        self.dims, self.grid = cell_dims(field, global_size, shape)
        self.leading = leading
        self.variables = variables
        self.ranges = ranges
        self.rank = rank
        self.comm = comm
        smallest = min((b - a for a, b in ranges if b > a), default=global_size)
        self.chunks = chunk_shape(self.grid, max(1, min(TARGET_CHUNK_CELLS, smallest)))
        self.compressors = (
            None if compression == "none"
            else BloscCodec(cname=compression, clevel=3, shuffle="shuffle")  # type: ignore[arg-type]
        )
        self.durable = durable
        self.per_parameter = per_parameter or {}  # (parameter,) arrays: written by rank 0

    def write(self, results: Callable[[slice], dict[str, np.ndarray]], attrs: dict[str, Any]
              ) -> Path:
        """Collective: create the store (rank 0), write this rank's cells of every variable
        from `results(steps)` (this rank's arrays of those time steps), then publish the store
        under its final name (rank 0). Returns the final path."""
        if self.rank == 0:
            shutil.rmtree(self.tmp, ignore_errors=True)  # left by a server killed while writing
            self._create(attrs)
        self._barrier()
        start, stop = self.ranges[self.rank]
        a, b = whole_chunks(start, stop, self.grid, self.chunks)
        group = zarr.open_group(self._store(), mode="r+", zarr_format=3)
        arrays: dict[str, Any] = {name: group[name] for name in self.variables}
        # Whole chunks: every rank at once; shared chunks: even ranks, then odd ones, from
        # copies of those few cells taken on the way.
        shared = self._write_cells(arrays, results, whole=(a, b), keep=[(start, a), (b, stop)])
        for parity in (0, 1):
            self._barrier()
            if self.rank % 2 == parity:
                for name, index, piece in shared:
                    arrays[name][index] = piece
        self._barrier()
        if self.rank == 0:
            self._publish()
        self._barrier()
        return self.path

    # -- rank 0 ------------------------------------------------------------------------------
    def _create(self, attrs: dict[str, Any]) -> None:
        store = self._store()
        names = list(self.variables)
        group = zarr.create_group(store, zarr_format=3, attributes=dataset_attrs(
            self.field, names, attrs))
        for name, values in self.per_parameter.items():
            small = group.create_array(name, shape=values.shape, chunks=values.shape,
                                       dtype=values.dtype, dimension_names=("parameter",),
                                       compressors=None, attributes={"long_name": long_name(name)})
            small[...] = values
        coords: dict[str, np.ndarray] = {"time": np.arange(self.steps)}
        for name, dtype in self.variables.items():
            lead = leading_dim(name)
            for dim in lead:
                coords[dim] = np.asarray(self.leading[dim],
                                         dtype=str if dim in PARAMETER_DIMS else np.float64)
            lead_sizes = tuple(len(self.leading[d]) for d in lead)
            fill = np.nan if dtype.kind == "f" else 0
            group.create_array(
                name, shape=(*lead_sizes, self.steps, *self.grid),
                chunks=(*(1,) * len(lead), 1, *self.chunks), dtype=dtype, fill_value=fill,
                dimension_names=(*lead, "time", *self.dims), compressors=self.compressors,
                attributes={"long_name": long_name(name)},
            )
        for dim, coord in coords.items():
            array = group.create_array(dim, shape=coord.shape, chunks=coord.shape,
                                       dtype=coord.dtype if dim not in PARAMETER_DIMS else str,
                                       dimension_names=(dim,), compressors=None)
            array[...] = coord

    def _publish(self) -> None:
        with warnings.catch_warnings():  # consolidated metadata is not in the v3 spec yet
            warnings.simplefilter("ignore")
            zarr.consolidate_metadata(self._store())
        if self.durable:
            fsync_path(self.tmp)
        old = self.path.with_name(f".{self.path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if self.path.exists():
            os.replace(self.path, old)
        os.replace(self.tmp, self.path)
        shutil.rmtree(old, ignore_errors=True)
        if self.durable:
            fsync_path(self.path.parent)

    # -- every rank --------------------------------------------------------------------------
    def _write_cells(
        self, arrays: dict[str, Any], results: Callable[[slice], dict[str, np.ndarray]],
        whole: tuple[int, int], keep: list[tuple[int, int]],
    ) -> list[tuple[str, tuple[slice, ...], np.ndarray]]:
        """Write this rank's cells `whole` (absolute [a, b)) of every variable; return the
        cells `keep` as (variable, index, values) to write later."""
        start, stop = self.ranges[self.rank]
        todo = [(flat, box, True) for flat, box in boxes(*whole, self.grid)]
        todo += [(flat, box, False) for a, b in keep for flat, box in boxes(a, b, self.grid)]
        out = []
        for steps in self._time_blocks(stop - start):
            for name, values in results(steps).items():
                array = arrays[name]
                lead = (slice(None),) * (values.ndim - 2)
                values = values.astype(array.dtype, copy=False)
                for flat, box, now in todo:
                    shape = _box_shape(box, self.grid)
                    lo = flat - start
                    piece = values[..., lo:lo + math.prod(shape)].reshape(
                        values.shape[:-1] + shape)
                    index = (*lead, steps, *box)
                    if now:
                        array[index] = piece
                    else:
                        out.append((name, index, piece.copy()))
        return out

    def _time_blocks(self, cells: int) -> Iterator[slice]:
        per_step = max(1, cells) * 8 * max(1, len(self.variables))
        block = max(1, TIME_BLOCK_BYTES // per_step)
        for t in range(0, self.steps, block):
            yield slice(t, min(t + block, self.steps))

    def _store(self) -> LocalStore:
        return DurableStore(self.tmp) if self.durable else LocalStore(self.tmp)

    def _barrier(self) -> None:
        if self.comm is not None:
            self.comm.Barrier()


def _box_shape(box: tuple[slice, ...], grid: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(len(range(*s.indices(n))) for s, n in zip(box, grid))
