"""melissa.plots: PNG plots from synthetic NetCDF results in the server's layout."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import xarray as xr

from melissa.plots import _probability, default_time_steps, plot_statistics

N_TIME = 6
N_SIM = 8
THRESHOLDS = [0.3, 0.6]
ALL_VARS = (
    "mean", "variance", "skewness", "kurtosis", "minimum", "maximum",
    "threshold_exceedance", "count",
)


def make_dataset(
    dims: tuple[str, ...], shape: tuple[int, ...], variables: tuple[str, ...] = ALL_VARS,
    field: str | None = "temperature",
) -> xr.Dataset:
    """Statistics of N_SIM random smooth samples, in the layout the server writes."""
    rng = np.random.default_rng(0)
    grid = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    base = sum(grid) / len(grid)
    samples = np.stack([
        np.stack([base * (1 + t) / N_TIME + 0.1 * rng.standard_normal(shape)
                  for t in range(N_TIME)])
        for _ in range(N_SIM)
    ])  # (sim, time, *shape)
    space = ("time", *dims)
    values = {
        "mean": (space, samples.mean(axis=0)),
        "variance": (space, samples.var(axis=0, ddof=1)),
        "skewness": (space, rng.standard_normal(samples.shape[1:])),
        "kurtosis": (space, rng.standard_normal(samples.shape[1:])),
        "minimum": (space, samples.min(axis=0)),
        "maximum": (space, samples.max(axis=0)),
        "threshold_exceedance": (
            ("threshold", *space),
            np.stack([(samples > t).sum(axis=0) for t in THRESHOLDS]).astype(np.int64),
        ),
        "count": (("time",), np.full(N_TIME, N_SIM, dtype=np.int64)),
    }
    ds = xr.Dataset(
        {name: values[name] for name in variables},
        coords={"time": np.arange(N_TIME), "threshold": THRESHOLDS}
        if "threshold_exceedance" in variables else {"time": np.arange(N_TIME)},
    )
    if field is not None:
        ds.attrs["field"] = field
    return ds


def write(ds: xr.Dataset, path: Path) -> Path:
    ds.to_netcdf(path)
    return path


def check_pngs(paths: list[Path], plots_dir: Path, expected: set[str]) -> None:
    assert {p.name for p in paths} == expected
    assert {p.name for p in plots_dir.iterdir()} == expected
    for path in paths:
        assert path.parent == plots_dir
        assert path.stat().st_size > 1000
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[2] in (3, 4)
        assert image.shape[0] > 100 and image.shape[1] > 100
        assert image[..., :3].std() > 0.01  # something was drawn, not a blank canvas


ALL_PNGS = {
    "temperature_mean_std.png",
    "temperature_min_max.png",
    "temperature_skewness_kurtosis.png",
    "temperature_threshold_exceedance.png",
    "temperature_time_series.png",
}


def test_two_dimensional_field(tmp_path: Path) -> None:
    results = write(make_dataset(("y", "x"), (12, 16)), tmp_path / "temperature.nc")
    paths = plot_statistics(results, tmp_path / "plots")
    check_pngs(paths, tmp_path / "plots", ALL_PNGS)


def test_map_figure_has_one_column_per_time_step(tmp_path: Path) -> None:
    results = write(make_dataset(("y", "x"), (12, 12), ("mean",)), tmp_path / "t.nc")
    widths = []
    for steps in ([0], [0, 3, 5]):
        out = tmp_path / f"plots{len(steps)}"
        (png,) = [p for p in plot_statistics(results, out, steps) if "mean_std" in p.name]
        widths.append(matplotlib.image.imread(png).shape[1])
    assert widths[1] > 2 * widths[0]


def test_unshaped_field(tmp_path: Path) -> None:
    results = write(make_dataset(("cell",), (50,)), tmp_path / "temperature.nc")
    paths = plot_statistics(results, tmp_path / "plots", [0, 5])
    check_pngs(paths, tmp_path / "plots", ALL_PNGS)


def test_one_dimensional_field(tmp_path: Path) -> None:
    ds = make_dataset(("x",), (40,)).assign_coords(x=np.linspace(0.0, 2.0, 40))
    results = write(ds, tmp_path / "temperature.nc")
    paths = plot_statistics(results, tmp_path / "plots")
    check_pngs(paths, tmp_path / "plots", ALL_PNGS)


def test_field_name_falls_back_to_file_stem(tmp_path: Path) -> None:
    ds = make_dataset(("y", "x"), (8, 8), ("mean",), field=None)
    paths = plot_statistics(write(ds, tmp_path / "pressure.nc"), tmp_path / "plots")
    assert {p.name for p in paths} == {"pressure_mean_std.png", "pressure_time_series.png"}


@pytest.mark.parametrize("dims,shape", [(("y", "x"), (9, 11)), (("cell",), (30,))])
@pytest.mark.parametrize(
    "variables,expected",
    [
        (("mean",), {"mean_std", "time_series"}),
        (("variance",), {"mean_std"}),  # no mean nor extrema: no time series
        (("mean", "variance"), {"mean_std", "time_series"}),
        (("minimum",), {"min_max", "time_series"}),
        (("maximum", "count"), {"min_max", "time_series"}),
        (("kurtosis",), {"skewness_kurtosis"}),
        (("threshold_exceedance",), {"threshold_exceedance"}),  # raw counts without `count`
        (tuple(v for v in ALL_VARS if v != "variance"), {
            "mean_std", "min_max", "skewness_kurtosis", "threshold_exceedance", "time_series"}),
    ],
)
def test_missing_variables(
    tmp_path: Path,
    dims: tuple[str, ...],
    shape: tuple[int, ...],
    variables: tuple[str, ...],
    expected: set[str],
) -> None:
    results = write(make_dataset(dims, shape, variables), tmp_path / "temperature.nc")
    paths = plot_statistics(results, tmp_path / "plots")
    check_pngs(paths, tmp_path / "plots", {f"temperature_{e}.png" for e in expected})


def test_no_statistic_at_all_warns_and_writes_nothing(tmp_path: Path) -> None:
    results = write(make_dataset(("y", "x"), (4, 4), ("count",)), tmp_path / "temperature.nc")
    with pytest.warns(UserWarning, match="no statistic"):
        assert plot_statistics(results, tmp_path / "plots") == []


def test_out_of_range_steps_are_skipped_with_a_warning(tmp_path: Path) -> None:
    ds = make_dataset(("y", "x"), (10, 10), ("mean", "variance"))
    results = write(ds, tmp_path / "temperature.nc")
    with pytest.warns(UserWarning) as record:
        paths = plot_statistics(results, tmp_path / "plots", [-1, 0, 5, 6, 99, 5])
    messages = [str(w.message) for w in record]
    assert len(messages) == 3
    assert all("out of range [0, 5]" in m for m in messages)
    assert any("time step -1 " in m for m in messages)
    assert any("time step 99 " in m for m in messages)
    check_pngs(paths, tmp_path / "plots", {"temperature_mean_std.png", "temperature_time_series.png"})


def test_only_out_of_range_steps_still_plot_time_series(tmp_path: Path) -> None:
    results = write(make_dataset(("y", "x"), (10, 10), ("mean",)), tmp_path / "temperature.nc")
    with pytest.warns(UserWarning):
        paths = plot_statistics(results, tmp_path / "plots", [10, 20])
    check_pngs(paths, tmp_path / "plots", {"temperature_time_series.png"})


def test_empty_step_list_means_no_plots(tmp_path: Path) -> None:
    results = write(make_dataset(("y", "x"), (10, 10)), tmp_path / "temperature.nc")
    assert plot_statistics(results, tmp_path / "plots", []) == []
    assert not (tmp_path / "plots").exists()


def test_in_range_steps_give_no_warning(tmp_path: Path) -> None:
    results = write(make_dataset(("y", "x"), (10, 10), ("mean",)), tmp_path / "temperature.nc")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_statistics(results, tmp_path / "plots", [0, 2, 5])


def test_nan_cells_and_physical_time_coordinate(tmp_path: Path) -> None:
    # cells no simulation reached (count 0, NaN statistics) and a float time coordinate
    ds = make_dataset(("y", "x"), (10, 10))
    ds["mean"][:, :3, :] = np.nan
    ds["variance"][:, :3, :] = np.nan
    ds["count"] = (("time", "y", "x"), np.where(np.arange(10)[None, :, None] < 3, 0, N_SIM)
                   * np.ones((N_TIME, 10, 10), dtype=np.int64))
    ds = ds.assign_coords(time=np.linspace(0.1, 0.6, N_TIME))
    results = write(ds, tmp_path / "temperature.nc")
    paths = plot_statistics(results, tmp_path / "plots")
    check_pngs(paths, tmp_path / "plots", ALL_PNGS)


def test_dimension_order_is_normalised(tmp_path: Path) -> None:
    ds = make_dataset(("y", "x"), (6, 9)).transpose("x", "threshold", "y", "time")
    results = write(ds, tmp_path / "temperature.nc")
    check_pngs(plot_statistics(results, tmp_path / "plots"), tmp_path / "plots", ALL_PNGS)


def test_probability_is_count_above_over_count() -> None:
    above = xr.DataArray([[2, 0], [4, 1]], dims=("time", "cell"))
    count = xr.DataArray([4, 0], dims=("cell",))
    p = _probability(above, count)
    np.testing.assert_array_equal(p.values, [[0.5, np.nan], [1.0, np.nan]])


@pytest.mark.parametrize(
    "n,steps", [(1, [0]), (2, [0, 1]), (3, [0, 1, 2]), (100, [0, 49, 99]), (0, [])]
)
def test_default_time_steps(n: int, steps: list[int]) -> None:
    assert default_time_steps(n) == steps


@pytest.mark.parametrize("shape", [(7, 9), None])
def test_reads_what_the_server_writes(tmp_path: Path, shape: tuple[int, int] | None) -> None:
    # the real writer, so that a change of layout on either side shows up here
    from melissa.server.sa.output import write_field_results

    rng = np.random.default_rng(3)
    samples = rng.uniform(0.0, 1.0, size=(N_SIM, N_TIME, 63))  # (sim, time, cell)
    results = {
        "count": np.full((N_TIME, 63), N_SIM, dtype=np.int64),
        "mean": samples.mean(axis=0),
        "variance": samples.var(axis=0, ddof=1),
        "minimum": samples.min(axis=0),
        "minimum_simulation": samples.argmin(axis=0).astype(np.int64),
        "maximum": samples.max(axis=0),
        "threshold_exceedance": np.stack([(samples > t).sum(axis=0) for t in THRESHOLDS]),
    }
    path = tmp_path / "temperature.nc"
    write_field_results(path, "temperature", results, shape=shape, thresholds=THRESHOLDS,
                        attrs={})
    paths = plot_statistics(path, tmp_path / "plots")
    check_pngs(paths, tmp_path / "plots", {
        "temperature_mean_std.png", "temperature_min_max.png",
        "temperature_threshold_exceedance.png", "temperature_time_series.png",
    })
