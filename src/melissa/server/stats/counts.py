"""Sample counts, piecewise constant over the cells of each time step.

A chunk adds one sample to a range of cells, and a simulation sends each time step as the same
pieces of cells, so within a time step the count per cell is constant over long runs of cells: it
differs only where a simulation failed before sending all the pieces of a step. The counts of a
time step are therefore kept as a sorted list of segments: segment i covers cells
[starts[i], starts[i + 1]) (the last one up to n_cells) and every cell in it has counts[i]
samples. The list is canonical: it covers [0, n_cells) (no segment when n_cells is 0), segments
are not empty, and adjacent segments have different counts, so it has a segment per run of equal
counts (one, for a step that every simulation sent completely). The update kernel takes each
covered segment's count as a scalar, instead of reading and writing an int64 per cell.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left, bisect_right

import numpy as np

_INT = np.dtype(np.int64)


class SegmentedCounts:
    """Counts of nb_time_steps x n_cells cells, all 0 at first."""

    __slots__ = ("counts", "n_cells", "starts")

    def __init__(self, nb_time_steps: int, n_cells: int) -> None:
        self.n_cells = n_cells
        first = [0] if n_cells else []
        self.starts: list[list[int]] = [list(first) for _ in range(nb_time_steps)]
        self.counts: list[list[int]] = [list(first) for _ in range(nb_time_steps)]

    def cover(self, t: int, lo: int, hi: int) -> tuple[int, int]:
        """Split the segments of step t at lo and hi (0 <= lo < hi <= n_cells) and return (i, j):
        segments i .. j - 1 cover exactly [lo, hi). Call `increment(t, i, j)` afterwards."""
        starts, counts = self.starts[t], self.counts[t]
        i = bisect_right(starts, lo) - 1
        if starts[i] != lo:
            i += 1
            starts.insert(i, lo)
            counts.insert(i, counts[i - 1])
        j = bisect_left(starts, hi, i + 1)
        if hi < self.n_cells and (j == len(starts) or starts[j] != hi):
            starts.insert(j, hi)
            counts.insert(j, counts[j - 1])
        return i, j

    def segments(self, t: int, i: int, j: int, hi: int) -> np.ndarray:
        """The kernel's `segments` argument for segments i .. j - 1 of step t, which end at hi:
        their j - i + 1 boundaries, then their j - i counts."""
        starts, counts = self.starts[t], self.counts[t]
        if j == i + 1:
            return np.array((starts[i], hi, counts[i]), _INT)
        out = np.empty(2 * (j - i) + 1, _INT)
        out[: j - i], out[j - i], out[j - i + 1:] = starts[i:j], hi, counts[i:j]
        return out

    def increment(self, t: int, i: int, j: int) -> None:
        """Add one sample to segments i .. j - 1 of step t (as `cover` returned them), then
        restore the canonical form. Inside the range the counts stayed distinct; only the two
        outer boundaries can now separate equal counts."""
        starts, counts = self.starts[t], self.counts[t]
        if j == i + 1:
            counts[i] += 1
        else:
            counts[i:j] = [c + 1 for c in counts[i:j]]
        if j < len(counts) and counts[j] == counts[j - 1]:
            del starts[j], counts[j]
        if i > 0 and counts[i] == counts[i - 1]:
            del starts[i], counts[i]

    def union(self, other: SegmentedCounts, t: int) -> tuple[list[int], list[int], list[int]]:
        """Step t of self and other on the union of their boundaries: (starts, counts of self,
        counts of other), one entry per union segment."""
        sa, ca, sb, cb = self.starts[t], self.counts[t], other.starts[t], other.counts[t]
        starts, na, nb = [], [], []
        i = j = 0
        while i < len(sa) or j < len(sb):
            a = sa[i] if i < len(sa) else self.n_cells
            b = sb[j] if j < len(sb) else self.n_cells
            start = min(a, b)
            i += a == start
            j += b == start
            starts.append(start)
            na.append(ca[i - 1])
            nb.append(cb[j - 1])
        return starts, na, nb

    def set_step(self, t: int, starts: list[int], counts: list[int]) -> None:
        """Replace step t by segments that cover [0, n_cells), merging equal neighbours."""
        keep = [k for k in range(len(counts)) if k == 0 or counts[k] != counts[k - 1]]
        self.starts[t] = [starts[k] for k in keep]
        self.counts[t] = [counts[k] for k in keep]

    def lengths(self, t: int, starts: list[int] | None = None) -> np.ndarray:
        """Number of cells of each segment of step t (or of the segments starting at `starts`)."""
        bounds = np.array((self.starts[t] if starts is None else starts) + [self.n_cells], _INT)
        return np.diff(bounds)

    @property
    def nb_segments(self) -> int:
        return sum(len(s) for s in self.starts)

    def expand(self, steps: slice = slice(None)) -> np.ndarray:
        """The count of every cell of the time steps `steps`: (steps, n_cells) int64."""
        rows = range(len(self.starts))[steps]
        out = np.empty((len(rows), self.n_cells), _INT)
        for row, t in zip(out, rows):
            lengths = np.diff(self.starts[t] + [self.n_cells])
            row[:] = np.repeat(np.array(self.counts[t], _INT), lengths)
        return out

    def to_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flat int64 arrays (offsets, starts, counts): step t's segments are entries
        offsets[t] .. offsets[t + 1] - 1 of starts and counts."""
        size = self.nb_segments
        offsets = np.zeros(len(self.starts) + 1, _INT)
        np.cumsum([len(s) for s in self.starts], out=offsets[1:])
        starts = np.fromiter(itertools.chain.from_iterable(self.starts), _INT, size)
        counts = np.fromiter(itertools.chain.from_iterable(self.counts), _INT, size)
        return offsets, starts, counts

    @classmethod
    def from_arrays(
        cls, nb_time_steps: int, n_cells: int, offsets: np.ndarray, starts: np.ndarray,
        counts: np.ndarray,
    ) -> SegmentedCounts:
        """Inverse of `to_arrays`. Raises ValueError unless the arrays describe, for every step,
        segments that start at 0, increase strictly and stay below n_cells, with counts >= 0
        (equal neighbours are merged)."""
        offsets, starts, counts = (np.asarray(a) for a in (offsets, starts, counts))
        for name, array in (("offsets", offsets), ("starts", starts), ("counts", counts)):
            if array.ndim != 1 or array.dtype != _INT:
                raise ValueError(f"count {name} must be a 1-D int64 array, got "
                                 f"{array.dtype}{list(array.shape)}")
        if len(offsets) != nb_time_steps + 1 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
            raise ValueError(f"count offsets must be {nb_time_steps + 1} nondecreasing values "
                             f"from 0")
        if offsets[-1] != len(starts) or len(starts) != len(counts):
            raise ValueError(f"count offsets end at {offsets[-1]}, but there are {len(starts)} "
                             f"segment starts and {len(counts)} counts")
        if np.any(counts < 0):
            raise ValueError("negative sample count")
        result = cls(nb_time_steps, n_cells)
        for t in range(nb_time_steps):
            s = starts[offsets[t]:offsets[t + 1]]
            if n_cells == 0:
                valid = len(s) == 0
            else:
                valid = (len(s) > 0 and s[0] == 0 and s[-1] < n_cells
                         and bool(np.all(s[1:] > s[:-1])))
            if not valid:
                raise ValueError(f"the count segments of time step {t} do not cover the "
                                 f"{n_cells} cells: starts {s.tolist()}")
            result.set_step(t, s.tolist(), counts[offsets[t]:offsets[t + 1]].tolist())
        return result
