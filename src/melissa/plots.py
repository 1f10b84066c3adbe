"""PNG plots of one field's statistics, read back from the study's NetCDF results.

Input layout (what the sensitivity server writes): variables such as `mean`, `variance`,
`skewness`, `kurtosis`, `minimum`, `maximum`, `threshold_exceedance` (counts, with a leading
`threshold` dimension) and `count` (samples per time step / cell), over dimensions
("time", "y", "x") for a 2-D field with a declared shape, ("time", "x") for a 1-D one, or
("time", "cell") for a field without a shape. Every variable is optional.

Output, in plots_dir, file names `<field>_<what>.png`:
- `mean_std`: mean and standard deviation at the chosen time steps (maps for 2-D fields, profiles
  with a mean +- std band otherwise);
- `min_max`, `skewness_kurtosis`, `threshold_exceedance` (probability = count above / count):
  the same, for the statistics present;
- `time_series`: mean +- std (and min/max) over time at a few cells, to see the dynamics;
- `quantiles`: the quantile estimates at the chosen time steps;
- `sobol_first`, `sobol_total` (Sobol' studies): index maps (or profiles), a row per parameter;
- `sobol_time_series`: first-order (with its 95% interval) and total indices of every parameter
  over time at the chosen cells: which parameter drives the field where and when.
`plot_convergence` draws statistics/sobol_convergence.csv (aggregated indices and the widest
interval among them, against complete groups).

Plots read only what they draw: the chosen time steps, and of those at most _MAX_POINTS cells
along each spatial axis (every k-th cell: about the figure's width in pixels); the time series
read the probe cells alone. On Zarr results that is a few chunks, whatever the study's size.

Only `matplotlib.figure.Figure` is used, never pyplot: no global figure registry to leak or to
close, no GUI backend, safe from a server or launcher process and from threads.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.patches import Patch

__all__ = ["default_time_steps", "plot_convergence", "plot_statistics"]

TIME = "time"
THRESHOLD = "threshold"
_INDEX_DIMS = ("parameter", "quantile_level")
COUNT = "count"
DPI = 100
# Sobol' index cells the server left NaN: their output variance is negligible (round-off).
MASKED_COLOR = "lightgrey"
MASKED_LABEL = ("grey: masked, output variance < 1e-12 x\nthe field's largest at that step "
                "(index undefined);\nestimates drawn as they are, even outside [0, 1]")
_MAX_POINTS = 1000  # cells drawn along a spatial axis, at most (about a figure's pixels)

# figure titles, by file name suffix
TITLES = {
    "mean_std": "mean and standard deviation",
    "min_max": "minimum and maximum",
    "skewness_kurtosis": "skewness and excess kurtosis",
    "threshold_exceedance": "threshold exceedance",
}

# accepted variable names per statistic, first found wins (the long names are the server's)
_NAMES: dict[str, tuple[str, ...]] = {
    "mean": ("mean",),
    "variance": ("variance",),
    "skewness": ("skewness",),
    "kurtosis": ("kurtosis",),
    "minimum": ("minimum", "min"),
    "maximum": ("maximum", "max"),
    "threshold_exceedance": ("threshold_exceedance",),
}


@dataclass(frozen=True)
class Row:
    """One statistic to draw: its label, its values over (time, *space), how to colour it."""

    label: str
    data: xr.DataArray
    cmap: str = "viridis"
    limits: tuple[float, float] | None = None  # fixed colour range, e.g. (0, 1) for a probability
    diverging: bool = False  # colour range symmetric about 0 (skewness, excess kurtosis)
    index: bool = False  # a Sobol' index: NaN cells masked, values outside [0, 1] counted


def plot_statistics(
    results_path: Path, plots_dir: Path, time_steps: Sequence[int] | None = None,
    cells: Sequence[int] | None = None,
) -> list[Path]:
    """Write the PNG plots of the field in `results_path` to `plots_dir`; return their paths.

    time_steps: indices along "time" to show (default: first, middle, last). Steps out of
    range are skipped with a warning; an empty list writes no plot at all. cells: flat (C
    order) cell indices of the Sobol' time series (default: the middle cell and the cell of
    largest variance at the last step).
    """
    results_path, plots_dir = Path(results_path), Path(plots_dir)
    if time_steps is not None and len(time_steps) == 0:
        return []
    # lazily indexed: only the selected time steps and probe cells are read from disk
    with xr.open_dataset(results_path) as ds:
        field = str(ds.attrs.get("field") or results_path.stem)
        stats = _statistics(ds)
        indexed = [n for n in ("quantile", "sobol_first") if n in ds.data_vars]
        if not stats and not indexed:
            warnings.warn(f"{results_path}: no statistic to plot", stacklevel=2)
            return []
        reference = next(iter(stats.values())) if stats else ds[indexed[0]]
        space = _spatial_dims(reference)
        stats = {k: _time_first(v, space) for k, v in stats.items()}
        n_time = reference.sizes[TIME]
        steps = _valid_steps(time_steps, n_time, results_path)
        plots_dir.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        # The snapshots read the chosen steps only (their index kept as the "step" coordinate),
        # thinned to at most _MAX_POINTS cells per spatial axis.
        snap = _thin(ds.isel({TIME: steps}), space).assign_coords(step=(TIME, steps)).load()
        snap_stats = {k: _time_first(v, space) for k, v in _statistics(snap).items()}
        local = list(range(len(steps)))
        title_suffix = _ensemble_size(snap)
        for what, rows in _groups(snap, snap_stats, field).items():
            if rows and steps:
                title = f"{field}: {TITLES[what]}{title_suffix}"
                fig = _snapshot_figure(rows, local, space, title)
                written.append(_save(fig, plots_dir / f"{field}_{what}.png"))
        series = _time_series_figure(stats, space, field, title_suffix)
        if series is not None:
            written.append(_save(series, plots_dir / f"{field}_time_series.png"))
        for what, rows in _indexed_rows(snap, space).items():
            if steps:
                title = f"{field}: {INDEXED_TITLES[what]}{_groups_suffix(snap)}"
                fig = _snapshot_figure(rows, local, space, title)
                written.append(_save(fig, plots_dir / f"{field}_{what}.png"))
        if "sobol_first" in ds.data_vars:
            probes = _sobol_cells(ds, space, cells, results_path)
            fig = _sobol_series_figure(ds, space, probes, field)
            written.append(_save(fig, plots_dir / f"{field}_sobol_time_series.png"))
    return written


def plot_convergence(csv_path: Path, plots_dir: Path) -> Path | None:
    """plots/sobol_convergence.png from statistics/sobol_convergence.csv, per field against
    complete groups: the convergence figure (widest 95% interval of the aggregated indices), and
    the aggregated first-order and total indices of every parameter with their 95% intervals.
    None when the file is missing or has no finite figure yet."""
    import csv

    try:
        with open(csv_path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if "widest_interval" in r]
    except (OSError, csv.Error):
        return None
    fields: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        fields.setdefault(row["field"], []).append(row)
    if not any(np.isfinite(float(r["widest_interval"])) for r in rows):
        return None
    fig = Figure(figsize=(7, 3.2 * (1 + len(fields))), layout="constrained")
    axes = fig.subplots(1 + len(fields), 1, squeeze=False)[:, 0]
    for i, (name, points) in enumerate(fields.items()):
        groups = np.array([float(r["groups"]) for r in points])
        axes[0].plot(groups, [float(r["widest_interval"]) for r in points], "-o",
                     color=f"C{i}", markersize=3, label=name)
        parameters = [c.removeprefix("first_") for c in points[0]
                      if c.startswith("first_") and not c.endswith(("_low", "_high"))]
        ax = axes[1 + i]
        for j, parameter in enumerate(parameters):
            for kind, style in (("first", "-"), ("total", "--")):
                column = f"{kind}_{parameter}"
                values, low, high = (np.array([float(r[c]) for r in points]) for c in
                                     (column, f"{column}_low", f"{column}_high"))
                ax.plot(groups, values, style, color=f"C{j}",
                        label=f"{parameter}: {'first order' if kind == 'first' else 'total'}")
                ax.fill_between(groups, low, high, color=f"C{j}", alpha=0.12)
        ax.set_title(f"{name}: aggregated indices (variance-weighted over cells and time "
                     "steps), 95% intervals shaded", fontsize=9)
        ax.set_xlabel("complete groups")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    axes[0].set_xlabel("complete groups")
    axes[0].set_ylabel("widest 95% interval")
    axes[0].set_title("Convergence of the Sobol' indices: widest 95% interval of the "
                      "aggregated indices", fontsize=9)
    axes[0].grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    plots_dir.mkdir(parents=True, exist_ok=True)
    return _save(fig, Path(plots_dir) / "sobol_convergence.png")


def default_time_steps(n_time: int) -> list[int]:
    """First, middle and last time step (fewer when there are fewer steps)."""
    return sorted({0, (n_time - 1) // 2, n_time - 1}) if n_time > 0 else []


# --- reading --------------------------------------------------------------------------------


def _statistics(ds: xr.Dataset) -> dict[str, xr.DataArray]:
    found: dict[str, xr.DataArray] = {}
    for stat, names in _NAMES.items():
        for name in names:
            if name in ds.data_vars and TIME in ds[name].dims:
                found[stat] = ds[name]
                break
    return found


def _ensemble_size(ds: xr.Dataset) -> str:
    """' (N simulations)' from the `count` variable, or '' when it is absent or empty."""
    if COUNT not in ds.variables or ds[COUNT].size == 0:
        return ""
    largest = np.nanmax(np.asarray(ds[COUNT].values, dtype=float))
    return f" ({int(largest)} simulations)" if np.isfinite(largest) else ""


def _spatial_dims(da: xr.DataArray) -> tuple[str, ...]:
    """Dimensions of one time step of the field: (y, x), (x,) or (cell,)."""
    return tuple(str(d) for d in da.dims if d not in (TIME, THRESHOLD, *_INDEX_DIMS))


def _time_first(da: xr.DataArray, space: tuple[str, ...]) -> xr.DataArray:
    lead = (THRESHOLD,) if THRESHOLD in da.dims else ()
    return da.transpose(*lead, TIME, *space)


def _valid_steps(requested: Sequence[int] | None, n_time: int, source: Path) -> list[int]:
    if requested is None:
        return default_time_steps(n_time)
    steps: list[int] = []
    for step in requested:
        if not 0 <= step < n_time:
            warnings.warn(
                f"{source.name}: time step {step} is out of range [0, {n_time - 1}], not plotted",
                stacklevel=3,
            )
        elif step not in steps:
            steps.append(int(step))
    return steps


def _groups(ds: xr.Dataset, stats: dict[str, xr.DataArray], field: str) -> dict[str, list[Row]]:
    """The statistics of each figure, in figure order; figures with no row are skipped."""
    mean_std: list[Row] = []
    if "mean" in stats:
        mean_std.append(Row("mean", stats["mean"]))
    if "variance" in stats:
        mean_std.append(Row("standard deviation", _std(stats["variance"]), cmap="magma"))
    extrema = [
        Row(name, stats[name], cmap="inferno") for name in ("minimum", "maximum") if name in stats
    ]
    if len(extrema) == 2:
        # one colour range for both, so that min and max maps compare directly
        lo, hi = _limits([r.data for r in extrema])
        if lo is not None and hi is not None:
            extrema = [Row(r.label, r.data, r.cmap, limits=(lo, hi)) for r in extrema]
    moments = [
        Row(label, stats[name], cmap="RdBu_r", diverging=True)
        for name, label in (("skewness", "skewness"), ("kurtosis", "excess kurtosis"))
        if name in stats
    ]
    return {
        "mean_std": mean_std,
        "min_max": extrema,
        "skewness_kurtosis": moments,
        "threshold_exceedance": _exceedance_rows(ds, stats, field),
    }


INDEXED_TITLES = {
    "quantiles": "quantiles",
    "sobol_first": "first-order Sobol' indices",
    "sobol_total": "total Sobol' indices",
}


def _indexed_rows(ds: xr.Dataset, space: tuple[str, ...]) -> dict[str, list[Row]]:
    """Rows of the statistics with a leading index (quantile level, parameter), one per index."""
    out: dict[str, list[Row]] = {}
    if "quantile" in ds.data_vars:
        q = ds["quantile"]
        levels = q["quantile_level"].values if "quantile_level" in q.coords else range(len(q))
        out["quantiles"] = [
            Row(f"quantile {level:g}", q.isel(quantile_level=i).transpose(TIME, *space))
            for i, level in enumerate(levels)
        ]
    for name in ("sobol_first", "sobol_total"):
        if name in ds.data_vars:
            index = ds[name]
            # Drawn as estimated, never clipped: the colour range holds [0, 1] and every value.
            lo, hi = _limits([index.values])
            limits = (min(0.0, lo if lo is not None else 0.0), max(1.0, hi if hi is not None
                                                                   else 1.0))
            out[name] = [
                Row(f"{INDEXED_TITLES[name].split()[0]} {param}",
                    index.isel(parameter=i).transpose(TIME, *space), cmap="plasma",
                    limits=limits, index=True)
                for i, param in enumerate(_parameter_names(index))
            ]
    return out


def _parameter_names(index: xr.DataArray) -> list[str]:
    if "parameter" in index.coords:
        return [str(p) for p in index["parameter"].values]
    return [f"parameter {i}" for i in range(index.sizes["parameter"])]


def _groups_suffix(ds: xr.Dataset) -> str:
    """' (N groups)' in a Sobol' study, else the number of simulations."""
    if "sobol_groups" in ds.data_vars and ds["sobol_groups"].size:
        return f" ({int(ds['sobol_groups'].values.max())} groups)"
    return _ensemble_size(ds)


def _sobol_cells(
    ds: xr.Dataset, space: tuple[str, ...], cells: Sequence[int] | None, source: Path
) -> list[tuple[str, tuple[int, ...]]]:
    shape = tuple(ds["sobol_first"].sizes[d] for d in space)
    size = int(np.prod(shape))
    if cells is not None:
        kept = [c for c in cells if 0 <= c < size]
        for c in sorted(set(cells) - set(kept)):
            warnings.warn(f"{source.name}: cell {c} is out of range [0, {size - 1}], "
                          "not plotted", stacklevel=3)
        return [(f"cell {c}", tuple(int(i) for i in np.unravel_index(c, shape))) for c in kept]
    probes = [("centre", tuple(n // 2 for n in shape))]
    if "variance" in ds.data_vars:
        last = np.asarray(ds["variance"].transpose(TIME, *space).isel({TIME: -1}).values, float)
        if np.any(np.isfinite(last)):
            where = tuple(int(i) for i in np.unravel_index(np.nanargmax(last), shape))
            if where != probes[0][1]:
                probes.append(("largest variance", where))
    return probes


def _sobol_series_figure(
    ds: xr.Dataset, space: tuple[str, ...], probes: list[tuple[str, tuple[int, ...]]], field: str
) -> Figure:
    """Per probe cell: S_k (solid, 95% band) and ST_k (dashed) of every parameter over time."""
    first = ds["sobol_first"].transpose("parameter", TIME, *space)
    total = ds["sobol_total"].transpose("parameter", TIME, *space)
    low = ds["sobol_first_low"].transpose("parameter", TIME, *space)
    high = ds["sobol_first_high"].transpose("parameter", TIME, *space)
    names = _parameter_names(first)
    fig = Figure(figsize=(max(4.6 * len(probes), 2.0 * len(names)), 4.6), layout="constrained")
    axes = fig.subplots(1, max(1, len(probes)), squeeze=False, sharey=True)[0]
    t = _time_axis(first)
    for ax, (label, index) in zip(axes, probes):
        at = dict(zip(space, index, strict=True))
        for k, name in enumerate(names):
            color = f"C{k}"
            cell = {"parameter": k, **at}
            ax.plot(t, first.isel(cell).values, color=color, label=f"S {name}")
            ax.fill_between(t, low.isel(cell).values, high.isel(cell).values, color=color,
                            alpha=0.2, linewidth=0)
            ax.plot(t, total.isel(cell).values, "--", color=color, label=f"ST {name}")
        where = ", ".join(f"{d}={i}" for d, i in at.items())
        ax.set_title(f"{label} ({where})", fontsize=9)
        ax.set_xlabel(_time_axis_label(first))
        ax.grid(alpha=0.3)
    # [0, 1] and every estimate, never clipped (small samples give some outside [0, 1])
    lo, hi = _limits([first.values, total.values, low.values, high.values])
    axes[0].set_ylim(min(-0.05, lo if lo is not None else 0.0),
                     max(1.05, hi if hi is not None else 1.0))
    axes[0].set_ylabel("Sobol' index")
    handles, labels = axes[0].get_legend_handles_labels()
    # one legend column per parameter: its S above its ST
    fig.legend(handles, labels, loc="outside lower center", ncol=len(names), fontsize=8)
    fig.suptitle(f"{field}: Sobol' indices over time (band: 95% interval of S){_groups_suffix(ds)}")
    return fig


def _std(variance: xr.DataArray) -> xr.DataArray:
    # rounding can make a zero variance slightly negative
    return variance.clip(min=0.0) ** 0.5


def _exceedance_rows(
    ds: xr.Dataset, stats: dict[str, xr.DataArray], field: str
) -> list[Row]:
    exceed = stats.get("threshold_exceedance")
    if exceed is None:
        return []
    if THRESHOLD not in exceed.dims:
        exceed = exceed.expand_dims(THRESHOLD)
    count = ds[COUNT] if COUNT in ds.variables else None
    rows = []
    for i in range(exceed.sizes[THRESHOLD]):
        above = exceed.isel({THRESHOLD: i})
        value = exceed[THRESHOLD].values[i] if THRESHOLD in exceed.coords else i
        if count is None:
            # without the sample count only the raw number of samples above can be shown
            rows.append(Row(f"samples with {field} > {value:g}", above, cmap="viridis"))
        else:
            rows.append(Row(f"P({field} > {value:g})", _probability(above, count), limits=(0, 1)))
    return rows


def _probability(above: xr.DataArray, count: xr.DataArray) -> xr.DataArray:
    count = count.astype(float)
    # a cell no simulation reached yet has no probability, not 0 or inf
    # keep above's dimension order (time first): a count over (cell,) would otherwise lead
    return (above / count.where(count > 0)).transpose(*above.dims, ...)


# --- drawing ----------------------------------------------------------------------------------


def _snapshot_figure(
    rows: list[Row], steps: list[int], space: tuple[str, ...], title: str
) -> Figure:
    if len(space) == 2:
        return _maps_figure(rows, steps, space, title)
    if rows[0].label == "mean" and len(rows) == 2:
        return _band_figure(rows[0], rows[1], steps, space, title)
    return _profiles_figure(rows, steps, space, title)


def _maps_figure(rows: list[Row], steps: list[int], space: tuple[str, ...], title: str) -> Figure:
    """A row per statistic, a column per time step; one colour range (and bar) per row."""
    ydim, xdim = space
    fig = Figure(figsize=(2.9 * len(steps) + 1.0, 3.1 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), len(steps), squeeze=False)
    for row, row_axes in zip(rows, axes, strict=True):
        snaps = [row.data.isel({TIME: s}).values for s in steps]
        vmin, vmax = row.limits or _limits(snaps, symmetric=row.diverging)
        ny, nx = snaps[0].shape
        # very elongated grids would become slivers at equal aspect
        aspect = "equal" if max(nx, ny) <= 4 * min(nx, ny) else "auto"
        image = None
        # the cells' own indices on the axes, also where the map is thinned
        xs, ys = (np.asarray(row.data[d].values) if d in row.data.coords else np.arange(n)
                  for d, n in ((xdim, nx), (ydim, ny)))
        extent = (xs[0] - 0.5, xs[-1] + 0.5, ys[0] - 0.5, ys[-1] + 0.5)
        cmap = matplotlib.colormaps[row.cmap].with_extremes(bad=MASKED_COLOR)
        for ax, step, snap in zip(row_axes, steps, snaps, strict=True):
            image = ax.imshow(
                snap, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax,
                interpolation="nearest", aspect=aspect, extent=extent,
            )
            note = f"\n{index_note(snap)}" if row.index else ""
            ax.set_title(f"{row.label}\n{_step_label(row.data, step)}{note}", fontsize=8)
            ax.set_xlabel(xdim)
            ax.set_ylabel(ydim)
        assert image is not None  # steps is never empty here
        fig.colorbar(image, ax=list(row_axes), shrink=0.9)
    if any(row.index for row in rows):
        fig.legend(handles=[Patch(color=MASKED_COLOR, label=MASKED_LABEL)],
                   loc="outside lower center", fontsize=8)
    fig.suptitle(title)
    return fig


def _band_figure(
    mean: Row, std: Row, steps: list[int], space: tuple[str, ...], title: str
) -> Figure:
    """Mean +- one standard deviation over the cells, one curve per time step."""
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    x = _cell_axis(mean.data)
    for step in steps:
        m = _flat(mean.data.isel({TIME: step}))
        s = _flat(std.data.isel({TIME: step}))
        (line,) = ax.plot(x, m, label=_step_label(mean.data, step))
        ax.fill_between(x, m - s, m + s, color=line.get_color(), alpha=0.25, linewidth=0)
    ax.set_xlabel(_cell_label(space))
    ax.set_ylabel("mean \u00b1 standard deviation")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def _profiles_figure(
    rows: list[Row], steps: list[int], space: tuple[str, ...], title: str
) -> Figure:
    """One panel per statistic, one curve per time step."""
    fig = Figure(figsize=(8, 3.2 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), 1, squeeze=False, sharex=True)[:, 0]
    for row, ax in zip(rows, axes, strict=True):
        x = _cell_axis(row.data)
        for step in steps:
            values = _flat(row.data.isel({TIME: step}))
            note = f": {index_note(values)}" if row.index else ""
            ax.plot(x, values, label=f"{_step_label(row.data, step)}{note}")
        if row.index:
            ax.set_title(MASKED_LABEL.replace("grey: masked", "gaps: masked")
                         .replace("\n", " "), fontsize=7)
        if row.limits is not None:
            ax.set_ylim(row.limits[0] - 0.02, row.limits[1] + 0.02)
        ax.set_ylabel(row.label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[-1].set_xlabel(_cell_label(space))
    fig.suptitle(title)
    return fig


def _time_series_figure(
    stats: dict[str, xr.DataArray], space: tuple[str, ...], field: str, title_suffix: str = ""
) -> Figure | None:
    """Mean +- std (and the extrema) over time at the centre and quarter cells."""
    if not any(k in stats for k in ("mean", "minimum", "maximum")):
        return None
    reference = next(iter(stats.values()))
    probes = _probe_cells(tuple(reference.sizes[d] for d in space))
    fig = Figure(figsize=(4.2 * len(probes), 3.8), layout="constrained")
    axes = fig.subplots(1, len(probes), squeeze=False, sharey=True)[0]
    for ax, (name, index) in zip(axes, probes, strict=True):
        at = dict(zip(space, index, strict=True))
        t = _time_axis(reference)
        if "mean" in stats:
            m = stats["mean"].isel(at).values
            ax.plot(t, m, color="C0", label="mean")
            if "variance" in stats:
                s = _std(stats["variance"].isel(at)).values
                ax.fill_between(t, m - s, m + s, color="C0", alpha=0.25, linewidth=0,
                                label="mean \u00b1 std")
        for stat, style in (("minimum", "--"), ("maximum", ":")):
            if stat in stats:
                ax.plot(t, stats[stat].isel(at).values, style, color="C3", label=stat)
        where = ", ".join(f"{d}={i}" for d, i in at.items())
        ax.set_title(f"{name} ({where})", fontsize=9)
        ax.set_xlabel(_time_axis_label(reference))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(field)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{field} over time{title_suffix}")
    return fig


def _probe_cells(shape: tuple[int, ...]) -> list[tuple[str, tuple[int, ...]]]:
    """Centre and two quarter cells (fewer on tiny grids, where they coincide)."""
    candidates = [
        ("centre", tuple(n // 2 for n in shape)),
        ("lower quarter", tuple(n // 4 for n in shape)),
        ("upper quarter", tuple((3 * n) // 4 for n in shape)),
    ]
    probes: list[tuple[str, tuple[int, ...]]] = []
    for name, index in candidates:
        if all(index != p[1] for p in probes):
            probes.append((name, index))
    return probes


# --- helpers ----------------------------------------------------------------------------------


def index_note(values: np.ndarray) -> str:
    """How many cells of a Sobol' index snapshot are masked (NaN) and outside [0, 1]."""
    values = np.asarray(values, dtype=float)
    masked = int(np.isnan(values).sum())
    below, above = int((values < 0).sum()), int((values > 1).sum())
    parts = [f"{masked} masked"] if masked else []
    if below:
        parts.append(f"{below} < 0 (min {np.nanmin(values):.2f})")
    if above:
        parts.append(f"{above} > 1 (max {np.nanmax(values):.2f})")
    return ", ".join(parts) if parts else "all in [0, 1]"


def _limits(
    arrays: Sequence[np.ndarray | xr.DataArray], symmetric: bool = False
) -> tuple[float | None, float | None]:
    """Common colour range of several snapshots, ignoring NaN (None: let matplotlib choose)."""
    finite = [np.asarray(a, dtype=float) for a in arrays]
    finite = [a[np.isfinite(a)] for a in finite]
    finite = [a for a in finite if a.size]
    if not finite:
        return None, None
    lo = float(min(a.min() for a in finite))
    hi = float(max(a.max() for a in finite))
    if symmetric:
        bound = max(abs(lo), abs(hi))
        return -bound, bound
    return lo, hi


def _step_label(da: xr.DataArray, step: int) -> str:
    """Of position `step` along time; a subset of the steps keeps their index as "step"."""
    index = int(da["step"].values[step]) if "step" in da.coords else step
    label = f"time step {index}"
    if TIME in da.coords:
        value = da[TIME].values[step]
        # show the coordinate only when it says more than the index (e.g. a physical time)
        if not (np.issubdtype(np.asarray(value).dtype, np.number) and value == index):
            label += f" ({TIME} = {_format(value)})"
    return label


def _format(value: object) -> str:
    return f"{value:g}" if isinstance(value, (float, np.floating)) else str(value)


def _time_axis(da: xr.DataArray) -> np.ndarray:
    if TIME in da.coords and np.issubdtype(da[TIME].dtype, np.number):
        return np.asarray(da[TIME].values)
    return np.arange(da.sizes[TIME])


def _time_axis_label(da: xr.DataArray) -> str:
    t = _time_axis(da)
    return "time step" if np.array_equal(t, np.arange(t.size)) else TIME


def _cell_axis(da: xr.DataArray) -> np.ndarray:
    """x values of a profile: the coordinate of a 1-D field if numeric, else the cell index."""
    space = _spatial_dims(da)
    if len(space) == 1 and space[0] in da.coords and np.issubdtype(da[space[0]].dtype, np.number):
        return np.asarray(da[space[0]].values)
    return np.arange(int(np.prod([da.sizes[d] for d in space])))


def _cell_label(space: tuple[str, ...]) -> str:
    return space[0] if len(space) == 1 else "cell (flattened " + " x ".join(space) + ")"


def _thin(ds: xr.Dataset, space: tuple[str, ...]) -> xr.Dataset:
    """Every k-th cell along each spatial dim, at most _MAX_POINTS of them (lazy: only those
    cells are read); a dim without coordinate gets the cell indices, for the profiles' x."""
    ds = ds.assign_coords({d: np.arange(ds.sizes[d]) for d in space if d not in ds.coords})
    return ds.isel({d: slice(None, None, -(-ds.sizes[d] // _MAX_POINTS)) for d in space})


def _flat(da: xr.DataArray) -> np.ndarray:
    return np.asarray(da.values, dtype=float).reshape(-1)


def _save(fig: Figure, path: Path) -> Path:
    # Figure.savefig picks the Agg canvas for PNG by itself; the figure is not registered
    # anywhere, so dropping the reference frees it
    fig.savefig(path, dpi=DPI)
    fig.clear()
    return path
