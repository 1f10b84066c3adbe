"""End to end: the heat-equation study through the CLI equals NumPy/SciPy computed offline."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats
import xarray as xr

from tests.integration.conftest import HEAT, LauncherRun

NX, NY, STEPS, SIMS = 12, 9, 6, 10
THRESHOLDS = [250.0, 320.0]
LEVELS = [0.05, 0.5, 0.95]


def heat_config() -> dict[str, Any]:
    bounds = {"initial_temperature": (100, 500), "left_temperature": (100, 500),
              "right_temperature": (100, 500), "top_temperature": (100, 500),
              "bottom_temperature": (100, 500), "diffusivity": (0.5, 2.0)}
    return {
        "output_dir": "out",
        "study_options": {"field_names": ["temperature"], "nb_time_steps": STEPS,
                          "parameter_sweep_size": SIMS, "seed": 11},
        "parameters": [{"name": k, "distribution": "uniform", "low": lo, "high": hi}
                       for k, (lo, hi) in bounds.items()],
        "sampling": {"method": "lhs"},
        "sa_config": {"mean": True, "variance": True, "skewness": True, "kurtosis": True,
                      "min": True, "max": True, "threshold_exceedance": True,
                      "threshold_values": THRESHOLDS, "plot_time_steps": [0, STEPS - 1],
                      "quantiles": LEVELS},
        "client_config": {
            "executable_command": f"python3 {HEAT} --nx {NX} --ny {NY} --steps {STEPS}"},
        "launcher_config": {"job_limit": 3},
    }


def offline_ensemble(run: LauncherRun) -> tuple[np.ndarray, np.ndarray]:
    """(simulation ids, fields[sim, step, y, x]) recomputed from parameters.csv."""
    spec = importlib.util.spec_from_file_location("heat", HEAT)
    assert spec and spec.loader
    heat = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(heat)
    rows = run.parameters()
    names = ["initial_temperature", "left_temperature", "right_temperature",
             "top_temperature", "bottom_temperature", "diffusivity"]
    ids = np.array([int(r["simulation_id"]) for r in rows])
    fields = np.array([
        list(heat.simulate(*(float(r[n]) for n in names), nx=NX, ny=NY, nb_steps=STEPS))
        for r in rows
    ])
    return ids, fields


def test_heat_study_equals_offline_numpy(launcher: Any) -> None:
    run = launcher(heat_config())
    assert run.returncode == 0, run.output
    rows = run.parameters()
    assert len(rows) == SIMS and {r["status"] for r in rows} == {"completed"}
    ids, x = offline_ensemble(run)
    ds = xr.open_dataset(run.output_dir / "statistics" / "temperature.nc")
    assert ds["mean"].dims == ("time", "y", "x") and ds["mean"].shape == (STEPS, NY, NX)

    def close(name: str, expected: np.ndarray) -> None:
        np.testing.assert_allclose(ds[name].values, expected, rtol=1e-10, atol=1e-9, err_msg=name)

    assert (ds["count"].values == SIMS).all()
    close("mean", x.mean(axis=0))
    close("variance", x.var(axis=0, ddof=1))
    interior = np.s_[:, 1:-1, 1:-1]  # walls are constant per simulation but vary across them
    np.testing.assert_allclose(ds["skewness"].values[interior],
                               scipy.stats.skew(x, axis=0, bias=True)[interior], rtol=1e-8)
    np.testing.assert_allclose(
        ds["kurtosis"].values[interior],
        scipy.stats.kurtosis(x, axis=0, fisher=True, bias=True)[interior], rtol=1e-8)
    close("minimum", x.min(axis=0))
    close("maximum", x.max(axis=0))
    assert (ds["minimum_simulation"].values == ids[x.argmin(axis=0)]).all()
    assert (ds["maximum_simulation"].values == ids[x.argmax(axis=0)]).all()
    for i, t in enumerate(THRESHOLDS):
        assert (ds["threshold_exceedance"].values[i] == (x > t).sum(axis=0)).all()
    # quantile_exact_samples "auto": K = the study's size, so the quantiles are np.quantile's.
    assert ds.attrs["quantile_exact_samples"] == SIMS
    np.testing.assert_allclose(ds["quantile"].values, np.quantile(x, LEVELS, axis=0),
                               rtol=1e-12, atol=0, err_msg="quantile")
    assert "ddof=1" in ds.attrs["variance"]
    ds.close()

    plots = sorted(p.name for p in (run.output_dir / "plots").glob("*.png"))
    assert plots, run.output
    server_log = (run.output_dir / "logs" / "server.log").read_text()
    assert f"quantiles exact up to {SIMS} samples per cell (every cell's {SIMS} planned" in server_log
    assert len(list((run.output_dir / "logs").glob("simulation_*.log"))) == SIMS
    assert "completed" in run.output and str(run.output_dir / "statistics") in run.output


def test_same_seed_same_parameters(launcher: Any, tmp_path: Path) -> None:
    cfg = heat_config()
    cfg["study_options"]["parameter_sweep_size"] = 3
    first = launcher(cfg)
    assert first.returncode == 0, first.output
    first_rows = first.parameters()
    again = launcher(cfg, "--overwrite")
    assert again.returncode == 0, again.output
    assert first_rows == again.parameters()
    refused = launcher(cfg)
    assert refused.returncode != 0
    assert "already holds a study" in refused.output and "--overwrite" in refused.output
