"""A training server's receive side through a checkpoint and back: the paired buffer with its
use flags, the paired validation set, a time step of which one field of two arrived, and the
simulations' parameters (server/learning/snapshot.py)."""

from __future__ import annotations

import numpy as np

from melissa.server.learning import snapshot
from melissa.server.learning.buffers import SimPairedReservoirBuffer
from melissa.server.learning.samples import SampleAssembler, ValidationSet
from melissa.server.registry import FieldInfo


def item(sim: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    return np.array([sim, step], np.float32), np.full(3, sim * 10 + step, np.float32)


def test_receive_side_round_trip() -> None:
    buffer: SimPairedReservoirBuffer[tuple[np.ndarray, np.ndarray]] = SimPairedReservoirBuffer(
        capacity=10, seed=3)
    for step in range(3):
        buffer.put(((1, step), item(1, step)))
    served = buffer.get_batch(1, timeout=0)
    validation: ValidationSet[tuple[np.ndarray, np.ndarray]] = ValidationSet(paired=True)
    for step in (1, 0):
        validation.add(item(5, step), (5, step))
    u, v = FieldInfo(0, "u", 4, None, 0, 4), FieldInfo(1, "v", 2, None, 0, 2)
    assembler = SampleAssembler(["u", "v"])
    assembler.declare(u)
    assembler.declare(v)
    assert assembler.add(u, 1, 3, 0, np.arange(4, dtype=np.float32)) is None  # v still missing
    arrays = snapshot.encode(buffer.state(), True, validation, assembler,
                             {1: np.array([0.25]), 5: np.array([0.75])}, b"weights")

    back = snapshot.decode({k: np.frombuffer(a.tobytes(), a.dtype).reshape(a.shape)
                            for k, a in arrays.items()}, paired=True)
    copy: SimPairedReservoirBuffer[tuple[np.ndarray, np.ndarray]] = SimPairedReservoirBuffer(
        capacity=10, seed=0)
    copy.restore(back.buffer)
    assert copy.stats() == buffer.stats()
    copy.end_reception()
    assert len(copy.get_batch(5, timeout=0)) == 2  # both pairs, one of them still unused
    assert copy.exhausted and copy.stats().distinct_served == 2  # the used flag came back
    assert served
    restored_validation: ValidationSet[tuple[np.ndarray, np.ndarray]] = ValidationSet(paired=True)
    for key, entry in back.validation:
        assert key is not None
        restored_validation.add(entry, key)
    (earlier, later), = restored_validation.since(0)
    assert earlier[1][0] == 50 and later[1][0] == 51
    fresh = SampleAssembler(["u", "v"])
    fresh.declare(u)
    fresh.declare(v)
    fresh.restore_partials(back.partials)
    fields = fresh.add(v, 1, 3, 0, np.array([7, 8], np.float32))
    assert fields is not None and fields["u"].tolist() == [0, 1, 2, 3]
    assert back.parameters[5].tolist() == [0.75] and back.training == b"weights"
