"""Replace a file atomically: write it under a temporary name in the same directory, then rename.

A reader sees the old file or the complete new one, never half of one. Durability is the
caller's stated choice: `durable=True` also fsyncs the file before the rename and the directory
after it, so the new content survives a power loss (results, checkpoints, the parameters table);
`durable=False` only survives a crash of the writing process, which is enough for files rewritten
every few seconds or read back by a live process (rendezvous, job limit, metrics).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path: Path, *, durable: bool, mode: int | None = None) -> Iterator[Path]:
    """Yield the temporary path to write; on a clean exit it replaces `path`. On an exception
    the temporary file is removed and `path` is left as it was. `mode`: the file's permission
    bits from its creation on (e.g. 0o700 for a private script); else the umask's.

    The temporary name is fixed ("<name>.tmp"): a file left by a writer killed halfway is
    replaced by the next write instead of piling up."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp")
    try:
        if mode is not None:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode))
            os.chmod(tmp, mode)  # O_CREAT's mode is masked by the umask, and tmp may have existed
        yield tmp
        if durable:
            fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_path(path.parent)  # the rename is durable once the directory entry is


def fsync_path(path: Path) -> None:
    """Flush a file or a directory (its entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
