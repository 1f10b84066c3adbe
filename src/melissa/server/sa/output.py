"""Results of the sensitivity-analysis server: a dataset per field, a variable per statistic.

Arrays come from `FieldStatistics.results()` as (time, cell), or (threshold, time, cell); when the
field's global shape is known, cells are unflattened in C order into named spatial dims. This
module writes the single NetCDF file (small studies, gathered on rank 0) and names the variables,
dims and attributes that the parallel Zarr store (zarr_output.py) shares with it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from melissa.atomic import atomic_write

CONVENTIONS = {
    "mean": "np.mean(x)",
    "variance": "unbiased, ddof=1 (np.var(x, ddof=1))",
    "skewness": "biased (scipy.stats.skew(x, bias=True))",
    "kurtosis": "excess, biased (scipy.stats.kurtosis(x, fisher=True, bias=True))",
    "minimum_simulation": "smallest simulation id among ties; -1 where count is 0",
    "maximum_simulation": "smallest simulation id among ties; -1 where count is 0",
    "threshold_exceedance": "count of x > t (strict)",
    "quantile": "np.quantile(x, level, method='linear') where count <= the "
    "quantile_exact_samples attribute; beyond, a density-scaled Robbins-Monro "
    "estimate within [min, max], non-decreasing in the level (docs/statistics.md)",
    "sobol_first": "Martinez estimator on pick-freeze groups; _low/_high: 95% Fisher-z interval",
    "sobol_total": "1 - Martinez correlation of Y_A and Y_Ck; _low/_high: 95% Fisher-z interval",
    "sobol_groups": "complete pick-freeze groups per time step and cell; the other statistics use "
    "the groups' A and B members",
    "sobol_second": "corr(Y_Ck, Y_Dl) - S_k - S_l (Saltelli 2002 extended pick-freeze, Martinez "
    "correlations), symmetric, NaN on the diagonal; _low/_high: 95% Bonferroni combination of "
    "three Fisher-z intervals at level 1 - 0.05/3 (conservative)",
    "sobol_first_aggregated": "sum over cells and time steps of C(Y_B, Y_Ck) / sqrt(sum M2_B * "
    "sum M2_Ck) (Gamboa et al.'s generalized index, variance-weighted); _low/_high: 95% "
    "delta-method interval",
    "sobol_total_aggregated": "1 - sum C(Y_A, Y_Ck) / sqrt(sum M2_A * sum M2_Ck) over cells and "
    "time steps; _low/_high: 95% delta-method interval",
    "abandoned_samples": "simulations that did not complete whose data the other variables hold "
    "(committed early under sa_config.hold_memory_mb); statistics/abandoned_data.csv lists them",
}
UNDEFINED = "NaN where undefined: no sample, n < 2 (variance), constant data (skewness, kurtosis)"
SOBOL_UNDEFINED = ("Sobol' indices NaN where a variance of Y_A, Y_B or Y_Ck is zero (the output "
                   "does not vary); their intervals NaN also where fewer than 4 groups are complete")

LONG_NAMES = {
    "count": "number of samples",
    "mean": "mean",
    "variance": "unbiased variance",
    "skewness": "skewness",
    "kurtosis": "excess kurtosis",
    "minimum": "minimum",
    "minimum_simulation": "id of the simulation reaching the minimum",
    "maximum": "maximum",
    "maximum_simulation": "id of the simulation reaching the maximum",
    "threshold_exceedance": "number of samples strictly above the threshold",
    "quantile": "quantile estimate",
    "sobol_first": "first-order Sobol' index",
    "sobol_first_low": "first-order Sobol' index, lower 95% bound",
    "sobol_first_high": "first-order Sobol' index, upper 95% bound",
    "sobol_total": "total Sobol' index",
    "sobol_total_low": "total Sobol' index, lower 95% bound",
    "sobol_total_high": "total Sobol' index, upper 95% bound",
    "sobol_groups": "number of complete pick-freeze groups",
    "sobol_second": "second-order Sobol' index of the pair of parameters",
    "sobol_second_low": "second-order Sobol' index, lower 95% bound",
    "sobol_second_high": "second-order Sobol' index, upper 95% bound",
    **{f"sobol_{kind}_aggregated{suffix}": f"aggregated {label} Sobol' index of the field{bound}"
       for kind, label in (("first", "first-order"), ("total", "total"))
       for suffix, bound in (("", ""), ("_low", ", lower 95% bound"),
                             ("_high", ", upper 95% bound"))},
    "abandoned_samples": "number of abandoned simulations included",
}

PARAMETER_DIMS = ("parameter", "parameter_2")  # sobol_second: a pair of parameters
_SPATIAL_DIMS = {1: ("x",), 2: ("y", "x"), 3: ("z", "y", "x")}


def write_field_results(
    path: Path,
    field: str,
    results: dict[str, np.ndarray],
    *,
    shape: tuple[int, ...] | None,
    thresholds: list[float],
    attrs: dict[str, str | int | float],
    parameters: Sequence[str] = (),
    quantile_levels: Sequence[float] = (),
    dtype: str = "float64",
    per_parameter: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Write one field's statistics to the NetCDF4 file `path`, atomically (temp file in the same
    directory, fsync, rename): readers see the old file or the complete new one. Arrays with a
    leading axis: threshold_exceedance (threshold), quantile (quantile_level), sobol_*
    (parameter, named by `parameters`). dtype: of the floating-point variables in the file.
    per_parameter: (parameter,) arrays (the aggregated Sobol' indices)."""
    leading: dict[str, list[float] | list[str]] = {
        "threshold": list(thresholds), "quantile_level": list(quantile_levels),
        "parameter": list(parameters),
        "parameter_2": list(parameters) if "sobol_second" in results else []}
    dataset = _dataset(field, results, shape=shape, leading=leading, attrs=attrs)
    for name, values in (per_parameter or {}).items():
        dataset[name] = xr.Variable(("parameter",), values, attrs={"long_name": long_name(name)})
    if dtype != "float64":
        for variable in dataset.data_vars.values():
            if variable.dtype.kind == "f":
                variable.encoding["dtype"] = np.dtype(dtype)
    with atomic_write(Path(path), durable=True) as tmp:
        dataset.to_netcdf(tmp, engine="netcdf4", format="NETCDF4")


def read_field_results(path: Path) -> xr.Dataset:
    """The whole file, loaded into memory (the file is closed on return)."""
    with xr.open_dataset(path, engine="netcdf4") as dataset:
        return dataset.load()


def _dataset(
    field: str,
    results: dict[str, np.ndarray],
    *,
    shape: tuple[int, ...] | None,
    leading: dict[str, list[float] | list[str]],
    attrs: dict[str, str | int | float],
) -> xr.Dataset:
    if "count" not in results or np.ndim(results["count"]) != 2:
        raise ValueError(f"field {field!r}: results need a (time, cell) 'count' array")
    nb_time_steps, n_cells = results["count"].shape
    dims, grid = cell_dims(field, n_cells, shape)
    variables = {}
    for name, array in results.items():
        lead = leading_dim(name)
        expected = tuple(len(leading[d]) for d in lead) + (nb_time_steps, n_cells)
        if array.shape != expected:
            raise ValueError(
                f"field {field!r}: {name!r} has shape {array.shape}, expected {expected}"
            )
        variables[name] = xr.Variable(
            (*lead, "time", *dims),
            array.reshape(array.shape[:-1] + grid),
            attrs={"long_name": long_name(name)},
        )
    coords: dict[str, np.ndarray] = {"time": np.arange(nb_time_steps)}
    for name in results:
        for dim in leading_dim(name):
            values = leading[dim]
            coords[dim] = np.asarray(values, dtype=str if dim in PARAMETER_DIMS else np.float64)
    return xr.Dataset(variables, coords=coords, attrs=dataset_attrs(field, list(results), attrs))


def long_name(name: str) -> str:
    return LONG_NAMES.get(name, name)


def dataset_attrs(field: str, names: list[str], attrs: dict[str, Any]) -> dict[str, Any]:
    """The dataset's attributes: field, conventions of the variables `names`, then `attrs`."""
    conventions = {k: v for k, v in CONVENTIONS.items() if k in names}
    undefined = UNDEFINED + ("; " + SOBOL_UNDEFINED if "sobol_first" in names else "")
    return {"field": field, "undefined_values": undefined, **conventions, **attrs}


def leading_dim(name: str) -> tuple[str, ...]:
    """The dimension before (time, cells) of a result array, if any."""
    if name == "threshold_exceedance":
        return ("threshold",)
    if name == "quantile":
        return ("quantile_level",)
    if name.startswith("sobol_second"):
        return PARAMETER_DIMS
    if name.startswith("sobol_") and name != "sobol_groups":
        return ("parameter",)
    return ()


def cell_dims(
    field: str, n_cells: int, shape: tuple[int, ...] | None
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Dim names and sizes of the cells: flat "cell", or the field's global shape."""
    if shape is None:
        return ("cell",), (n_cells,)
    if not shape or math.prod(shape) != n_cells:
        raise ValueError(f"field {field!r}: shape {shape} does not hold its {n_cells} cells")
    names = _SPATIAL_DIMS.get(len(shape), tuple(f"dim_{i}" for i in range(len(shape))))
    return names, tuple(shape)
