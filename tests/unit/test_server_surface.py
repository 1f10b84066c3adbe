"""The server's overridable surface (its hooks) and the atomic file writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from melissa.atomic import atomic_write
from melissa.server.base import HOOKS, Server
from melissa.server.sa.sensitivity import SensitivityServer


def test_a_subclass_may_override_every_hook() -> None:
    overrides = {name: getattr(Server, name) for name in HOOKS}
    assert {"on_data", "on_finish", "checkpoint_state", "whole_fields"} <= set(overrides)
    assert issubclass(type("Mine", (Server,), overrides), Server)


@pytest.mark.parametrize("name", ["run", "handle", "emit", "emit_status", "checkpoint"])
def test_a_subclass_that_redefines_the_receive_loop_is_refused(name: str) -> None:
    with pytest.raises(TypeError, match=rf"Mine redefines {name} of melissa's Server: .*on_data"):
        type("Mine", (SensitivityServer,), {name: lambda self: None})


def test_atomic_write_replaces_the_file_in_one_step(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    path.write_text("old\n")
    for durable in (True, False):
        with atomic_write(path, durable=durable) as tmp:
            tmp.write_text("half")
            assert path.read_text() == "old\n"  # a reader still sees the old file
        assert path.read_text() == "half"
        path.write_text("old\n")
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "results"
    path.write_text("complete")
    with pytest.raises(OSError, match="disk full"), atomic_write(path, durable=True) as tmp:
        tmp.write_text("par")
        raise OSError("disk full")
    assert path.read_text() == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["results"]


def test_atomic_write_gives_the_mode_from_creation_on(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "job.sh", durable=False, mode=0o700) as tmp:
            assert stat.S_IMODE(tmp.stat().st_mode) == 0o700  # never readable by others
            tmp.write_text("#!/bin/sh\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "job.sh").stat().st_mode) == 0o700
