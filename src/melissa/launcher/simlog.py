"""A simulation's log (`logs/simulation_<id>.log`): the launcher opens each attempt with a line
naming it and its command, and reads back the last lines an attempt wrote (its error, mostly) for
the terminal, the summary and fail-fast."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path

_MARKER = "# melissa-launcher: "
_TAIL_BYTES = 16384  # an error's last lines are at the end: never read a huge log whole


def command_line(argv: Sequence[str], cwd: Path) -> str:
    return f"{shlex.join(argv)}  (in {cwd})"


def open_attempt(log: Path, simulation_id: int, attempt: int, command: str) -> None:
    """Append the line that opens an attempt's output (the job appends after it)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as f:
        f.write(f"{_MARKER}simulation {simulation_id}, attempt {attempt}: {command}\n")


def last_lines(log: Path, count: int = 3) -> list[str]:
    """The last `count` non-blank lines of the latest attempt in `log` ([] if none)."""
    try:
        with log.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _TAIL_BYTES))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    lines = text.splitlines()
    if size > _TAIL_BYTES:
        lines = lines[1:]  # the first may be cut
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith(_MARKER):
            lines = lines[i + 1:]
            break
    return [line.rstrip() for line in lines if line.strip()][-count:]
