"""Ctrl-C and SIGTERM stop the launcher: the study cancels its jobs and says how to resume.

The handler raises KeyboardInterrupt in the main thread, and remembers the request: Python drops
an exception raised while a finaliser runs (a `__del__`, a weakref callback: "Exception ignored
in ..."), so a signal landing there would be lost. The study's loop calls `check()` each round.
"""

from __future__ import annotations

import signal
from types import FrameType

_requested = False


def _handler(signum: int, frame: FrameType | None) -> None:
    global _requested
    _requested = True
    raise KeyboardInterrupt


def install() -> None:
    """SIGINT (Ctrl-C) and SIGTERM (kill PID) both interrupt the study."""
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)


def check() -> None:
    """Raise KeyboardInterrupt if a signal asked for it, even one whose exception was lost."""
    if _requested:
        raise KeyboardInterrupt
