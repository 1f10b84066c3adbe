"""EarlyCommits: simulations committed before completing, and what stays of abandoned ones
(server/sa/early.py)."""

from __future__ import annotations

import numpy as np
import pytest

from melissa.server.sa.early import EarlyCommits


def test_abandoned_steps_are_counted_per_field_and_completed_ones_forgotten() -> None:
    early = EarlyCommits()
    for sim in (1, 2, 3):
        early.start(sim)
    for sim, field, step in ((1, 0, 0), (1, 0, 1), (1, 1, 0), (2, 0, 0), (2, 0, 1), (3, 0, 2)):
        early.record(sim, field, step)
    early.settle(3)  # completed: its data belongs in the results
    assert 3 not in early and 1 in early
    assert early.abandon(1, left_out=set())
    assert early.abandon(2, left_out={(0, 0), (0, 1)}) is False  # nothing of it stayed
    assert early.counts(0, 4).tolist() == [1, 1, 0, 0]
    assert early.counts(1, 4).tolist() == [1, 0, 0, 0]
    assert early.steps_of(1, 0) == [0, 1] and early.steps_of(2, 0) == []
    assert early.running == {}


def test_state_dict_round_trip_keeps_simulations_that_sent_nothing_yet() -> None:
    early = EarlyCommits()
    early.start(4)
    early.start(5)
    early.record(5, 0, 3)
    early.abandon(5, set())
    early.start(6)
    early.record(6, 1, 2)
    state = early.state_dict()
    back = EarlyCommits.from_state_dict(state)
    assert back.running == {4: set(), 6: {(1, 2)}} and back.abandoned == {5: {(0, 3)}}
    assert EarlyCommits.from_state_dict({}).running == {}  # a checkpoint from before
    with pytest.raises(ValueError, match="malformed"):
        EarlyCommits.from_state_dict({"early_steps": np.zeros((2, 2), np.int64)})
