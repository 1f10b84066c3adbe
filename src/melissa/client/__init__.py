"""The Python client API: three calls turn a simulation into a Melissa client.

    import melissa.client as melissa
    melissa.init("temperature", local_size, comm=None, offset=None, shape=None)
    melissa.send("temperature", array)   # once per field per time step
    melissa.finalize()

Every error raises melissa.errors.ClientError with a message saying what to fix. The connection
settings come from the environment the launcher sets (MELISSA_SERVER, MELISSA_SIMULATION_ID,
MELISSA_STUDY_TOKEN, MELISSA_ATTEMPT; MELISSA_TIMEOUT, seconds, bounds every wait;
MELISSA_SERVER_KEY, the server's CURVE key, when the study is encrypted).
"""

from __future__ import annotations

import math
from typing import Any

from melissa.client.session import ClientEnvironment, Session
from melissa.errors import ClientError

__all__ = ["ClientError", "finalize", "init", "send"]

# The API is module-level by contract, so one session per process lives here.
_session: Session | None = None


def init(
    field: str,
    local_size: int,
    comm: Any = None,
    offset: int | None = None,
    shape: tuple[int, ...] | None = None,
) -> None:
    """Declare a field of `local_size` values on this rank (once per field, before send).

    comm: an mpi4py communicator of the simulation's ranks (None: a sequential simulation).
    offset: this rank's first cell in the global field (default: ranks in order, MPI_Exscan).
    shape: the global field's shape, e.g. (ny, nx), so results keep it (product = global size).
    """
    global _session
    if not isinstance(field, str) or not field:
        raise ClientError(f"init: field name must be a non-empty string, got {field!r}")
    if isinstance(local_size, bool) or not isinstance(local_size, int) or local_size < 0:
        raise ClientError(f"init({field!r}): local_size must be an integer >= 0, got {local_size!r}")
    rank, ranks = (0, 1) if comm is None else (comm.Get_rank(), comm.Get_size())
    if comm is None:
        if offset not in (None, 0):
            raise ClientError(f"init({field!r}): offset needs an MPI communicator (comm)")
        global_offset, global_size = 0, local_size
    else:
        global_size = comm.allreduce(local_size)
        scanned = comm.exscan(local_size)
        global_offset = offset if offset is not None else (scanned if rank > 0 else 0)
    if global_size == 0:
        raise ClientError(f"init({field!r}): the field has no values on any rank")
    if not 0 <= global_offset <= global_size - local_size:
        raise ClientError(
            f"init({field!r}): offset {global_offset} + local_size {local_size} exceeds the "
            f"global size {global_size}"
        )
    if shape is not None:
        shape = tuple(int(s) for s in shape)
        if any(s <= 0 for s in shape) or math.prod(shape) != global_size:
            raise ClientError(
                f"init({field!r}): shape {shape} does not hold the {global_size} values of the field"
            )
    if _session is None:
        _session = Session(ClientEnvironment.from_environ(), rank=rank, ranks=ranks)
    _session.init(field, local_size, global_offset, global_size, shape)


def send(field: str, data: Any) -> None:
    """Send this rank's values of `field` for the next time step (float64 or float32)."""
    if _session is None:
        raise ClientError(f"send({field!r}) before init({field!r})")
    _session.send(field, data)


def finalize() -> None:
    """Flush, and tell the server this simulation sent everything (waits for its acknowledgement)."""
    if _session is None:
        raise ClientError("finalize() before init()")
    _session.finalize()

