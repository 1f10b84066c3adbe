"""Parameter distributions: map unit-hypercube values to parameter values by the inverse CDF.

Designs draw in [0, 1); each parameter's marginal comes from its inverse CDF, so a design's
stratification (LHS) or low discrepancy (Sobol', Halton) carries over to the parameter space.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm

from melissa.config.models import (
    LogUniformParameter,
    NormalParameter,
    Parameter,
    UniformParameter,
)

# Unit values are clipped to [_TINY, 1 - _TINY] before the normal inverse CDF, which is infinite
# at 0 (the first point of an unscrambled Sobol'/Halton sequence) and 1. 2**-53 is the spacing of
# doubles just below 1, so at most ~8.2 standard deviations from the mean.
_TINY = 2.0**-53


def inverse_cdf(parameter: Parameter, unit: np.ndarray) -> np.ndarray:
    """Values of `parameter` at the unit values `unit` (any shape, in [0, 1]); float64."""
    u = np.asarray(unit, dtype=np.float64)
    # LogUniformParameter subclasses UniformParameter: test it first.
    if isinstance(parameter, LogUniformParameter):
        return _loguniform(u, parameter.low, parameter.high)
    if isinstance(parameter, UniformParameter):
        return _uniform(u, parameter.low, parameter.high)
    if isinstance(parameter, NormalParameter):
        return _normal(u, parameter.mean, parameter.std)
    raise TypeError(f"no inverse CDF for parameter type {type(parameter).__name__}")


def _uniform(u: np.ndarray, low: float, high: float) -> np.ndarray:
    # Rounding of low + u*(high - low) can overshoot high by one ulp: clip keeps the bounds exact.
    return np.clip(low + u * (high - low), low, high)


def _loguniform(u: np.ndarray, low: float, high: float) -> np.ndarray:
    log_low, log_high = math.log(low), math.log(high)
    return np.clip(np.exp(log_low + u * (log_high - log_low)), low, high)


def _normal(u: np.ndarray, mean: float, std: float) -> np.ndarray:
    return np.asarray(norm.ppf(np.clip(u, _TINY, 1.0 - _TINY), loc=mean, scale=std), np.float64)
