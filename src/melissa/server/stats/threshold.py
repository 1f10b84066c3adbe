"""Threshold exceedance: per threshold t, the count of samples with x > t (strict: x == t is not
counted). State: int64 counts shaped (threshold, time, cell)."""

from __future__ import annotations

import numpy as np


def merge(counts_a: np.ndarray, counts_b: np.ndarray) -> np.ndarray:
    """Counts of two disjoint samples: their sum."""
    return counts_a + counts_b
