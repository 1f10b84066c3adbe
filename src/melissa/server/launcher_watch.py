"""A server whose launcher is gone exits on its own (after its checkpoint), instead of running on
with no one to tell it to finish.

The launcher sends a HEARTBEAT every second on the control channel; rank 0 counts the time since
the latest one (or ATTACH), or since its own start before the first ATTACH.
A resumed launcher stops the old server itself (SIGTERM, checkpoint) within that time, or this
server has stopped already; either way the new server restores the checkpoint.
"""

from __future__ import annotations


class LauncherWatch:
    def __init__(self, timeout_s: float, now: float) -> None:
        self.timeout_s = timeout_s
        self.last_heard = now

    def heard(self, now: float) -> None:
        self.last_heard = now

    def gone(self, now: float) -> str | None:
        """Why the server should stop (None while the launcher is heard from)."""
        silent = now - self.last_heard
        if silent <= self.timeout_s:
            return None
        return (f"no word from the launcher for {silent:.0f} s "
                "(launcher_config.launcher_timeout): it is gone")
