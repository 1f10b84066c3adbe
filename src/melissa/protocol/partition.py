"""How a field's cells are split over server ranks (shared by the client and the server).

Rank r of M owns the contiguous range [start_r, stop_r) with sizes differing by at most one, the
first `size % M` ranks taking the extra cell. A client rank holding [offset, offset + n) sends
each server rank the intersection of the two ranges (the N x M redistribution).
"""

from __future__ import annotations

from typing import NamedTuple


class Piece(NamedTuple):
    """The part of a client rank's local array owned by one server rank."""

    server_rank: int
    global_offset: int  # first cell, in the field's global numbering
    local_start: int  # first cell, in the client rank's local array
    count: int  # type: ignore[assignment]  # (NamedTuple's tuple.count, shadowed on purpose)


def cell_range(size: int, ranks: int, rank: int) -> tuple[int, int]:
    """The [start, stop) cells of a field of `size` cells owned by server rank `rank` of `ranks`."""
    if ranks < 1 or not 0 <= rank < ranks:
        raise ValueError(f"rank {rank} out of range for {ranks} ranks")
    base, extra = divmod(size, ranks)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def cell_ranges(size: int, ranks: int) -> list[tuple[int, int]]:
    return [cell_range(size, ranks, r) for r in range(ranks)]


def split(offset: int, count: int, ranges: list[tuple[int, int]]) -> list[Piece]:
    """Split the global range [offset, offset + count) by the server ranks owning its cells."""
    pieces = []
    for rank, (start, stop) in enumerate(ranges):
        lo, hi = max(start, offset), min(stop, offset + count)
        if lo < hi:
            pieces.append(Piece(rank, lo, lo - offset, hi - lo))
    return pieces
