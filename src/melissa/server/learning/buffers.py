"""Bounded training buffers between the receive loop (producer) and the training loop (consumer).

Five policies (docs/deep-learning.md, "Buffers"; Meyer et al., ICML 2023, and the Melissa
buffers after it):

- FIFO: a batch is the oldest samples, removed. A full buffer blocks `put`.
- FIRO (first in, random out): a batch is uniformly random samples, removed. A full buffer
  blocks `put`.
- Reservoir: a batch is uniformly random samples, kept (so reused). A full buffer makes `put`
  evict a uniformly random sample that was already used, or any sample if none was.
- BatchReservoir: a Reservoir whose batch takes every sample not used yet first (oldest first),
  then fills up with uniformly random used ones: a new sample is trained on at the next batch,
  the rest of the batch replays older ones.
- SimPairedReservoir: a Reservoir of samples keyed by (simulation, time step) whose batch is
  uniformly random pairs (step t, step t + 1) of one simulation, both in the buffer, for
  autoregressive surrogates x(t) -> x(t + 1); a pair is "used" once served.

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
from typing import Any, Generic, Literal, TypeVar

T = TypeVar("T")

Policy = Literal["fifo", "firo", "reservoir", "batch_reservoir", "sim_paired_reservoir"]
POLICIES: tuple[str, ...] = ("fifo", "firo", "reservoir", "batch_reservoir", "sim_paired_reservoir")
Key = tuple[int, int]  # (simulation id, time step) of a sample


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
    def unused_held(self) -> int:
        """Samples in the buffer that no batch has served yet."""
        return self.received - self.distinct_served - self.evicted_unused

    @property
    def reuse(self) -> float:
        """Mean number of times a served sample was used (1 for FIFO and FIRO)."""
        return self.served / self.distinct_served if self.distinct_served else 0.0


@dataclass(frozen=True)
class BufferState(Generic[T]):
    """What a checkpoint keeps of a buffer (`SampleBuffer.state`)."""

    items: list[T]
    used: list[bool]  # per item: served at least once (SimPairedReservoir: its pair to t + 1)
    counters: dict[str, int]
    rng: list[Any]  # random.Random state, JSON-friendly


def _rng_json(state: tuple[Any, ...]) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_tuple(state: list[Any]) -> tuple[Any, ...]:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


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
        self._drained = 0  # batches served after reception ended

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

    def _available(self) -> int:
        """Batch entries that can be served now (samples; pairs for SimPairedReservoir)."""
        return self._size()

    @abstractmethod
    def _contents(self) -> tuple[list[T], list[bool]]:
        """Every item held and whether it was used, in an order `_load` rebuilds the buffer from."""

    @abstractmethod
    def _load(self, items: list[T], used: list[bool]) -> None:
        """Refill an empty buffer from `_contents()` output."""

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
                size, available = self._size(), self._available()
                if self._ended:
                    if not self._has_more_after_end() or available == 0:
                        return []
                    n = min(batch_size, available)
                    break
                # A full batch from a large enough pool (never more than the buffer can hold).
                if (available and size >= min(self.capacity, self._pool())
                        and (available >= batch_size or size >= self.capacity)):
                    n = min(batch_size, available)
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
        if self._ended:
            self._drained += 1

    @property
    def exhausted(self) -> bool:
        """Reception ended (or the buffer was aborted) and no batch will ever be served again."""
        with self._cond:
            return self._aborted or (self._ended and (not self._has_more_after_end()
                                                      or self._available() == 0))

    # -- checkpoints ----------------------------------------------------------------------------
    def state(self) -> BufferState[T]:
        """Contents, use flags, counters and random state, consistent with each other."""
        with self._cond:
            items, used = self._contents()
            counters = {"received": self._received, "evicted": self._evicted,
                        "evicted_unused": self._evicted_unused, "served": self._served,
                        "distinct_served": self._distinct_served, "drained": self._drained}
            return BufferState(items, used, counters, _rng_json(self._rng.getstate()))

    def restore(self, state: BufferState[T]) -> None:
        """Continue from `state()` of a buffer of the same policy (this one must be new)."""
        with self._cond:
            if self._received or self._size():
                raise ValueError("restore into a buffer that already received samples")
            self._load(list(state.items), list(state.used))
            c = state.counters
            self._received, self._evicted = int(c["received"]), int(c["evicted"])
            self._evicted_unused, self._served = int(c["evicted_unused"]), int(c["served"])
            self._distinct_served, self._drained = int(c["distinct_served"]), int(c["drained"])
            self._rng.setstate(_rng_tuple(state.rng))
            self._cond.notify_all()

    def unused(self) -> list[T]:
        """The items held that no batch has served yet."""
        with self._cond:
            items, used = self._contents()
            return [item for item, was_used in zip(items, used, strict=True) if not was_used]

    def wait_received(self, count: int, timeout: float) -> None:
        """Wait until more than `count` samples were received, reception ended or `timeout`."""
        with self._cond:
            self._cond.wait_for(lambda: self._received > count or self._ended or self._aborted,
                                timeout)

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

    def _contents(self) -> tuple[list[T], list[bool]]:
        return list(self._queue), [False] * len(self._queue)

    def _load(self, items: list[T], used: list[bool]) -> None:
        self._queue.extend(items)


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

    def _contents(self) -> tuple[list[T], list[bool]]:
        return list(self._items), [False] * len(self._items)

    def _load(self, items: list[T], used: list[bool]) -> None:
        self._items.extend(items)


class ReservoirBuffer(SampleBuffer[T]):
    """Samples stay until evicted; `put` on a full reservoir evicts, preferring used samples."""

    blocks_when_full = False

    def __init__(
        self, capacity: int, watermark: int = 1, seed: int = 0, drain_batches: int | None = None
    ) -> None:
        super().__init__(capacity, watermark, seed)
        self.drain_batches = _checked_drain_batches(drain_batches)
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

    def _has_more_after_end(self) -> bool:
        if self._size() == 0:
            return False
        if self.drain_batches is not None:
            return self._drained < self.drain_batches
        return bool(self._unused)

    def _contents(self) -> tuple[list[T], list[bool]]:
        return self._unused + self._used, [False] * len(self._unused) + [True] * len(self._used)

    def _load(self, items: list[T], used: list[bool]) -> None:
        for item, was_used in zip(items, used, strict=True):
            (self._used if was_used else self._unused).append(item)


class BatchReservoirBuffer(ReservoirBuffer[T]):
    """A Reservoir whose batch is every unused sample first (oldest first), then random used ones:
    a sample is trained on at the first batch after its arrival, and replayed afterwards."""

    def _insert(self, item: T) -> None:
        if self._size() >= self.capacity and not self._used:
            self._unused.pop(0)  # all unused: the oldest goes (a FIFO of fresh samples)
            self._evicted += 1
            self._evicted_unused += 1
        super()._insert(item)  # with room, or evicting a random used sample

    def _take(self, n: int) -> list[T]:
        fresh = self._unused[:n]
        del self._unused[:n]
        replay = [self._used[i] for i in self._rng.sample(range(len(self._used)), n - len(fresh))]
        self._used.extend(fresh)
        self._served += n
        self._distinct_served += len(fresh)
        return fresh + replay


class SimPairedReservoirBuffer(SampleBuffer[tuple[Key, T]]):
    """Samples keyed by (simulation, time step), put as (key, item); a batch is uniformly random
    pairs (item at t, item at t + 1) of one simulation, both held, no pair twice in a batch.

    A pair is used once served. A full buffer evicts a random sample whose pairs were all used
    (their number is what `reuse` counts), or any sample if none is; an evicted sample takes its
    pairs with it. After reception the pairs are served until each was used once, or for
    `drain_batches` batches.
    """

    blocks_when_full = False

    def __init__(
        self, capacity: int, watermark: int = 1, seed: int = 0, drain_batches: int | None = None
    ) -> None:
        super().__init__(capacity, watermark, seed)
        self.drain_batches = _checked_drain_batches(drain_batches)
        self._items: dict[Key, T] = {}
        self._pairs: list[Key] = []  # key of each pair's earlier sample
        self._pair_at: dict[Key, int] = {}  # its position in _pairs
        self._used: set[Key] = set()  # pairs served at least once

    def _size(self) -> int:
        return len(self._items)

    def _pool(self) -> int:
        return self.watermark

    def _available(self) -> int:
        return len(self._pairs)

    def _add_pair(self, first: Key) -> None:
        self._pair_at[first] = len(self._pairs)
        self._pairs.append(first)

    def _drop_pair(self, first: Key) -> None:
        at = self._pair_at.pop(first, None)
        if at is None:
            return
        last = self._pairs.pop()
        if at < len(self._pairs):
            self._pairs[at] = last
            self._pair_at[last] = at
        self._used.discard(first)

    def _spent(self, key: Key) -> bool:
        """Every pair of this sample was used (a sample with no pair is not spent)."""
        sim, step = key
        pairs = [k for k in ((sim, step - 1), key) if k in self._pair_at]
        return bool(pairs) and all(k in self._used for k in pairs)

    def _insert(self, entry: tuple[Key, T]) -> None:
        key, item = entry
        if key in self._items:
            raise ValueError(f"sample {key} (simulation, time step) is in the buffer already")
        if self._size() >= self.capacity:
            keys = list(self._items)
            spent = [k for k in keys if self._spent(k)]
            victim = self._rng.choice(spent if spent else keys)
            if not spent:
                self._evicted_unused += 1
            del self._items[victim]
            self._drop_pair((victim[0], victim[1] - 1))
            self._drop_pair(victim)
            self._evicted += 1
        self._items[key] = item
        sim, step = key
        if (sim, step - 1) in self._items:
            self._add_pair((sim, step - 1))
        if (sim, step + 1) in self._items:
            self._add_pair(key)

    def _take(self, n: int) -> list[tuple[Key, T]]:
        firsts = [self._pairs[i] for i in self._rng.sample(range(len(self._pairs)), n)]
        fresh = [k for k in firsts if k not in self._used]
        self._used.update(fresh)
        self._served += n
        self._distinct_served += len(fresh)
        return [(self._items[k], self._items[(k[0], k[1] + 1)]) for k in firsts]  # type: ignore[misc]

    def _has_more_after_end(self) -> bool:
        if not self._pairs:
            return False
        if self.drain_batches is not None:
            return self._drained < self.drain_batches
        return len(self._used) < len(self._pairs)

    def _contents(self) -> tuple[list[tuple[Key, T]], list[bool]]:
        keys = list(self._items)
        return [(k, self._items[k]) for k in keys], [k in self._used for k in keys]

    def _load(self, items: list[tuple[Key, T]], used: list[bool]) -> None:
        for entry in items:
            self._insert((tuple(entry[0]), entry[1]))  # type: ignore[arg-type]
        self._used.update(tuple(e[0]) for e, u in zip(items, used, strict=True)  # type: ignore[misc]
                          if u and tuple(e[0]) in self._pair_at)


def make_buffer(
    policy: Policy, capacity: int, watermark: int, seed: int, drain_batches: int | None = None
) -> SampleBuffer[Any]:
    if policy == "fifo":
        return FIFOBuffer(capacity, watermark, seed)
    if policy == "firo":
        return FIROBuffer(capacity, watermark, seed)
    if policy == "reservoir":
        return ReservoirBuffer(capacity, watermark, seed, drain_batches)
    if policy == "batch_reservoir":
        return BatchReservoirBuffer(capacity, watermark, seed, drain_batches)
    if policy == "sim_paired_reservoir":
        return SimPairedReservoirBuffer(capacity, watermark, seed, drain_batches)
    raise ValueError(f"unknown buffer policy {policy!r}: expected one of {', '.join(POLICIES)}")


def _checked_drain_batches(drain_batches: int | None) -> int | None:
    """Batches served after reception ended (None: until every sample was used once)."""
    if drain_batches is not None and drain_batches < 0:
        raise ValueError(f"drain_batches must be >= 0 or None, got {drain_batches}")
    return drain_batches
