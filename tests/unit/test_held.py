"""HeldChunks: the running simulations' chunks, held until they complete (server/sa/held.py)."""

from __future__ import annotations

import numpy as np
import pytest

from melissa.server.sa.held import HeldChunks


def test_chunks_come_back_by_field_and_step_and_drop_frees_them() -> None:
    held = HeldChunks()
    source = np.arange(6.0)
    held.add(3, 1, 2, 0, source[:3])
    held.add(3, 0, 1, 4, np.ones(2, np.float32))
    held.add(3, 0, 1, 0, source[3:])
    held.add(5, 0, 0, 0, source)
    source[:] = -1  # the caller reuses its array: the held copies do not change
    got = [(f, t, s, v.tolist()) for f, t, s, v in held.chunks(3)]
    assert got == [(0, 1, 4, [1.0, 1.0]), (0, 1, 0, [3.0, 4.0, 5.0]), (1, 2, 0, [0.0, 1, 2])]
    assert held.nbytes == held.peak_nbytes == 3 * 8 + 2 * 4 + 3 * 8 + 6 * 8
    assert held.drop(3) == 56 and 3 not in held and held.simulations == [5]
    assert held.nbytes == 48 and held.peak_nbytes == 104
    assert held.drop(3) == 0


def test_a_large_received_frame_is_held_without_a_copy() -> None:
    frame, small = np.zeros(1 << 14), np.zeros(10)
    held = HeldChunks()
    held.add(0, 0, 0, 0, frame, frame=True)
    held.add(0, 0, 1, 0, small, frame=True)
    held.add(0, 0, 2, 0, frame)
    views = [v for _, _, _, v in held.chunks(0)]
    assert [np.shares_memory(v, a) for v, a in zip(views, (frame, small, frame))] == [
        True, False, False]


def test_state_dict_round_trip() -> None:
    held = HeldChunks()
    held.add(1, 0, 0, 0, np.array([1.5, 2.5]))
    held.add(1, 0, 1, 2, np.array([3.5], np.float32))
    held.add(4, 1, 0, 0, np.array([7.0]))
    back = HeldChunks.from_state_dict(held.state_dict())
    for sim in (1, 4):
        assert [(f, t, s, v.dtype, v.tolist()) for f, t, s, v in back.chunks(sim)] == [
            (f, t, s, v.dtype, v.tolist()) for f, t, s, v in held.chunks(sim)]
    assert back.nbytes == held.nbytes
    empty = HeldChunks.from_state_dict(HeldChunks().state_dict())
    assert empty.simulations == []
    state = held.state_dict()
    state["values_f8"] = state["values_f8"][:-1]
    with pytest.raises(ValueError, match="fewer values than the keys announce"):
        HeldChunks.from_state_dict(state)
