"""NetCDF output: round trip, dims, threshold coordinate, attributes, atomic replacement."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from melissa.config.models import SAConfig
from melissa.server.sa.output import read_field_results, write_field_results
from melissa.server.stats import FieldStatistics

THRESHOLDS = [0.0, 1.5]
SA = SAConfig(
    mean=True, variance=True, skewness=True, kurtosis=True, min=True, max=True,
    threshold_exceedance=True, threshold_values=THRESHOLDS,
)


def field_results(steps: int = 3, cells: int = 24) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    stats = FieldStatistics(steps, cells, SA)
    for sim in range(4):
        for t in range(steps):
            stats.update(t, 1, rng.normal(size=cells - 1), sim)  # cell 0: no sample, NaNs
    return stats.results()


def write(path: Path, results: dict[str, np.ndarray], shape: tuple[int, ...] | None = None,
          **attrs: str | float) -> None:
    write_field_results(path, "temperature", results, shape=shape, thresholds=THRESHOLDS,
                        attrs=attrs)


def test_round_trip_flat_cells(tmp_path: Path) -> None:
    results = field_results()
    path = tmp_path / "temperature.nc"
    write(path, results, simulations_complete=4)
    ds = read_field_results(path)
    assert set(ds.data_vars) == set(results)
    for name, array in results.items():
        np.testing.assert_array_equal(ds[name].values, array, err_msg=name)
        assert ds[name].dtype == array.dtype, name
        assert ds[name].attrs["long_name"]
    assert ds["mean"].dims == ("time", "cell")
    assert ds["threshold_exceedance"].dims == ("threshold", "time", "cell")
    np.testing.assert_array_equal(ds["time"].values, [0, 1, 2])
    np.testing.assert_array_equal(ds["threshold"].values, THRESHOLDS)
    assert ds["minimum_simulation"].values[0, 0] == -1


def test_attributes_state_the_conventions(tmp_path: Path) -> None:
    path = tmp_path / "temperature.nc"
    write(path, field_results(), simulations_complete=4, melissa_version="0.1.0")
    attrs = read_field_results(path).attrs
    assert attrs["field"] == "temperature"
    assert attrs["variance"] == "unbiased, ddof=1 (np.var(x, ddof=1))"
    assert attrs["skewness"] == "biased (scipy.stats.skew(x, bias=True))"
    assert attrs["kurtosis"] == (
        "excess, biased (scipy.stats.kurtosis(x, fisher=True, bias=True))"
    )
    assert attrs["threshold_exceedance"] == "count of x > t (strict)"
    assert attrs["simulations_complete"] == 4 and attrs["melissa_version"] == "0.1.0"


@pytest.mark.parametrize(
    ("shape", "dims"),
    [
        ((24,), ("x",)),
        ((4, 6), ("y", "x")),
        ((2, 3, 4), ("z", "y", "x")),
        ((2, 2, 3, 2), ("dim_0", "dim_1", "dim_2", "dim_3")),
    ],
)
def test_global_shape_gives_spatial_dims(
    tmp_path: Path, shape: tuple[int, ...], dims: tuple[str, ...]
) -> None:
    results = field_results()
    path = tmp_path / "temperature.nc"
    write(path, results, shape=shape)
    ds = read_field_results(path)
    assert ds["variance"].dims == ("time", *dims)
    assert ds["threshold_exceedance"].dims == ("threshold", "time", *dims)
    # Cells are unflattened in C order: a cell keeps its value at its multi-index.
    cell = 17
    index = np.unravel_index(cell, shape)
    assert ds["mean"].values[(2, *index)] == results["mean"][2, cell]
    assert ds["threshold_exceedance"].values[(1, 2, *index)] == (
        results["threshold_exceedance"][1, 2, cell]
    )


@pytest.mark.parametrize(
    ("shape", "thresholds", "message"),
    [((5, 5), THRESHOLDS, "does not hold"), (None, [0.0], "threshold_exceedance")],
)
def test_inconsistent_arguments_write_nothing(
    tmp_path: Path, shape: tuple[int, ...] | None, thresholds: list[float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        write_field_results(tmp_path / "t.nc", "t", field_results(), shape=shape,
                            thresholds=thresholds, attrs={})
    assert list(tmp_path.iterdir()) == []


def test_write_replaces_atomically_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "temperature.nc"
    write(path, field_results(steps=2))
    write(path, field_results(steps=3))
    assert list(tmp_path.iterdir()) == [path]
    assert read_field_results(path).sizes["time"] == 3
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as any new file, not a temp file's 0600


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "temperature.nc"
    write(path, field_results(steps=2))
    with pytest.raises(TypeError):  # netCDF attributes cannot hold a dict
        write_field_results(path, "temperature", field_results(steps=3), shape=None,
                            thresholds=THRESHOLDS, attrs={"bad": {"a": 1}})  # type: ignore[dict-item]
    assert list(tmp_path.iterdir()) == [path]
    assert read_field_results(path).sizes["time"] == 2
