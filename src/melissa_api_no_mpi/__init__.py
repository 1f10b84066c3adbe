"""Melissa's Python client API for sequential simulations, unchanged (see melissa_api):

    import melissa_api_no_mpi as melissa_api
    melissa_api.melissa_init("heat1", vect_size)
    melissa_api.melissa_send("heat1", u)
    melissa_api.melissa_finalize()
"""

from __future__ import annotations

import melissa_api
from melissa_api import melissa_finalize, melissa_send

__all__ = ["melissa_finalize", "melissa_init", "melissa_send"]


def melissa_init(field_name: str, vect_size: int) -> None:
    """Declare `field_name` of `vect_size` values."""
    melissa_api.melissa_init(field_name, vect_size, None)
