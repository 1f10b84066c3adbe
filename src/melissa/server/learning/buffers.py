"""Bounded training buffers between the receive loop (producer) and the training loop (consumer).

Three policies (docs/deep-learning.md, "Buffers"; Meyer et al., ICML 2023):

- FIFO: a batch is the oldest samples, removed. A full buffer blocks `put`.
- FIRO (first in, random out): a batch is uniformly random samples, removed. A full buffer
  blocks `put`.
- Reservoir: a batch is uniformly random samples, kept (so reused). A full buffer makes `put`
  evict a uniformly random sample that was already used, or any sample if none was.

During reception a batch is served only when it is full and, for FIRO and Reservoir, the buffer
holds at least `watermark` samples (a pool to draw random batches from); a batch larger than the
buffer is served as soon as the buffer is full, with every sample in it. Once reception ended
(`end_reception`) the rest is served in partial batches: FIFO and FIRO until empty; Reservoir
until every sample in it was used at least once, or for `drain_batches` batches if given.

Framework-agnostic on purpose (no torch): a buffer holds any Python objects.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

Policy = Literal["fifo", "firo", "reservoir"]


class BufferClosed(Exception):
    """The buffer was aborted (the consumer failed) or reception already ended."""


@dataclass(frozen=True)
class BufferStats:
    """Counters of one buffer, read atomically."""

    capacity: int
    size: int  # samples in the buffer now
    received: int  # samples put
    evicted: int  # samples a put removed to make room (Reservoir)
    evicted_unused: int  # of which never used for training
    served: int  # samples handed out in batches, counting repeats
    distinct_served: int  # samples handed out at least once

    @property
    def fill(self) -> float:
        return self.size / self.capacity

    @property
    def reuse(self) -> float:
        """Mean number of times a served sample was used (1 for FIFO and FIRO)."""
        return self.served / self.distinct_served if self.distinct_served else 0.0


class SampleBuffer(ABC, Generic[T]):
    """Thread-safe bounded buffer: one or more producers `put`, one consumer `get_batch`."""

    blocks_when_full = True

    def __init__(self, capacity: int, watermark: int = 1, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
        if not 1 <= watermark <= capacity:
            raise ValueError(f"watermark must be in [1, capacity={capacity}], got {watermark}")
        self.capacity = capacity
        self.watermark = watermark
        self._rng = random.Random(seed)
        self._cond = threading.Condition()
        self._ended = False
        self._aborted = False
        self._received = 0
        self._evicted = 0
        self._evicted_unused = 0
        self._served = 0
        self._distinct_served = 0

    # -- policy ---------------------------------------------------------------------------------
    @abstractmethod
    def _size(self) -> int: ...

    @abstractmethod
    def _insert(self, item: T) -> None:
        """Add an item; called with the lock held and, if blocks_when_full, room available."""

    @abstractmethod
    def _take(self, n: int) -> list[T]:
        """Remove or draw n <= size items; counts served samples."""

    def _pool(self) -> int:
        """Samples a batch may be drawn from only once the buffer holds this many (reception)."""
        return 1

    def _has_more_after_end(self) -> bool:
        return self._size() > 0

    # -- producer -------------------------------------------------------------------------------
    def put(self, item: T, timeout: float | None = None) -> None:
        """Add a sample; waits while the buffer is full (FIFO, FIRO).

        Raises TimeoutError if it stayed full for `timeout` seconds, BufferClosed after
        `abort()` or `end_reception()`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._aborted:
                    raise BufferClosed("the training loop stopped: no more samples are taken")
                if self._ended:
                    raise BufferClosed("put after end_reception")
                if not self.blocks_when_full or self._size() < self.capacity:
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"buffer full ({self.capacity} samples) for {timeout} s")
                self._cond.wait(remaining)
            self._insert(item)
            self._received += 1
            self._cond.notify_all()

    def end_reception(self) -> None:
        """No more samples will come: serve what is left, then report `exhausted`."""
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def abort(self) -> None:
        """The consumer stopped for good: wake everyone; `put` raises BufferClosed from now on."""
        with self._cond:
            self._aborted = True
            self._cond.notify_all()

    # -- consumer -------------------------------------------------------------------------------
    def get_batch(self, batch_size: int, timeout: float | None = None) -> list[T]:
        """Up to `batch_size` samples; waits until a batch is ready.

        Returns [] if none was ready within `timeout` seconds or if the buffer is `exhausted`
        (check that property to tell the two apart).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._aborted:
                    return []
                size = self._size()
                if self._ended:
                    if not self._has_more_after_end():
                        return []
                    n = min(batch_size, size)
                    break
                # A full batch from a large enough pool (never more than the buffer can hold).
                if size >= min(self.capacity, max(batch_size, self._pool())):
                    n = min(batch_size, size)
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return []
                self._cond.wait(remaining)
            batch = self._take(n)
            self._after_end_batch()
            self._cond.notify_all()
            return batch

    def _after_end_batch(self) -> None:
        """Hook: a batch was served (the Reservoir counts its drain batches)."""

    @property
    def exhausted(self) -> bool:
        """Reception ended (or the buffer was aborted) and no batch will ever be served again."""
        with self._cond:
            return self._aborted or (self._ended and not self._has_more_after_end())

    @property
    def reception_ended(self) -> bool:
        with self._cond:
            return self._ended

    def stats(self) -> BufferStats:
        with self._cond:
            return BufferStats(
                self.capacity, self._size(), self._received, self._evicted, self._evicted_unused,
                self._served, self._distinct_served,
            )


class FIFOBuffer(SampleBuffer[T]):
    def __init__(self, capacity: int, watermark: int = 1, seed: int = 0) -> None:
        super().__init__(capacity, watermark, seed)
        self._queue: collections.deque[T] = collections.deque()

    def _size(self) -> int:
        return len(self._queue)

    def _insert(self, item: T) -> None:
        self._queue.append(item)

    def _take(self, n: int) -> list[T]:
        self._served += n
        self._distinct_served += n
        return [self._queue.popleft() for _ in range(n)]


def _swap_remove(items: list[T], positions: list[int]) -> list[T]:
    """Remove items at distinct `positions` in O(len(positions)), order not kept."""
    taken = []
    for i in sorted(positions, reverse=True):  # every position above i is unpicked
        taken.append(items[i])
        last = items.pop()
        if i < len(items):
            items[i] = last
    return taken


class FIROBuffer(SampleBuffer[T]):
    def __init__(self, capacity: int, watermark: int = 1, seed: int = 0) -> None:
        super().__init__(capacity, watermark, seed)
        self._items: list[T] = []

    def _size(self) -> int:
        return len(self._items)

    def _pool(self) -> int:
        return self.watermark

    def _insert(self, item: T) -> None:
        self._items.append(item)

    def _take(self, n: int) -> list[T]:
        self._served += n
        self._distinct_served += n
        return _swap_remove(self._items, self._rng.sample(range(len(self._items)), n))


class ReservoirBuffer(SampleBuffer[T]):
    """Samples stay until evicted; `put` on a full reservoir evicts, preferring used samples."""

    blocks_when_full = False

    def __init__(
        self, capacity: int, watermark: int = 1, seed: int = 0, drain_batches: int | None = None
    ) -> None:
        super().__init__(capacity, watermark, seed)
        if drain_batches is not None and drain_batches < 0:
            raise ValueError(f"drain_batches must be >= 0 or None, got {drain_batches}")
        self.drain_batches = drain_batches
        self._drained = 0  # batches served after reception ended
        # Two pools so that eviction of a used sample and drawing are O(1) per sample.
        self._unused: list[T] = []
        self._used: list[T] = []

    def _size(self) -> int:
        return len(self._unused) + len(self._used)

    def _pool(self) -> int:
        return self.watermark

    def _insert(self, item: T) -> None:
        if self._size() >= self.capacity:
            pool = self._used if self._used else self._unused
            if pool is self._unused:
                self._evicted_unused += 1
            _swap_remove(pool, [self._rng.randrange(len(pool))])
            self._evicted += 1
        self._unused.append(item)

    def _take(self, n: int) -> list[T]:
        unused = len(self._unused)
        picks = self._rng.sample(range(self._size()), n)
        batch = [self._used[i - unused] for i in picks if i >= unused]
        first_use = _swap_remove(self._unused, [i for i in picks if i < unused])
        self._used.extend(first_use)
        batch.extend(first_use)
        self._served += n
        self._distinct_served += len(first_use)
        return batch

    def _after_end_batch(self) -> None:
        if self._ended:
            self._drained += 1

    def _has_more_after_end(self) -> bool:
        if self._size() == 0:
            return False
        if self.drain_batches is not None:
            return self._drained < self.drain_batches
        return bool(self._unused)


def make_buffer(
    policy: Policy, capacity: int, watermark: int, seed: int, drain_batches: int | None = None
) -> SampleBuffer[T]:
    if policy == "fifo":
        return FIFOBuffer(capacity, watermark, seed)
    if policy == "firo":
        return FIROBuffer(capacity, watermark, seed)
    if policy == "reservoir":
        return ReservoirBuffer(capacity, watermark, seed, drain_batches)
    raise ValueError(f"unknown buffer policy {policy!r}: expected fifo, firo or reservoir")
