"""Simulations written for Melissa (its headers, its Fortran include file, its Python module, its
config keys) run unchanged: built with pkg-config against the installed library, started by the
launcher, their statistics equal NumPy's offline; an error in one of Melissa's void calls ends
the simulation with a non-zero status and the reason on stderr.

The simulations are in tests/melissa_style/ (see its README.md); SOLVER below is their NumPy twin.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytest
import xarray as xr

from tests.compiled import MPI_ENV, REPO, openmpi, pkg_config, run_checked, system_tool
from tests.integration.conftest import LauncherRun
from tests.live_server import LiveServer, live_server

SOURCES = REPO / "tests" / "melissa_style"
NX, NY, STEPS, ALPHA = 20, 16, 5, 0.1
SIMS = 3
NAMES = ["initial", "left", "right", "top", "bottom"]


def solver(params: list[float]) -> np.ndarray:
    """[step, cell] of the heat solvers in tests/melissa_style, in NumPy."""
    u = np.full((NY, NX), params[0])
    out = []
    for _ in range(STEPS):
        padded = np.pad(u, 1)
        padded[:, 0], padded[:, -1], padded[0, :], padded[-1, :] = params[1:5]
        u = u + ALPHA * (padded[1:-1, :-2] + padded[1:-1, 2:] + padded[:-2, 1:-1]
                         + padded[2:, 1:-1] - 4.0 * u)
        out.append(u.reshape(-1))
    return np.array(out)


@dataclass(frozen=True)
class Built:
    c_no_mpi: Path
    c_mpi: Path
    c_mpi_2021: Path  # #include <melissa/api.h>, melissa_send_with_metadata
    c_bad_metadata: Path  # metadata that is not a JSON object
    fortran: dict[str, Path]  # MPIF_H, USE_MPI, USE_MPI_F08, NO_MPI, USE_MPI_2021
    mpirun: str


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Melissa-style sources compiled as docs/migrating-from-melissa.md says, unchanged."""
    out = tmp_path_factory.mktemp("melissa_style")
    mpicc, mpif90, mpirun = openmpi()
    api = [*pkg_config("--cflags", package="melissa-api"),
           *pkg_config("--libs", package="melissa-api")]
    api_mpi = [*pkg_config("--cflags", package="melissa-api-mpi"),
               *pkg_config("--libs", package="melissa-api-mpi")]
    run_checked([system_tool("cc"), "-std=c99", "-Wall", "-Werror",
                 str(SOURCES / "heat_no_mpi.c"), "-o", str(out / "heat_no_mpi"), *api])
    for name, flags in (("heat", []), ("heat_2021", ["-DINCLUDE_2021"]),
                        ("heat_bad_metadata", ["-DINCLUDE_2021", '-DMETADATA_FORMAT="[%d]"'])):
        run_checked([mpicc, "-std=c99", "-Wall", "-Werror", *flags, str(SOURCES / "heat.c"),
                     "-o", str(out / name), *api_mpi])
    fortran = {}
    for variant in ("MPIF_H", "USE_MPI", "USE_MPI_F08", "NO_MPI", "USE_MPI_2021"):
        fortran[variant] = out / f"heat_f_{variant.lower()}"
        compiler = system_tool("gfortran") if variant == "NO_MPI" else mpif90
        flags = ["-DUSE_MPI", "-DINCLUDE_2021"] if variant.endswith("2021") else [f"-D{variant}"]
        run_checked([compiler, *flags, str(SOURCES / "heat.F90"), "-o", str(fortran[variant]),
                     *(api if variant == "NO_MPI" else api_mpi)])
    return Built(out / "heat_no_mpi", out / "heat", out / "heat_2021",
                 out / "heat_bad_metadata", fortran, mpirun)


def test_cmake_targets(tmp_path: Path, built: Built) -> None:
    """find_package(melissa): melissa::api and melissa::api_mpi build the same sources."""
    mpicc, mpif90, _ = openmpi()
    (tmp_path / "CMakeLists.txt").write_text(f"""
cmake_minimum_required(VERSION 3.18)
project(heat LANGUAGES C Fortran)
find_package(melissa 0.1 REQUIRED)
find_package(MPI REQUIRED COMPONENTS C Fortran)
add_executable(heat_no_mpi {SOURCES}/heat_no_mpi.c)
target_link_libraries(heat_no_mpi PRIVATE melissa::api)
add_executable(heat {SOURCES}/heat.c)
target_link_libraries(heat PRIVATE melissa::api_mpi MPI::MPI_C)
add_executable(heat_f {SOURCES}/heat.F90)
target_compile_definitions(heat_f PRIVATE MPIF_H)
target_link_libraries(heat_f PRIVATE melissa::api_mpi MPI::MPI_Fortran)
""")
    cmake, build = system_tool("cmake"), tmp_path / "build"
    run_checked([cmake, "-S", str(tmp_path), "-B", str(build),
                 f"-Dmelissa_DIR={sys.prefix}/lib/cmake/melissa", f"-DMPI_C_COMPILER={mpicc}",
                 f"-DMPI_Fortran_COMPILER={mpif90}"])
    run_checked([cmake, "--build", str(build)])
    # Outside the launcher each ends at melissa_init, saying why: they are linked and run.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MELISSA_")}
    for name in ("heat_no_mpi", "heat", "heat_f"):
        proc = run_failing([str(build / name)], {**clean, **MPI_ENV})
        assert "run this simulation through melissa-launcher" in proc.stderr, proc


def melissa_config(command: str, **client: Any) -> dict[str, Any]:
    """A config in Melissa's own words where they mean the same as ours."""
    return {
        "output_dir": "out",
        "study_options": {"field_names": ["heat1"], "parameter_sweep_size": SIMS,
                          "num_samples": STEPS, "nb_parameters": len(NAMES), "seed": 5,
                          "simulation_timeout": 120, "crashes_before_redraw": 1,
                          "verbosity": 3},
        "parameters": [{"name": n, "distribution": "uniform", "low": 100, "high": 500}
                       for n in NAMES],
        "sa_config": {"mean": True, "variance": True, "min": True, "max": True,
                      "checkpoint_interval": 300, "plot_time_steps": []},
        "launcher_config": {"job_limit": 2, "timer_delay": 0.1, "fault_tolerance": False},
        "client_config": {"executable_command": command, **client},
    }


def check_study(run: LauncherRun, dims: tuple[str, ...] = ("time", "cell")) -> xr.Dataset:
    assert run.returncode == 0, run.output
    rows = run.parameters()
    assert len(rows) == SIMS and {r["status"] for r in rows} == {"completed"}, rows
    x = np.array([solver([float(r[n]) for n in NAMES]) for r in rows])
    ds = xr.open_dataset(run.output_dir / "statistics" / "heat1.nc")
    assert ds["mean"].dims == dims, ds["mean"].dims
    shape = ds["mean"].shape
    for name, expected in [("mean", x.mean(axis=0)), ("variance", x.var(axis=0, ddof=1)),
                           ("minimum", x.min(axis=0)), ("maximum", x.max(axis=0))]:
        np.testing.assert_allclose(ds[name].values, expected.reshape(shape), rtol=1e-12,
                                   atol=1e-9, err_msg=name)
    return ds


def inked(run: LauncherRun, plot: str) -> float:
    """The share of a plot's pixels that are not (nearly) white."""
    image = matplotlib.image.imread(run.output_dir / "plots" / plot)[..., :3]
    return float((image.min(axis=-1) < 0.9).mean())


def test_c_no_mpi_with_field_shapes_gives_maps(launcher: Any, built: Built) -> None:
    """heat_no_mpi.c (melissa_api_no_mpi.h) with study_options.field_shapes: results on a
    (y, x) grid, and the plots are maps."""
    cfg = melissa_config(str(built.c_no_mpi))
    cfg["study_options"]["field_shapes"] = {"heat1": [NY, NX]}
    cfg["sa_config"]["plot_time_steps"] = [STEPS - 1]
    run = launcher(cfg)
    check_study(run, ("time", "y", "x")).close()
    assert inked(run, "heat1_min_max.png") > 0.2  # maps: the panels are filled with colour


def test_c_mpi_two_ranks(launcher: Any, built: Built) -> None:
    """heat.c (melissa_api.h, MPI_APPNUM split) on 2 ranks through OpenMPI's mpirun; no
    field_shapes: the results stay 1-D, as Melissa's, and the plots are lines."""
    cfg = melissa_config(str(built.c_mpi), ranks=2)
    cfg["launcher_config"]["scheduler"] = "openmpi"
    cfg["sa_config"]["plot_time_steps"] = [STEPS - 1]
    run = launcher(cfg)
    check_study(run).close()
    assert inked(run, "heat1_min_max.png") < 0.1  # lines on a white background


def test_fortran_mpif_h_two_ranks(launcher: Any, built: Built) -> None:
    """heat.F90 with include 'mpif.h', character(len=5) :: name = "heat1" (no NUL)."""
    cfg = melissa_config(str(built.fortran["MPIF_H"]), ranks=2)
    cfg["launcher_config"]["scheduler"] = "openmpi"
    check_study(launcher(cfg)).close()


def test_fortran_use_mpi_one_rank(launcher: Any, built: Built) -> None:
    check_study(launcher(melissa_config(str(built.fortran["USE_MPI"])))).close()


def test_python_melissa_api(launcher: Any) -> None:
    """Melissa's Python module: melissa_api.melissa_init(field_name, local_vect_size, comm)."""
    cfg = melissa_config(f"python3 {SOURCES / 'heat.py'}")
    check_study(launcher(cfg)).close()


# ---- every variant against one server --------------------------------------------------------

PARAMS = ["337.5", "123.25", "456.0", "1e-05", "250.75"]


def client_env(srv: LiveServer, sim: int, **extra: str) -> dict[str, str]:
    return srv.env(sim, 20, **{**MPI_ENV, "MELISSA_FIELD_NAMES": "heat1", **extra})


def test_every_variant_sends_the_same_field(tmp_path: Path, built: Built) -> None:
    """The C and Fortran programs on 1 to 3 ranks, with each MPI binding and both names of the
    header and include file (melissa_api.h and melissa/api.h since 2021), and two simulations in
    one MPMD mpirun (one communicator per MPI_APPNUM): all send exactly the NumPy field."""
    f = built.fortran
    mpirun = [built.mpirun, "--oversubscribe", "-n"]
    runs = [[str(built.c_no_mpi)], [str(f["NO_MPI"])], [*mpirun, "1", str(built.c_mpi)],
            [*mpirun, "3", str(built.c_mpi_2021)], [*mpirun, "2", str(f["USE_MPI_F08"])],
            [*mpirun, "3", str(f["USE_MPI_2021"])]]
    with live_server(tmp_path / "out", "heat1", STEPS, {"min": True, "max": True}) as srv:
        for sim, command in enumerate(runs):
            run_checked([*command, *PARAMS], env=client_env(srv, sim), timeout=120)
        sim = len(runs)
        # MPMD: two simulations in one mpirun, each with its own id and communicator.
        env = client_env(srv, 0)
        mpmd = [built.mpirun, "--oversubscribe",
                "-n", "2", "env", f"MELISSA_SIMULATION_ID={sim}", str(built.c_mpi), *PARAMS, ":",
                "-n", "1", "env", f"MELISSA_SIMULATION_ID={sim + 1}", str(f["MPIF_H"]), *PARAMS]
        run_checked(mpmd, env=env, timeout=120)
        sim += 2
        srv.finish()
        ds = srv.results("heat1")
    expected = solver([float(p) for p in PARAMS])
    assert (ds["count"].values == sim).all()
    np.testing.assert_array_equal(ds["minimum"].values, ds["maximum"].values)
    np.testing.assert_allclose(ds["maximum"].values, expected, rtol=1e-13)
    ds.close()


# ---- errors in void calls ---------------------------------------------------------------------

def run_failing(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*cmd, *PARAMS], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode != 0, proc
    return proc


def test_errors_end_the_simulation_with_the_reason(tmp_path: Path, built: Built) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MELISSA_")}
    # Outside the launcher: melissa_init_no_mpi ends the program (MELISSA_ERR_ENV = 1).
    proc = run_failing([str(built.c_no_mpi)], clean)
    assert proc.returncode == 1
    assert proc.stderr.startswith("melissa: error: MELISSA_SERVER, MELISSA_SIMULATION_ID, "
                                  "MELISSA_STUDY_TOKEN not set: run this simulation through "
                                  "melissa-launcher"), proc.stderr
    # The same in an MPI program of 2 ranks: MPI_Abort, so no rank waits for the other.
    proc = run_failing([built.mpirun, "--oversubscribe", "-n", "2", str(built.c_mpi)],
                       {**clean, **MPI_ENV})
    assert "melissa: error: MELISSA_SERVER, MELISSA_SIMULATION_ID" in proc.stderr
    with live_server(tmp_path / "out", "heat1", STEPS - 2, {"mean": True}) as srv:
        # The server wants 3 steps, the simulation sends 5: melissa_send_no_mpi ends it
        # (MELISSA_ERR_STEPS = 5) at the 4th.
        proc = run_failing([str(built.c_no_mpi)], client_env(srv, 0))
        assert proc.returncode == 5, proc
        assert ('melissa: error: melissa_send("heat1"): all 3 time steps '
                "(study_options.nb_time_steps) were already sent") in proc.stderr, proc.stderr
        # A Fortran name (no NUL) that is none of the study's fields (MELISSA_ERR_ARG = 2).
        proc = run_failing([str(built.fortran["NO_MPI"])],
                           client_env(srv, 1, MELISSA_FIELD_NAMES="temperature,pressure"))
        assert proc.returncode == 2, proc
        assert ('melissa: error: melissa_init (Fortran): the field name starting "h" is none '
                "of the study's fields (study_options.field_names: temperature,pressure)"
                ) in proc.stderr, proc.stderr
        # melissa_send_with_metadata with metadata that is not a JSON object.
        proc = run_failing([built.mpirun, "-n", "1", str(built.c_bad_metadata)],
                           client_env(srv, 3))
        assert ('melissa: error: melissa_send_with_metadata("heat1"): the metadata must be a '
                "JSON object, got [1]") in proc.stderr, proc.stderr
        # Melissa's Python module: one line, no traceback.
        proc = run_failing([sys.executable, str(SOURCES / "heat.py")], client_env(srv, 2))
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "melissa: error: send('heat1'): all 3 time steps" in proc.stderr, proc.stderr
