"""Melissa's Python client API, unchanged, on the light client path (melissa.client):

    import melissa_api
    melissa_api.melissa_init("heat1", local_vect_size, comm)   # comm: an mpi4py communicator
    melissa_api.melissa_send("heat1", u)                       # NumPy array, ctypes array, list
    melissa_api.melissa_finalize()

As with Melissa, the calls return nothing: an error prints "melissa: error: <reason>" on stderr
and ends the program with exit status 1. `coupling`, an argument of old Melissa versions, is
accepted and ignored (there is only one coupling, ZeroMQ). Sequential simulations may pass
comm=None or use melissa_api_no_mpi.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from melissa import client
from melissa.errors import ClientError

__all__ = ["melissa_finalize", "melissa_init", "melissa_send"]


def _ending_on_error(call: Callable[[], None]) -> None:
    try:
        call()
    except ClientError as exc:
        print(f"melissa: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def melissa_init(field_name: str, local_vect_size: int, comm: Any = None,
                 coupling: int | None = None) -> None:
    """Declare `field_name`, of which this rank holds `local_vect_size` values (collective
    over comm; ranks hold consecutive slices in rank order)."""
    _ending_on_error(lambda: client.init(field_name, int(local_vect_size), comm))


def melissa_send(field_name: str, send_vect: Any) -> None:
    """Send this rank's values of `field_name` for the next time step (as float64)."""
    values = np.ascontiguousarray(send_vect, dtype=np.float64).reshape(-1)
    _ending_on_error(lambda: client.send(field_name, values))


def melissa_finalize() -> None:
    """After the last send of every field."""
    _ending_on_error(client.finalize)
