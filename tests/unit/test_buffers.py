"""Training buffers: ordering, eviction, reuse counts, watermark, end of reception, and a real
concurrent producer and consumer (threads) driven by hypothesis."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from melissa.server.learning.buffers import (
    BatchReservoirBuffer,
    BufferClosed,
    FIFOBuffer,
    FIROBuffer,
    ReservoirBuffer,
    SampleBuffer,
    SimPairedReservoirBuffer,
    make_buffer,
)


def fill(buffer: SampleBuffer[int], items: range) -> None:
    for i in items:
        buffer.put(i, timeout=1)


def drain(buffer: SampleBuffer[int], batch_size: int) -> list[list[int]]:
    batches = []
    while True:
        batch = buffer.get_batch(batch_size, timeout=1)
        if not batch:
            assert buffer.exhausted, "get_batch timed out on a buffer that is not exhausted"
            return batches
        batches.append(batch)


# -- FIFO ---------------------------------------------------------------------------------------
def test_fifo_serves_oldest_first_each_once() -> None:
    buffer: FIFOBuffer[int] = FIFOBuffer(capacity=10)
    fill(buffer, range(7))
    assert buffer.get_batch(3, timeout=0) == [0, 1, 2]
    fill(buffer, range(7, 9))
    assert buffer.get_batch(3, timeout=0) == [3, 4, 5]
    assert buffer.get_batch(3, timeout=0) == [6, 7, 8]
    assert buffer.get_batch(3, timeout=0) == []  # empty, reception not ended: wait, then nothing
    assert not buffer.exhausted
    s = buffer.stats()
    assert (s.received, s.served, s.distinct_served, s.evicted, s.reuse) == (9, 9, 9, 0, 1.0)


def test_fifo_serves_full_batches_until_reception_ends_then_the_rest() -> None:
    buffer: FIFOBuffer[int] = FIFOBuffer(capacity=10)
    fill(buffer, range(5))
    assert buffer.get_batch(4, timeout=0) == [0, 1, 2, 3]
    assert buffer.get_batch(4, timeout=0) == []  # 1 sample: not a full batch yet
    buffer.end_reception()
    assert buffer.get_batch(4, timeout=0) == [4]
    assert buffer.get_batch(4, timeout=0) == [] and buffer.exhausted


def test_a_batch_larger_than_the_buffer_is_served_once_the_buffer_is_full() -> None:
    buffer: FIROBuffer[int] = FIROBuffer(capacity=3, watermark=2)
    fill(buffer, range(2))
    assert buffer.get_batch(5, timeout=0) == []
    fill(buffer, range(2, 3))
    assert sorted(buffer.get_batch(5, timeout=0)) == [0, 1, 2]


def test_full_fifo_blocks_put_until_a_batch_is_taken() -> None:
    buffer: FIFOBuffer[int] = FIFOBuffer(capacity=3)
    fill(buffer, range(3))
    with pytest.raises(TimeoutError, match="buffer full"):
        buffer.put(3, timeout=0.05)
    done = threading.Event()

    def producer() -> None:
        buffer.put(3)  # blocks until the consumer makes room
        done.set()

    thread = threading.Thread(target=producer)
    thread.start()
    time.sleep(0.1)
    assert not done.is_set()
    assert buffer.get_batch(2, timeout=1) == [0, 1]
    thread.join(timeout=5)
    assert done.is_set()
    assert buffer.stats().size == 2


def test_abort_wakes_a_blocked_producer() -> None:
    buffer: FIROBuffer[int] = FIROBuffer(capacity=1)
    buffer.put(0)
    errors: list[Exception] = []

    def producer() -> None:
        try:
            buffer.put(1)
        except BufferClosed as exc:
            errors.append(exc)

    thread = threading.Thread(target=producer)
    thread.start()
    time.sleep(0.05)
    buffer.abort()
    thread.join(timeout=5)
    assert not thread.is_alive() and len(errors) == 1
    assert buffer.exhausted and buffer.get_batch(1, timeout=0) == []


def test_wait_received_returns_on_a_new_sample_or_the_end_of_reception() -> None:
    buffer: ReservoirBuffer[int] = ReservoirBuffer(capacity=4)
    buffer.put(0)
    started = time.monotonic()
    buffer.wait_received(0, timeout=5)  # one sample already: no wait
    buffer.wait_received(1, timeout=0.05)  # none more: the timeout
    assert time.monotonic() - started < 1
    for wake in (lambda: buffer.put(1), buffer.end_reception):
        timer = threading.Timer(0.05, wake)
        timer.start()
        started = time.monotonic()
        buffer.wait_received(1, timeout=5)
        assert time.monotonic() - started < 2
        timer.join()


def test_put_after_end_of_reception_is_an_error() -> None:
    buffer: ReservoirBuffer[int] = ReservoirBuffer(capacity=4)
    buffer.end_reception()
    with pytest.raises(BufferClosed, match="after end_reception"):
        buffer.put(1)


# -- FIRO ---------------------------------------------------------------------------------------
def test_firo_waits_for_the_watermark_and_serves_each_sample_once() -> None:
    buffer: FIROBuffer[int] = FIROBuffer(capacity=20, watermark=8, seed=3)
    fill(buffer, range(7))
    assert buffer.get_batch(2, timeout=0) == []  # 7 < watermark
    fill(buffer, range(7, 8))
    batch = buffer.get_batch(2, timeout=0)
    assert len(batch) == 2
    assert buffer.get_batch(2, timeout=0) == []  # 6 left, below the watermark again
    fill(buffer, range(8, 20))
    buffer.end_reception()
    served = batch + [i for b in drain(buffer, 2) for i in b]  # below the watermark: drains
    assert sorted(served) == list(range(20))
    assert buffer.stats().reuse == 1.0


def test_firo_order_is_random_but_seeded() -> None:
    def order(seed: int) -> list[int]:
        buffer: FIROBuffer[int] = FIROBuffer(capacity=50, seed=seed)
        fill(buffer, range(50))
        buffer.end_reception()
        return [i for b in drain(buffer, 5) for i in b]

    assert order(1) == order(1)
    assert order(1) != order(2)
    assert order(1) != list(range(50))


# -- Reservoir ----------------------------------------------------------------------------------
def test_reservoir_keeps_served_samples_and_counts_reuse() -> None:
    buffer: ReservoirBuffer[int] = ReservoirBuffer(capacity=10, watermark=4, seed=0)
    fill(buffer, range(4))
    uses: Counter[int] = Counter()
    for _ in range(50):
        batch = buffer.get_batch(3, timeout=0)
        assert len(batch) == 3 and len(set(batch)) == 3  # no repeat within a batch
        uses.update(batch)
    assert set(uses) == set(range(4))  # 4 samples drawn 150 times: all kept, all reused
    s = buffer.stats()
    assert (s.size, s.served, s.distinct_served) == (4, 150, 4)
    assert s.reuse == pytest.approx(150 / 4)


def test_full_reservoir_evicts_a_used_sample_first() -> None:
    buffer: ReservoirBuffer[int] = ReservoirBuffer(capacity=4, seed=5)
    fill(buffer, range(4))
    used = set(buffer.get_batch(2, timeout=0))
    fill(buffer, range(4, 6))  # two evictions: exactly the two used samples go
    buffer.end_reception()
    left = {i for b in drain(buffer, 4) for i in b}
    assert left == {0, 1, 2, 3, 4, 5} - used
    s = buffer.stats()
    assert (s.evicted, s.evicted_unused, s.received) == (2, 0, 6)


def test_full_reservoir_of_unused_samples_evicts_one_and_counts_it() -> None:
    buffer: ReservoirBuffer[int] = ReservoirBuffer(capacity=3, seed=0)
    fill(buffer, range(5))  # never blocks
    s = buffer.stats()
    assert (s.size, s.evicted, s.evicted_unused) == (3, 2, 2)


def test_reservoir_after_reception_uses_every_sample_at_least_once() -> None:
    buffer: ReservoirBuffer[int] = ReservoirBuffer(capacity=30, watermark=30, seed=1)
    fill(buffer, range(30))
    buffer.end_reception()
    seen = {i for b in drain(buffer, 4) for i in b}
    assert seen == set(range(30))
    assert buffer.exhausted
    assert buffer.stats().distinct_served == 30


def test_reservoir_drain_batches_bounds_training_after_reception() -> None:
    buffer: ReservoirBuffer[int] = ReservoirBuffer(capacity=30, seed=1, drain_batches=7)
    fill(buffer, range(30))
    buffer.end_reception()
    assert len(drain(buffer, 2)) == 7


def test_make_buffer_names_the_policies() -> None:
    assert isinstance(make_buffer("fifo", 4, 1, 0), FIFOBuffer)
    assert isinstance(make_buffer("firo", 4, 2, 0), FIROBuffer)
    assert isinstance(make_buffer("reservoir", 4, 2, 0, drain_batches=3), ReservoirBuffer)
    assert isinstance(make_buffer("batch_reservoir", 4, 2, 0), BatchReservoirBuffer)
    assert isinstance(make_buffer("sim_paired_reservoir", 4, 2, 0), SimPairedReservoirBuffer)
    with pytest.raises(ValueError, match="expected one of fifo, firo, reservoir, batch_reservoir"):
        make_buffer("lifo", 4, 1, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="watermark"):
        FIROBuffer(capacity=4, watermark=5)


@pytest.mark.parametrize("policy", ["fifo", "firo", "reservoir", "batch_reservoir"])
def test_unused_names_the_samples_no_batch_served_yet(policy: str) -> None:
    """What active sampling measures while the training waits (training_loop.py)."""
    buffer: SampleBuffer[int] = make_buffer(policy, 10, 4, 0)  # type: ignore[arg-type]
    fill(buffer, range(6))
    served = buffer.get_batch(4, timeout=0)
    assert len(served) == 4
    assert sorted(buffer.unused()) == sorted(set(range(6)) - set(served))
    fill(buffer, range(6, 8))
    assert sorted(buffer.unused()) == sorted(set(range(8)) - set(served))
    assert buffer.stats().unused_held == 4


# -- BatchReservoir -----------------------------------------------------------------------------
def test_batch_reservoir_serves_new_samples_first_then_replays_used_ones() -> None:
    buffer: BatchReservoirBuffer[int] = BatchReservoirBuffer(capacity=20, watermark=4, seed=2)
    fill(buffer, range(6))
    assert buffer.get_batch(4, timeout=0) == [0, 1, 2, 3]  # all fresh, oldest first
    fill(buffer, range(6, 7))
    batch = buffer.get_batch(4, timeout=0)
    assert batch[:3] == [4, 5, 6]  # the three unused samples, then one replayed
    assert batch[3] in {0, 1, 2, 3}
    replay = buffer.get_batch(4, timeout=0)  # nothing new: four distinct used samples
    assert len(set(replay)) == 4 and set(replay) <= set(range(7))
    s = buffer.stats()
    assert (s.received, s.served, s.distinct_served) == (7, 12, 7)


def test_batch_reservoir_every_sample_is_trained_on_when_training_keeps_pace() -> None:
    buffer: BatchReservoirBuffer[int] = BatchReservoirBuffer(capacity=8, watermark=2, seed=0)
    seen: set[int] = set()
    for start in range(0, 100, 2):
        fill(buffer, range(start, start + 2))  # evicts used samples only
        seen.update(buffer.get_batch(4, timeout=0))
    assert seen == set(range(100))
    s = buffer.stats()
    assert s.evicted_unused == 0 and s.evicted == 100 - 8


def test_batch_reservoir_full_of_unused_samples_forgets_the_oldest() -> None:
    buffer: BatchReservoirBuffer[int] = BatchReservoirBuffer(capacity=3, seed=0)
    fill(buffer, range(5))
    buffer.end_reception()
    assert [i for b in drain(buffer, 3) for i in b] == [2, 3, 4]
    s = buffer.stats()
    assert (s.evicted, s.evicted_unused) == (2, 2)


# -- SimPairedReservoir -------------------------------------------------------------------------
def keyed(sim: int, step: int) -> tuple[tuple[int, int], str]:
    return (sim, step), f"s{sim}t{step}"


def test_paired_reservoir_pairs_consecutive_steps_of_one_simulation_only() -> None:
    buffer: SimPairedReservoirBuffer[str] = SimPairedReservoirBuffer(capacity=50, seed=4)
    for sim, steps in {0: [0, 1, 2, 3], 1: [0, 2, 3], 2: [5]}.items():
        for step in steps:
            buffer.put(keyed(sim, step))
    buffer.end_reception()
    pairs = [p for b in drain(buffer, 2) for p in b]
    # 0: (0,1) (1,2) (2,3); 1: (2,3) only (step 1 is missing); 2: none
    assert sorted(pairs) == sorted([("s0t0", "s0t1"), ("s0t1", "s0t2"), ("s0t2", "s0t3"),
                                    ("s1t2", "s1t3")])
    s = buffer.stats()
    assert (s.received, s.size, s.served, s.distinct_served) == (8, 8, 4, 4)


def test_paired_reservoir_waits_for_a_pair_and_pairs_out_of_order_arrivals() -> None:
    buffer: SimPairedReservoirBuffer[str] = SimPairedReservoirBuffer(capacity=10, seed=0)
    buffer.put(keyed(3, 1))
    buffer.put(keyed(4, 0))
    assert buffer.get_batch(1, timeout=0) == []  # two samples, no pair
    buffer.put(keyed(3, 0))  # the earlier step arrives second
    assert buffer.get_batch(1, timeout=0) == [("s3t0", "s3t1")]
    with pytest.raises(ValueError, match="in the buffer already"):
        buffer.put(keyed(3, 0))


def test_paired_reservoir_reuses_pairs_and_evicts_spent_samples_first() -> None:
    buffer: SimPairedReservoirBuffer[str] = SimPairedReservoirBuffer(capacity=4, seed=1)
    for step in range(4):
        buffer.put(keyed(0, step))
    uses: Counter[tuple[str, str]] = Counter()
    for _ in range(30):
        batch = buffer.get_batch(2, timeout=0)
        assert len(batch) == 2 and len(set(batch)) == 2
        uses.update(batch)
    assert len(uses) == 3  # every pair reused
    buffer.put(keyed(1, 0))  # full: one sample of simulation 0 goes, with its pairs
    s = buffer.stats()
    assert (s.size, s.evicted, s.evicted_unused) == (4, 1, 0)
    for sim, step in [(1, 1)]:
        buffer.put(keyed(sim, step))
    buffer.end_reception()
    left = [p for b in drain(buffer, 8) for p in b]
    assert ("s1t0", "s1t1") in left  # the new pair is served before the end


# -- checkpoints --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "policy", ["fifo", "firo", "reservoir", "batch_reservoir", "sim_paired_reservoir"]
)
def test_a_restored_buffer_continues_as_the_original(policy: str) -> None:
    """Same contents, use flags, counters and random state: the same batches from then on."""
    def entry(i: int) -> object:
        return ((i // 5, i % 5), i) if policy == "sim_paired_reservoir" else i

    original: SampleBuffer[object] = make_buffer(policy, 12, 4, seed=7)  # type: ignore[arg-type]
    for i in range(10):
        original.put(entry(i))
    first = original.get_batch(3, timeout=0)
    copy: SampleBuffer[object] = make_buffer(policy, 12, 4, seed=99)  # type: ignore[arg-type]
    copy.restore(original.state())
    assert copy.stats() == original.stats()
    for buffer in (original, copy):
        buffer.put(entry(10))
        buffer.end_reception()
    assert drain(copy, 3) == drain(original, 3)
    assert copy.stats() == original.stats()
    assert first
    with pytest.raises(ValueError, match="already received"):
        copy.restore(original.state())


# -- concurrency --------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(
    policy=st.sampled_from(["fifo", "firo", "reservoir", "batch_reservoir"]),
    capacity=st.integers(1, 40),
    watermark_fraction=st.floats(0, 1),
    batch_size=st.integers(1, 12),
    items=st.integers(0, 300),
    producers=st.integers(1, 3),
)
def test_concurrent_producers_and_consumer(
    policy: str, capacity: int, watermark_fraction: float, batch_size: int, items: int,
    producers: int,
) -> None:
    """Producers put while the consumer trains: nothing is lost or duplicated (FIFO, FIRO), or
    every sample is served or counted as evicted unused (Reservoir); FIFO keeps each producer's
    order; nobody hangs; the counters agree with what was seen."""
    watermark = max(1, round(watermark_fraction * capacity))
    buffer: SampleBuffer[tuple[int, int]] = make_buffer(  # type: ignore[arg-type]
        policy, capacity, watermark, seed=items
    )
    per_producer = [range(p, items, producers) for p in range(producers)]
    served: list[tuple[int, int]] = []

    def produce(p: int) -> None:
        for i in per_producer[p]:
            buffer.put((p, i), timeout=5)

    def consume() -> None:
        while True:
            batch = buffer.get_batch(batch_size, timeout=5)
            if not batch:
                assert buffer.exhausted, "get_batch timed out: producer and consumer stuck"
                return
            assert len(batch) <= batch_size
            served.extend(batch)

    with ThreadPoolExecutor(producers + 1) as pool:  # .result() re-raises a thread's error
        consumer = pool.submit(consume)
        for done in [pool.submit(produce, p) for p in range(producers)]:
            done.result(timeout=30)
        buffer.end_reception()
        consumer.result(timeout=30)

    s = buffer.stats()
    counts = Counter(served)
    assert s.received == items and s.served == len(served)
    assert s.distinct_served == len(counts)
    sent = {(p, i) for p in range(producers) for i in per_producer[p]}
    assert set(counts) <= sent
    if policy in ("reservoir", "batch_reservoir"):
        # after reception every sample still held was used; the others were evicted
        assert len(sent - set(counts)) == s.evicted_unused
        assert s.size == min(items, capacity) and s.evicted == items - s.size
    else:
        assert counts == Counter(sent) and s.size == 0 and s.evicted == 0
    if policy == "fifo":
        for p in range(producers):
            mine = [i for q, i in served if q == p]
            assert mine == list(per_producer[p])
