"""Zarr results: chunks that never straddle more than two ranks, C-contiguous boxes, and a round
trip of every variable, attribute and coordinate against the NetCDF file of the same results."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st

from melissa.config.models import SAConfig
from melissa.protocol import cell_ranges
from melissa.server.sa.output import write_field_results
from melissa.server.sa.zarr_output import ZarrResults, boxes, chunk_shape, whole_chunks
from melissa.server.stats import FieldStatistics
from melissa.server.stats.sobol import SobolState

SHAPES = st.lists(st.integers(1, 7), min_size=1, max_size=3).map(tuple)


@given(SHAPES, st.data())
def test_boxes_are_the_cells_in_c_order(shape: tuple[int, ...], data: st.DataObject) -> None:
    size = math.prod(shape)
    a = data.draw(st.integers(0, size))
    b = data.draw(st.integers(a, size))
    grid = np.arange(size).reshape(shape)
    got = [grid[box].reshape(-1) for _, box in boxes(a, b, shape)]
    assert [int(g[0]) for g in got if g.size] == [flat for flat, _ in boxes(a, b, shape)]
    np.testing.assert_array_equal(np.concatenate(got) if got else [], np.arange(a, b))


@given(SHAPES, st.integers(1, 5))
def test_a_chunk_touches_at_most_two_ranks_and_whole_chunks_one(shape: tuple[int, ...],
                                                                ranks: int) -> None:
    size = math.prod(shape)
    ranges = cell_ranges(size, ranks)
    smallest = min((b - a for a, b in ranges if b > a), default=size)
    chunks = chunk_shape(shape, smallest)
    assert math.prod(chunks) <= smallest
    # chunk id of every cell, from the chunk grid
    index = np.indices(shape).reshape(len(shape), -1)
    chunk_of = np.ravel_multi_index(
        tuple(i // c for i, c in zip(index, chunks)),
        tuple(-(-n // c) for n, c in zip(shape, chunks)))
    owners: dict[int, set[int]] = {}
    for rank, (start, stop) in enumerate(ranges):
        for cell in range(start, stop):
            owners.setdefault(int(chunk_of[cell]), set()).add(rank)
        a, b = whole_chunks(start, stop, shape, chunks)
        assert start <= a <= b <= stop
        whole = set(chunk_of[a:b].tolist())
        assert whole.isdisjoint(chunk_of[start:a].tolist() + chunk_of[b:stop].tolist())
    assert all(len(r) <= 2 for r in owners.values())
    for rank, (start, stop) in enumerate(ranges):  # whole chunks: written by their rank alone
        a, b = whole_chunks(start, stop, shape, chunks)
        assert all(owners[int(c)] == {rank} for c in set(chunk_of[a:b].tolist()))


@pytest.mark.parametrize(("dtype", "compression"), [("float64", "none"), ("float32", "zstd"),
                                                    ("float64", "lz4")])
def test_round_trip_equals_the_netcdf_file(tmp_path: Path, dtype: str, compression: str) -> None:
    sa = SAConfig(skewness=True, kurtosis=True, min=True, max=True, threshold_exceedance=True,
                  threshold_values=[0.0, 1.5], quantiles=[0.25, 0.75])
    steps, shape = 3, (4, 6)
    stats = FieldStatistics(steps, 24, sa)
    sobol = SobolState(2, steps, 24)
    rng = np.random.default_rng(0)
    for sim in range(5):
        for t in range(steps):
            stats.update(t, 1, rng.normal(size=23), sim)  # cell 0: no sample
            sobol.update(t, rng.normal(size=(4, 24)))
    results = {**stats.results(), **sobol.results()}
    leading = {"threshold": [0.0, 1.5], "quantile_level": [0.25, 0.75], "parameter": ["a", "b"]}
    attrs = {"melissa_version": "x", "server_ranks": 1, "simulations_complete": 5}
    write_field_results(tmp_path / "t.nc", "t", results, shape=shape, thresholds=[0.0, 1.5],
                        attrs=attrs, parameters=["a", "b"], quantile_levels=[0.25, 0.75],
                        dtype=dtype)
    floats = np.dtype(dtype)
    variables = {k: floats if v.dtype.kind == "f" else v.dtype for k, v in results.items()}
    ZarrResults(tmp_path / "t.zarr", "t", nb_time_steps=steps, shape=shape, global_size=24,
                leading=leading, variables=variables, ranges=[(0, 24)], rank=0, comm=None,
                compression=compression, durable=True).write(
        lambda s: {k: v[..., s, :] for k, v in results.items()}, attrs)
    expected = xr.load_dataset(tmp_path / "t.nc")
    got = xr.open_zarr(tmp_path / "t.zarr").load()
    assert got.attrs == expected.attrs
    assert set(got.coords) == set(expected.coords)
    assert list(got["parameter"].values) == ["a", "b"]
    for name, variable in expected.data_vars.items():
        assert got[name].dims == variable.dims, name
        assert got[name].dtype == variable.dtype, name
        assert got[name].attrs["long_name"] == variable.attrs["long_name"], name
        np.testing.assert_array_equal(got[name].values, variable.values, err_msg=name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.nc", "t.zarr"]  # no temporary
