"""Live changes of job_limit (elasticity): `POST /job_limit` on the status API, or the file
`output_dir/job_limit`, which holds one integer >= 1.

The status API's threads hand a request over with `request`; the launcher's main loop calls
`poll`, which also looks at the file (one stat per call). A request through the API is written to
the file too, so the file always says the latest limit and a resumed launcher starts from it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from melissa.atomic import atomic_write

log = logging.getLogger("melissa.launcher")


def parse_job_limit(text: str) -> int:
    """The limit in `text` (an integer >= 1); ValueError saying what is wrong otherwise."""
    try:
        limit = int(text.strip())
    except ValueError:
        raise ValueError(f"{text.strip()[:40]!r} is not an integer") from None
    if limit < 1:
        raise ValueError(f"job_limit must be >= 1, got {limit}")
    return limit


class JobLimitControl:
    def __init__(self, path: Path, limit: int) -> None:
        """`limit`: the limit from the config, unless the file holds a valid one (a resume)."""
        self.path = path
        self._lock = threading.Lock()
        self._requested: int | None = None
        self._stamp = self._file_stamp()
        self.limit = limit
        self.limit = self._read_file() or limit

    def request(self, limit: int) -> None:
        """Ask for a new limit (from any thread); the main loop applies it at its next poll."""
        with self._lock:
            self._requested = limit

    def poll(self) -> tuple[int, str] | None:
        """A new limit and where it came from, if one was asked for since the last poll."""
        with self._lock:
            requested, self._requested = self._requested, None
        if requested is not None:
            self._write_file(requested)
            return self._change(requested, "the status API")
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        limit = self._read_file()
        return None if limit is None else self._change(limit, str(self.path))

    def _change(self, limit: int, source: str) -> tuple[int, str] | None:
        if limit == self.limit:
            return None
        self.limit = limit
        return limit, source

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def _read_file(self) -> int | None:
        try:
            return parse_job_limit(self.path.read_text())
        except OSError:
            return None  # no file: the limit stays
        except ValueError as exc:
            log.warning("%s: %s; job_limit stays %d", self.path, exc, self.limit)
            return None

    def _write_file(self, limit: int) -> None:
        with atomic_write(self.path, durable=False) as tmp:
            tmp.write_text(f"{limit}\n")
        self._stamp = self._file_stamp()
