"""Results written by every server rank in parallel (Zarr): the same dataset for M = 1, 2, 3
ranks, equal to NumPy offline; float32 and compressed variants; no gather on rank 0."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

NY, NX, STEPS, SIMS = 7, 9, 3, 5  # 63 cells: rank ranges cut rows and chunks

SIMULATION = f"""
import sys
import numpy as np
import melissa.client as melissa

a, b = (float(v) for v in sys.argv[1:])
cells = np.arange({NY * NX}, dtype=np.float64) + 1
melissa.init("u", cells.size, shape=({NY}, {NX}))
for step in range({STEPS}):
    melissa.send("u", np.sin(a * cells + step) + b * cells ** 2)
melissa.finalize()
"""

FULL_SET = {"mean": True, "variance": True, "skewness": True, "kurtosis": True, "min": True,
            "max": True, "threshold_exceedance": True, "threshold_values": [0.0, 1.0],
            "quantiles": [0.1, 0.5, 0.9], "plot_time_steps": []}


def study(launcher: Any, tmp_path: Path, name: str, ranks: int, **sa: Any) -> Path:
    (tmp_path / "sim.py").write_text(SIMULATION)
    run = launcher({
        "output_dir": name,
        "study_options": {"field_names": ["u"], "nb_time_steps": STEPS,
                          "parameter_sweep_size": SIMS, "seed": 3},
        "parameters": [{"name": "a", "distribution": "uniform", "low": 0, "high": 2},
                       {"name": "b", "distribution": "normal", "mean": 0, "std": 0.1}],
        "sa_config": {**FULL_SET, "output_format": "zarr", **sa},
        "client_config": {"executable_command": f"{sys.executable} sim.py"},
        "server_config": {"ranks": ranks},
        # One simulation at a time: the same order of samples in every study, so that the
        # order-dependent results (rounding of the moments, quantile estimates) agree bit for bit.
        "launcher_config": {"job_limit": 1},
    })
    assert run.returncode == 0, run.output
    assert not (run.output_dir / "statistics" / "u.nc").exists()
    return run.output_dir


def test_every_rank_count_gives_the_same_dataset_equal_to_numpy(launcher: Any,
                                                                 tmp_path: Path) -> None:
    outputs = [study(launcher, tmp_path, f"m{m}", m) for m in (1, 2, 3)]
    first = xr.open_zarr(outputs[0] / "statistics" / "u.zarr")
    x = np.array([[np.sin(float(r["a"]) * (np.arange(NY * NX) + 1.0) + t)
                   + float(r["b"]) * (np.arange(NY * NX) + 1.0) ** 2 for t in range(STEPS)]
                  for r in _rows(outputs[0])]).reshape(SIMS, STEPS, NY, NX)
    assert first["mean"].dims == ("time", "y", "x")
    assert first["quantile"].dims == ("quantile_level", "time", "y", "x")
    assert list(first["threshold"].values) == [0.0, 1.0]
    assert list(first["quantile_level"].values) == [0.1, 0.5, 0.9]
    np.testing.assert_allclose(first["mean"].values, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(first["variance"].values, x.var(axis=0, ddof=1), rtol=1e-10)
    assert (first["minimum"].values == x.min(axis=0)).all()
    assert (first["threshold_exceedance"].values[1] == (x > 1.0).sum(axis=0)).all()
    assert (first["count"].values == SIMS).all()
    # quantile_exact_samples "auto": K = SIMS on every rank count, the quantiles np.quantile's.
    assert first.attrs["quantile_exact_samples"] == SIMS
    np.testing.assert_allclose(first["quantile"].values, np.quantile(x, [0.1, 0.5, 0.9], axis=0),
                               rtol=1e-12, atol=0)
    for m, out in zip((2, 3), outputs[1:]):
        other = xr.open_zarr(out / "statistics" / "u.zarr")
        assert other.attrs.pop("server_ranks") == m
        first.attrs.pop("server_ranks", None)
        xr.testing.assert_identical(first.load(), other.load())


def test_float32_and_compressed_results_read_back(launcher: Any, tmp_path: Path) -> None:
    exact = xr.open_zarr(study(launcher, tmp_path, "f64", 2) / "statistics" / "u.zarr").load()
    lean = xr.open_dataset(study(launcher, tmp_path, "f32", 2, output_dtype="float32",
                                 output_compression="zstd") / "statistics" / "u.zarr").load()
    for name, variable in exact.data_vars.items():
        if variable.dtype.kind == "f":
            assert lean[name].dtype == np.float32, name
            np.testing.assert_array_equal(lean[name].values, variable.values.astype(np.float32))
        else:
            assert (lean[name].values == variable.values).all(), name
    assert lean.attrs["field"] == "u" and "mean" in lean.attrs


PEAK = re.compile(r"server rank (\d+): peak memory ([\d.]+) MB")


def test_rank_0_holds_no_more_than_rank_1(launcher: Any, tmp_path: Path) -> None:
    """Peak resident memory (/proc VmHWM) of the two ranks of a study whose results are several
    times a rank's baseline: a gather on rank 0 (output_format netcdf) makes it 1.9 times rank
    1's here."""
    cells, steps = 400_000, 16
    (tmp_path / "big.py").write_text(f"""
import numpy as np
import melissa.client as melissa
values = np.random.default_rng().random({cells})
melissa.init("u", {cells})
for step in range({steps}):
    melissa.send("u", values + step)
melissa.finalize()
""")
    run = launcher({
        "output_dir": "big",
        "study_options": {"field_names": ["u"], "nb_time_steps": steps,
                          "parameter_sweep_size": 2},
        "parameters": [{"name": "a", "distribution": "uniform", "low": 0, "high": 1}],
        "sa_config": {"mean": True, "variance": True, "min": True, "max": True,
                      "plot_time_steps": [], "output_format": "zarr"},
        "client_config": {"executable_command": f"{sys.executable} big.py"},
        "server_config": {"ranks": 2},
    })
    assert run.returncode == 0, run.output
    peaks = dict(PEAK.findall((run.output_dir / "logs" / "server.log").read_text()))
    rank0, rank1 = float(peaks["0"]), float(peaks["1"])
    assert rank0 <= 1.3 * rank1, (rank0, rank1)


def _rows(output: Path) -> list[dict[str, str]]:
    import csv

    with open(output / "parameters.csv", newline="") as f:
        return sorted(csv.DictReader(f), key=lambda r: int(r["simulation_id"]))
