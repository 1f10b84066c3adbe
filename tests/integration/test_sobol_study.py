"""Sobol' studies end to end through melissa-launcher: Ishigami (analytic indices) with the C
client, a field-valued model with known per-cell indices on two server ranks, and the heat
example's config_sobol.json. Each is also checked against the Martinez estimator computed in
batch from the parameters.csv of the study (same samples)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from melissa.config.loader import strip_comments
from tests.compiled import PREFIX, run_checked, system_tool
from tests.integration.conftest import REPO

ISHIGAMI = REPO / "examples" / "ishigami"
HEAT = REPO / "examples" / "heat_equation"
ISHIGAMI_FIRST = np.array([0.3139, 0.4424, 0.0])
ISHIGAMI_TOTAL = np.array([0.5576, 0.4424, 0.2437])


def example_config(path: Path, **changes: Any) -> dict[str, Any]:
    config = json.loads(strip_comments(path.read_text()))
    for section, values in changes.items():
        if isinstance(values, dict):
            config[section] = {**config.get(section, {}), **values}
        else:
            config[section] = values
    return config


def groups_from_csv(run: Any, model: Any, names: list[str], second_order: bool = False
                    ) -> np.ndarray:
    """(groups, p + 2 or 2p + 2, ...) outputs of the study's groups, recomputed from
    parameters.csv."""
    rows = run.parameters()
    assert all(r["status"] == "completed" for r in rows)
    size = len(names) * (2 if second_order else 1) + 2
    ordered = sorted(rows, key=lambda r: int(r["simulation_id"]))
    x = np.array([[float(r[n]) for n in names] for r in ordered])
    members = [r["sobol_member"] for r in ordered[:size]]
    assert members == ["A", "B", *(f"C_{n}" for n in names),
                       *(f"D_{n}" for n in names if second_order)]
    y = model(x)
    return y.reshape(len(rows) // size, size, *y.shape[1:])


def batch_martinez(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Martinez on the full sample: y (n, p + 2, cells) -> (p, cells) first and total."""
    def corr(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        u, v = u - u.mean(0), v - v.mean(0)
        return (u * v).sum(0) / np.sqrt((u * u).sum(0) * (v * v).sum(0))
    p = y.shape[1] - 2
    first = np.array([corr(y[:, 1], y[:, 2 + k]) for k in range(p)])
    total = np.array([1 - corr(y[:, 0], y[:, 2 + k]) for k in range(p)])
    return first, total


def ishigami(x: np.ndarray) -> np.ndarray:
    return (np.sin(x[:, 0]) + 7 * np.sin(x[:, 1]) ** 2
            + 0.1 * x[:, 2] ** 4 * np.sin(x[:, 0]))[:, None]


def test_ishigami_2000_groups_with_the_c_client(launcher: Any, tmp_path: Path) -> None:
    """2000 groups of 8 C simulations (second order: A, B, C_k, D_k) through the launcher:
    every first-order, total and second-order index within 0.05 of the analytic value, most
    inside their own 95% interval, all equal to batch computations on the same samples."""
    run_checked([system_tool("make"), "-s", "-C", str(ISHIGAMI), f"OUT={tmp_path}",
                 f"VENV={PREFIX}", f"CC={system_tool('cc')}"])
    config = example_config(
        ISHIGAMI / "config_c.json", output_dir=str(tmp_path / "out"),
        client_config={"executable_command": str(tmp_path / "ishigami")},
        sa_config={"second_order": True})
    assert config["study_options"]["parameter_sweep_size"] >= 2000
    run = launcher(config, timeout=600)
    assert run.returncode == 0, run.output
    ds = xr.open_dataset(run.output_dir / "statistics" / "y.nc")
    first = ds["sobol_first"].values[:, 0, 0]
    total = ds["sobol_total"].values[:, 0, 0]
    assert list(ds["parameter"].values) == ["x1", "x2", "x3"]
    assert int(ds["sobol_groups"].values.min()) == 2000
    assert np.abs(first - ISHIGAMI_FIRST).max() < 0.05, first
    assert np.abs(total - ISHIGAMI_TOTAL).max() < 0.05, total
    inside = [
        float(ds[f"{kind}_low"].values[k, 0, 0]) <= exact[k] <= float(
            ds[f"{kind}_high"].values[k, 0, 0])
        for kind, exact in (("sobol_first", ISHIGAMI_FIRST), ("sobol_total", ISHIGAMI_TOTAL))
        for k in range(3)
    ]
    assert sum(inside) >= 5, inside
    y = groups_from_csv(run, ishigami, ["x1", "x2", "x3"], second_order=True)  # (g, 8, 1)
    second = ds["sobol_second"].values[:, :, 0, 0]
    assert ds["sobol_second"].dims == ("parameter", "parameter_2", "time", "cell")
    exact = np.zeros((3, 3))
    exact[0, 2] = exact[2, 0] = ISHIGAMI_TOTAL[0] - ISHIGAMI_FIRST[0]  # S13 = 0.2437
    corr = np.corrcoef(y[:, :, 0].T)  # A, B, C_1..C_3, D_1..D_3
    for k, l in ((0, 1), (0, 2), (1, 2)):
        assert abs(second[k, l] - exact[k, l]) < 0.05, second
        assert second[l, k] == second[k, l]
        assert (ds["sobol_second_low"].values[k, l, 0, 0] <= exact[k, l]
                <= ds["sobol_second_high"].values[k, l, 0, 0])
        batch = 0.5 * (corr[2 + k, 5 + l] - corr[1, 2 + k] - corr[0, 5 + l]
                       + corr[2 + l, 5 + k] - corr[1, 2 + l] - corr[0, 5 + k])
        assert second[k, l] == pytest.approx(batch, abs=1e-10)
    batch_first, batch_total = batch_martinez(y[:, :5])
    np.testing.assert_allclose(first, batch_first[:, 0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(total, batch_total[:, 0], rtol=1e-10, atol=1e-12)
    # The other statistics come from the A and B members only: 2 x 2000 independent draws.
    np.testing.assert_allclose(ds["mean"].values[0, 0], y[:, :2].mean(), rtol=1e-10)
    assert int(ds["count"].values[0, 0]) == 4000


FIELD_MODEL = '''
import sys
import numpy as np
import melissa.client as melissa

x = np.array([float(a) for a in sys.argv[1:]])
cells = np.arange(24)
melissa.init("u", 24)
for t in range(2):
    w = np.stack([1.0 + 0 * cells, 3.0 * cells / 23, 2.0 * (1 - cells / 23)])
    if t == 1:
        w = w[[2, 0, 1]]
    melissa.send("u", w.T @ x)
melissa.finalize()
'''


def field_weights() -> np.ndarray:
    """w[t, k, cell] of FIELD_MODEL."""
    cells = np.arange(24)
    w0 = np.stack([1.0 + 0 * cells, 3.0 * cells / 23, 2.0 * (1 - cells / 23)])
    return np.stack([w0, w0[[2, 0, 1]]])


def test_field_model_known_indices_per_cell_on_two_server_ranks(launcher: Any,
                                                                 tmp_path: Path) -> None:
    """u_i = sum_k w_k(i) x_k with independent x_k ~ U(0, 1): S_k(i) = ST_k(i) =
    w_k(i)^2 / sum_j w_j(i)^2, different in every cell and at each time step, and S_kl = 0
    (second order, Zarr output written by both ranks)."""
    (tmp_path / "model.py").write_text(FIELD_MODEL)
    names = ["a", "b", "c"]
    config = {
        "output_dir": "out",
        "study_options": {"field_names": ["u"], "nb_time_steps": 2, "parameter_sweep_size": 48,
                          "seed": 3},
        "parameters": [{"name": n, "distribution": "uniform", "low": 0.0, "high": 1.0}
                       for n in names],
        "sampling": {"method": "sobol"},
        "sa_config": {"sobol_indices": True, "second_order": True, "quantiles": [0.25, 0.75],
                      "plot_time_steps": [1], "output_format": "zarr"},
        "client_config": {"executable_command": "python3 model.py"},
        "server_config": {"ranks": 2},
        "launcher_config": {"job_limit": 10, "poll_interval": 0.05},
    }
    run = launcher(config)
    assert run.returncode == 0, run.output
    ds = xr.open_zarr(run.output_dir / "statistics" / "u.zarr").load()
    w = field_weights()
    exact = w**2 / (w**2).sum(axis=1, keepdims=True)  # (t, k, cell)
    first = ds["sobol_first"].values.transpose(1, 0, 2)  # (t, k, cell)
    total = ds["sobol_total"].values.transpose(1, 0, 2)
    finite = np.isfinite(exact)
    assert np.isfinite(first[finite]).all()
    # Within the estimator's own uncertainty (48 groups) in nearly every (time, parameter, cell).
    low = ds["sobol_first_low"].values.transpose(1, 0, 2)
    high = ds["sobol_first_high"].values.transpose(1, 0, 2)
    assert ((low - 0.05 <= exact) & (exact <= high + 0.05)).mean() > 0.9
    assert np.abs(first - exact).mean() < 0.1 and np.abs(total - exact).mean() < 0.1
    # Equal, cell by cell, to batch Martinez on the study's own samples.
    y = groups_from_csv(run, lambda x: np.einsum("tkc,nk->ntc", w, x), names,
                        second_order=True)  # (g, 8 members, t, c)
    second = ds["sobol_second"].values  # (k, l, t, c)
    d = y - y.mean(0)

    def r(i: int, j: int) -> np.ndarray:
        return (d[:, i] * d[:, j]).sum(0) / np.sqrt((d[:, i] ** 2).sum(0) * (d[:, j] ** 2).sum(0))

    for k, l in ((0, 1), (0, 2), (1, 2)):
        assert np.abs(second[k, l]).mean() < 0.1
        assert ((ds["sobol_second_low"].values[k, l] - 0.05 <= 0)
                & (0 <= ds["sobol_second_high"].values[k, l] + 0.05)).mean() > 0.9
        batch = 0.5 * (r(2 + k, 5 + l) - r(1, 2 + k) - r(0, 5 + l)
                       + r(2 + l, 5 + k) - r(1, 2 + l) - r(0, 5 + k))
        np.testing.assert_allclose(second[k, l], batch, rtol=1e-9, atol=1e-10)
    y = y[:, :5]  # A, B, C_k: the first-order members
    for t in range(2):
        batch_first, batch_total = batch_martinez(y[:, :, t])
        np.testing.assert_allclose(first[t], batch_first, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(total[t], batch_total, rtol=1e-10, atol=1e-12)
    ab = y[:, :2].reshape(-1, 2, 24)  # the A and B members: the other statistics' samples
    np.testing.assert_allclose(ds["mean"].values, ab.mean(0), rtol=1e-10)
    q = ds["quantile"].values  # (level, t, cell)
    assert list(ds["quantile_level"].values) == [0.25, 0.75]
    for j, level in enumerate((0.25, 0.75)):
        rank = (ab <= q[j][None]).mean(0)
        assert np.abs(rank - level).mean() < 0.1
    # Aggregated indices over cells and steps (2 ranks' summaries combined) equal batch ones.
    d = y.reshape(48, 5, -1) - y.reshape(48, 5, -1).mean(0)
    for kind, x in (("first", 1), ("total", 0)):
        batch = [(d[:, x] * d[:, 2 + k]).sum() / np.sqrt(
            (d[:, x] ** 2).sum() * (d[:, 2 + k] ** 2).sum()) for k in range(3)]
        got = ds[f"sobol_{kind}_aggregated"].values
        expected = np.array(batch) if kind == "first" else 1 - np.array(batch)
        np.testing.assert_allclose(got, expected, rtol=1e-10)
        exact_agg = (w**2).sum(axis=(0, 2)) / (w**2).sum()
        assert (ds[f"sobol_{kind}_aggregated_low"].values - 0.02 <= exact_agg).all()
        assert (exact_agg <= ds[f"sobol_{kind}_aggregated_high"].values + 0.02).all()
    rows = (run.output_dir / "statistics" / "sobol_convergence.csv").read_text().splitlines()
    assert rows[0].startswith("elapsed_s,field,groups,widest_interval,join_mb,first_a,")
    last = dict(zip(rows[0].split(","), rows[-1].split(",")))
    assert int(last["groups"]) == 48
    high, low = ds["sobol_first_aggregated_high"].values, ds["sobol_first_aggregated_low"].values
    assert float(last["widest_interval"]) == pytest.approx(
        max((high - low).max(), (ds["sobol_total_aggregated_high"].values
                                 - ds["sobol_total_aggregated_low"].values).max()), rel=1e-5)
    assert (run.output_dir / "plots" / "sobol_convergence.png").exists()


def test_heat_sobol_example_makes_index_maps(launcher: Any, tmp_path: Path) -> None:
    """examples/heat_equation/config_sobol.json, shrunk: index maps and time series."""
    config = example_config(
        HEAT / "config_sobol.json", output_dir=str(tmp_path / "out"),
        study_options={"parameter_sweep_size": 3, "nb_time_steps": 4},
        client_config={"executable_command": f"python3 {HEAT / 'heat.py'} --nx 12 --ny 10 "
                                             "--steps 4"},
        sa_config={"sobol_indices": True, "quantiles": [0.5], "plot_time_steps": [0, 3],
                   "plot_cells": [65]})
    run = launcher(config)
    assert run.returncode == 0, run.output
    plots = {p.name for p in (run.output_dir / "plots").glob("*.png")}
    assert {"temperature_sobol_first.png", "temperature_sobol_total.png",
            "temperature_sobol_time_series.png", "temperature_quantiles.png"} <= plots
    ds = xr.open_dataset(run.output_dir / "statistics" / "temperature.nc")
    assert ds["sobol_first"].dims == ("parameter", "time", "y", "x")
    assert ds["sobol_first"].sizes["parameter"] == 6 and int(ds["sobol_groups"].max()) == 3
    assert math.isnan(float(ds["sobol_first_low"].values.max()))  # 3 groups: no interval yet
    assert re.search(r"Sobol' indices, temperature +│ 3 groups, widest 95% interval nan;",
                     run.output), run.output
