"""One live launcher per study: `output_dir/launcher.lock`.

The lock file holds who owns the study (host, pid, start time) and is held with flock() for the
launcher's lifetime, so the kernel releases it when the launcher dies, however it dies. Taking it
is atomic: only one process gets the flock of the file that is at the path (a file unlinked
meanwhile is retried). A lock left by a dead launcher of this host is taken over, with a message;
one written on another host cannot be checked from here, so it is refused with the way to break
it. A launcher that exits cleanly removes the file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from melissa.errors import StudyError
from melissa.paths import StudyPaths

log = logging.getLogger("melissa.launcher")


@dataclass(frozen=True)
class LockOwner:
    host: str
    pid: int
    started: float  # seconds since the epoch
    process_start: str  # /proc/<pid>/stat start time: tells a reused pid from the launcher

    @property
    def since(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))

    def describe(self) -> str:
        return f"the launcher with pid {self.pid} on {self.host}, running since {self.since}"

    @classmethod
    def of_this_process(cls) -> LockOwner:
        return cls(socket.gethostname(), os.getpid(), time.time(), _process_start(os.getpid()))

    @classmethod
    def parse(cls, text: str) -> LockOwner | None:
        try:
            data: dict[str, Any] = json.loads(text)
            return cls(str(data["host"]), int(data["pid"]), float(data["started"]),
                       str(data.get("process_start", "")))
        except (ValueError, KeyError, TypeError):
            return None  # empty (being written) or not ours

    def to_json(self) -> str:
        return json.dumps({"host": self.host, "pid": self.pid, "started": self.started,
                           "since": self.since, "process_start": self.process_start})

    def alive_here(self) -> bool:
        """Whether this owner, of this host, still runs (same pid, same process)."""
        start = _process_start(self.pid)
        return bool(start) and (not self.process_start or start == self.process_start)


class StudyLock:
    """Held while a launcher works on a study; `release` (or the process's death) frees it."""

    def __init__(self, path: Path, fd: int, taken_over: LockOwner | None) -> None:
        self.path = path
        self._fd: int | None = fd
        self.taken_over = taken_over  # the dead launcher whose lock this one took over

    @classmethod
    def acquire(cls, output_dir: Path) -> StudyLock:
        """Take the lock of the study in `output_dir` (created if missing), or raise
        StudyError saying who holds it and what to do."""
        output_dir.mkdir(parents=True, exist_ok=True)
        path = StudyPaths(output_dir).lock
        for _ in range(100):  # the file is replaced or removed under us only briefly
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise StudyError(f"cannot create the study lock {path}: {exc}") from None
            try:
                lock = cls._take(path, fd)
            except BaseException:
                os.close(fd)
                raise
            if lock is not None:
                return lock
            os.close(fd)
        raise StudyError(f"cannot take the study lock {path}: it keeps changing")

    @classmethod
    def _take(cls, path: Path, fd: int) -> StudyLock | None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held_elsewhere = False
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StudyError(f"cannot lock {path}: {exc}") from None
            held_elsewhere = True
        try:
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                return None  # removed or replaced since we opened it: open the new one
        except FileNotFoundError:
            return None
        owner = LockOwner.parse(os.pread(fd, 4096, 0).decode(errors="replace"))
        if held_elsewhere:
            who = owner.describe() if owner else "another launcher"
            raise StudyError(_live_message(path.parent, who, owner))
        me = LockOwner.of_this_process()
        if owner is not None and owner.host != me.host:
            raise StudyError(
                f"{path.parent} is locked by {owner.describe()}; it may still run there. If it "
                f"is gone (check on {owner.host}: ps -p {owner.pid}), remove {path} and start "
                "again"
            )
        if owner is not None and owner.alive_here() and owner.pid != me.pid:
            # A live owner always holds the flock: this file system does not support flock
            # across processes, so trust the process table.
            raise StudyError(_live_message(path.parent, owner.describe(), owner))
        taken_over = owner if owner is not None and owner.pid != me.pid else None
        os.ftruncate(fd, 0)
        os.pwrite(fd, me.to_json().encode(), 0)
        os.fsync(fd)
        if taken_over is not None:
            log.warning("took over the lock of %s, which is gone", taken_over.describe())
        return cls(path, fd, taken_over)

    def release(self) -> None:
        """Remove the lock file, then free the flock (in this order: a launcher that opened
        the file meanwhile sees it was removed and retries with a new one)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None


def read_owner(output_dir: Path) -> tuple[LockOwner | None, bool]:
    """Who holds the lock of the study in `output_dir`, and whether it still runs (as far as
    this host can tell: a lock of another host counts as live). (None, False) if unlocked."""
    path = StudyPaths(output_dir).lock
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None, False
    try:
        owner = LockOwner.parse(os.pread(fd, 4096, 0).decode(errors="replace"))
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            free = True
        except OSError:
            free = False
    finally:
        os.close(fd)
    if owner is None:
        return None, not free
    if not free or owner.host != socket.gethostname():
        return owner, True
    return owner, owner.alive_here()


def _live_message(output_dir: Path, who: str, owner: LockOwner | None) -> str:
    stop = f" (Ctrl-C in its terminal, or kill {owner.pid})" if owner else ""
    return (f"the study in {output_dir} is in use by {who}: wait until it ends or stop it"
            f"{stop}, or choose another output_dir")


def _process_start(pid: int) -> str:
    """The start time of process `pid` in clock ticks since boot ('' if there is none)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return ""  # a zombie has exited
    return fields[19]
