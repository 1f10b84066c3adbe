"""Minimum and maximum with the id of the simulation that reached them.

State: values (float64, NaN before the first sample) and ids (int64, −1 before the first sample).
Same rules here as in the kernel (kernels._replaces): a NaN sample beats any number (NaN
propagates, as in np.min), and ties go to the smallest simulation id, so that results depend
neither on arrival order nor on how partial states are merged.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

NO_SIMULATION = -1


def merge_minimum(
    value_a: np.ndarray, id_a: np.ndarray, value_b: np.ndarray, id_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Minimum of two disjoint samples and the id reaching it."""
    return _merge(value_a, id_a, value_b, id_b, np.less)


def merge_maximum(
    value_a: np.ndarray, id_a: np.ndarray, value_b: np.ndarray, id_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Maximum of two disjoint samples and the id reaching it."""
    return _merge(value_a, id_a, value_b, id_b, np.greater)


def _merge(
    value_a: np.ndarray, id_a: np.ndarray, value_b: np.ndarray, id_b: np.ndarray,
    better: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    nan_a, nan_b = np.isnan(value_a), np.isnan(value_b)
    beyond = better(value_b, value_a) | (nan_b & ~nan_a)
    tie = (value_b == value_a) | (nan_b & nan_a)
    take_b = (id_b != NO_SIMULATION) & ((id_a == NO_SIMULATION) | beyond | (tie & (id_b < id_a)))
    return np.where(take_b, value_b, value_a), np.where(take_b, id_b, id_a)
