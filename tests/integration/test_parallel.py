"""N x M: parallel clients (N MPI ranks, mpi4py) and a parallel server (M ranks) give the same
statistics as NumPy offline, whatever N and M, with sizes that do not divide evenly."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.stats
import xarray as xr

SIZE, STEPS, SIMS = 17, 3, 4

SIMULATION = f"""
import sys
import numpy as np
from mpi4py import MPI
import melissa.client as melissa

comm = MPI.COMM_WORLD
rank, ranks = comm.Get_rank(), comm.Get_size()
a, b = (float(v) for v in sys.argv[1:])
lo, hi = rank * {SIZE} // ranks, (rank + 1) * {SIZE} // ranks
cells = np.arange(lo, hi, dtype=np.float64) + 1
melissa.init("u", hi - lo, comm=comm)
for step in range({STEPS}):
    melissa.send("u", np.sin(a * cells + step) + b * cells ** 2)
melissa.finalize()
"""


def field(a: float, b: float, step: int) -> np.ndarray:
    cells = np.arange(SIZE, dtype=np.float64) + 1
    return np.sin(a * cells + step) + b * cells**2


@pytest.mark.parametrize("server_ranks", [1, 2, 3])
@pytest.mark.parametrize("client_ranks", [1, 2, 3])
def test_n_by_m(launcher: Any, tmp_path: Path, server_ranks: int, client_ranks: int) -> None:
    (tmp_path / "sim.py").write_text(SIMULATION)
    run = launcher({
        "output_dir": "out",
        "study_options": {"field_names": ["u"], "nb_time_steps": STEPS,
                          "parameter_sweep_size": SIMS, "seed": 5},
        "parameters": [{"name": "a", "distribution": "uniform", "low": 0, "high": 2},
                       {"name": "b", "distribution": "normal", "mean": 0, "std": 0.1}],
        "sa_config": {"mean": True, "variance": True, "skewness": True, "kurtosis": True,
                      "min": True, "max": True, "threshold_exceedance": True,
                      "threshold_values": [0.0], "plot_time_steps": []},
        "client_config": {"executable_command": f"{sys.executable} sim.py",
                          "ranks": client_ranks},
        "server_config": {"ranks": server_ranks},
        "launcher_config": {"job_limit": 2},
    })
    assert run.returncode == 0, run.output
    rows = run.parameters()
    assert {r["status"] for r in rows} == {"completed"}, rows
    x = np.array([[field(float(r["a"]), float(r["b"]), t) for t in range(STEPS)] for r in rows])
    ids = np.array([int(r["simulation_id"]) for r in rows])
    ds = xr.open_dataset(run.output_dir / "statistics" / "u.nc")
    assert ds.attrs["server_ranks"] == server_ranks
    assert (ds["count"].values == SIMS).all()
    for name, expected in [
        ("mean", x.mean(axis=0)),
        ("variance", x.var(axis=0, ddof=1)),
        ("skewness", scipy.stats.skew(x, axis=0, bias=True)),
        ("kurtosis", scipy.stats.kurtosis(x, axis=0, bias=True)),
        ("minimum", x.min(axis=0)),
        ("maximum", x.max(axis=0)),
    ]:
        np.testing.assert_allclose(ds[name].values, expected, rtol=1e-10, atol=1e-12, err_msg=name)
    assert (ds["maximum_simulation"].values == ids[x.argmax(axis=0)]).all()
    assert (ds["threshold_exceedance"].values[0] == (x > 0).sum(axis=0)).all()
    ds.close()
