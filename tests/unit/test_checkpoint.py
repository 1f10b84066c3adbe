"""Server checkpoints (server/checkpoint.py), the registry's state and the silence watch: pure
parts, on real files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from melissa.errors import CheckpointError, ProtocolError
from melissa.paths import StudyPaths
from melissa.server.checkpoint import (
    KEEP,
    latest_checkpoint,
    next_sequence,
    read_checkpoint,
    write_checkpoint,
)
from melissa.server.registry import Registry
from melissa.server.silence import SilenceWatch


@pytest.fixture
def paths(tmp_path: Path) -> StudyPaths:
    return StudyPaths(tmp_path)


def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "f/mean": rng.random((3, 5)),
        "f/ids": np.arange(7, dtype=np.int64),
        "bits": np.array([True, False, True]),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 4)),
        "strided": rng.random((6, 6))[::2, 1::2],  # not contiguous: written as its values
    }


def test_round_trip(paths: StudyPaths) -> None:
    written = write_checkpoint(paths, 1, 3, 7, arrays(), {"registry": {"x": [1, 2]}})
    assert written.path == paths.server_checkpoint(1, 7) and written.nbytes > 0
    got = read_checkpoint(written.path)
    assert (got.rank, got.ranks, got.sequence, got.meta) == (1, 3, 7, {"registry": {"x": [1, 2]}})
    assert set(got.arrays) == set(arrays())
    for name, expected in arrays().items():
        assert got.arrays[name].dtype == expected.dtype and got.arrays[name].shape == expected.shape
        np.testing.assert_array_equal(got.arrays[name], expected)
        assert not got.arrays[name].flags.writeable
    assert not list(paths.checkpoints.glob("*.tmp"))


def test_only_the_newest_are_kept(paths: StudyPaths) -> None:
    for sequence in range(4):
        write_checkpoint(paths, 0, 1, sequence, arrays(), {})
    write_checkpoint(paths, 1, 2, 0, arrays(), {})  # another rank's are its own
    assert paths.server_checkpoints(0) == [paths.server_checkpoint(0, s) for s in (3, 2)]
    assert len(paths.server_checkpoints(0)) == KEEP
    assert next_sequence(paths, 0) == 4 and next_sequence(paths, 1) == 1
    assert next_sequence(paths, 5) == 0


def _flip_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _drop_checksum(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-32])


@pytest.mark.parametrize("damage", [_flip_byte, _truncate, _drop_checksum])
def test_a_damaged_newest_falls_back_to_the_previous(
    paths: StudyPaths, damage: object, caplog: pytest.LogCaptureFixture
) -> None:
    write_checkpoint(paths, 0, 1, 0, {"a": np.zeros(1000)}, {"n": 0})
    newest = write_checkpoint(paths, 0, 1, 1, {"a": np.ones(1000)}, {"n": 1}).path
    damage(newest)  # type: ignore[operator]
    with caplog.at_level(logging.WARNING, "melissa.server"):
        got = latest_checkpoint(paths, 0)
    assert got is not None and got.meta == {"n": 0} and got.sequence == 0
    np.testing.assert_array_equal(got.arrays["a"], 0.0)
    [line] = caplog.messages
    assert str(newest) in line and "checksum mismatch" in line and "the one before" in line
    assert next_sequence(paths, 0) == 2  # never reuses the damaged file's number


def test_no_usable_checkpoint(paths: StudyPaths, caplog: pytest.LogCaptureFixture) -> None:
    assert latest_checkpoint(paths, 0) is None
    paths.checkpoints.mkdir()
    paths.server_checkpoint(0, 0).write_bytes(b"MLSA")
    paths.server_checkpoint(0, 1).write_bytes(b"something else entirely, long enough" * 4)
    with caplog.at_level(logging.WARNING, "melissa.server"):
        assert latest_checkpoint(paths, 0) is None
    assert ["truncated" in m for m in caplog.messages] == [False, True]
    assert "bad magic" in caplog.messages[0]


def test_object_arrays_are_refused(paths: StudyPaths) -> None:
    with pytest.raises(CheckpointError, match="'x' must be a NumPy array of plain values"):
        write_checkpoint(paths, 0, 1, 0, {"x": np.array([{}], dtype=object)}, {})
    assert not paths.server_checkpoints(0)


# -- registry state -----------------------------------------------------------------------------
STEPS = 4


def _registry(rank: int = 0, ranks: int = 2) -> Registry:
    return Registry(["u", "v"], STEPS, rank, ranks)


def _declare(reg: Registry, sim: int, client_rank: int = 0, attempt: int = 0) -> None:
    for name in ("u", "v"):  # two client ranks, 5 cells each
        reg.declare(sim, attempt, client_rank, 2, name, 10, None, 5 * client_rank, 5)


def _chunk(reg: Registry, sim: int, field: int, step: int, client_rank: int = 0) -> bool:
    piece = (0, 5) if client_rank == 0 else (5, 0)  # rank 0 of 2 owns cells [0, 5)
    return reg.accept_chunk(sim, client_rank, field, step, *piece)


def test_registry_state_round_trip() -> None:
    reg = _registry()
    for sim in (0, 1, 2):
        _declare(reg, sim, 0, attempt=sim)
        _declare(reg, sim, 1, attempt=sim)
    for field in (0, 1):
        for step in range(STEPS):
            _chunk(reg, 0, field, step)
    assert reg.end(0, 0) is False and reg.end(0, 1) is True
    _chunk(reg, 1, 1, 2)
    reg.abandon([2])
    meta, arrays = reg.state()

    back = _registry()
    back.restore(meta, arrays)
    meta2, arrays2 = back.state()
    assert meta2 == meta and np.array_equal(arrays2["received"], arrays["received"])
    assert back.completed == [0] and back.abandoned == {2}
    assert back.fields == reg.fields
    assert back.simulations[1].attempt == 1 and back.simulations[1].chunks_received == 1
    assert _chunk(back, 1, 1, 2) is False  # held before: a duplicate
    assert _chunk(back, 1, 1, 3) is True
    assert _chunk(back, 0, 0, 0) is False
    _declare(back, 0, 0, attempt=5)  # a rerun of a complete simulation is welcome
    assert back.simulations[0].attempt == 5 and back.end(0, 0) is False
    with pytest.raises(ProtocolError, match="simulation 2 was abandoned by the launcher"):
        _declare(back, 2)
    with pytest.raises(ProtocolError, match="simulation 2 was abandoned"):
        _chunk(back, 2, 0, 0)


def test_registry_restore_refuses_another_layout() -> None:
    meta, arrays = _registry().state()
    with pytest.raises(CheckpointError, match="study layout .* differs"):
        Registry(["u", "v"], STEPS + 1, 0, 2).restore(meta, arrays)
    with pytest.raises(CheckpointError, match="malformed registry state"):
        _registry().restore({**meta, "simulations": [[0, 1]]}, arrays)


def test_abandon_forgets_incomplete_progress_only() -> None:
    reg = _registry(ranks=1)
    reg.declare(0, 0, 0, 1, "u", 4, None, 0, 4)
    reg.declare(0, 0, 0, 1, "v", 4, None, 0, 4)
    reg.declare(1, 0, 0, 1, "u", 4, None, 0, 4)
    for field in (0, 1):
        for step in range(STEPS):
            reg.accept_chunk(0, 0, field, step, 0, 4)
    reg.end(0, 0)
    assert reg.abandon([0, 1, 1]) == [0, 1]
    assert set(reg.simulations) == {0} and reg.abandon([1]) == []


# -- silence -------------------------------------------------------------------------------------
def test_silence_is_reported_per_timeout_and_attempt_when_silent_on_every_rank() -> None:
    watch = SilenceWatch(timeout_s=10)
    watch.heard(3, now=0.0)
    assert watch.ages(5.0, [3, 4]) == {"3": 5.0, "4": 0.0}  # 4: never heard, counts from now
    rank1 = {"3": 12.0}
    assert watch.newly_silent([watch.ages(11.0, [3]), {"3": 2.0}], {3: 0}) == []  # rank 2 hears it
    assert watch.newly_silent([watch.ages(11.0, [3]), rank1], {3: 0}) == [(3, 11.0)]
    assert watch.newly_silent([watch.ages(20.0, [3]), {"3": 21.0}], {3: 0}) == []  # 9 s ago
    # Still silent a timeout later: reported again; and at once for a new attempt.
    assert watch.newly_silent([watch.ages(21.0, [3]), {"3": 22.0}], {3: 0}) == [(3, 21.0)]
    assert watch.newly_silent([watch.ages(22.0, [3]), {"3": 23.0}], {3: 1}) == [(3, 22.0)]
    watch.heard(3, now=31.0)  # the next attempt's HELLO
    assert watch.newly_silent([watch.ages(35.0, [3]), rank1], {3: 1}) == []
    assert watch.newly_silent([watch.ages(42.0, [3]), rank1], {3: 1}) == [(3, 11.0)]  # again
    assert watch.newly_silent([{"9": 99.0}], {3: 1}) == []  # unknown to rank 0 (abandoned)
    watch.forget(3)
    assert watch.ages(50.0, []) == {}
