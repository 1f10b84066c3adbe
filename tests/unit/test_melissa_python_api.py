"""Melissa's Python module: Melissa's signatures, on the light client path."""

from __future__ import annotations

import inspect
import subprocess
import sys

import melissa_api
import melissa_api_no_mpi


def test_melissa_signatures() -> None:
    def params(f: object) -> list[str]:
        return list(inspect.signature(f).parameters)  # type: ignore[arg-type]

    assert params(melissa_api.melissa_init) == ["field_name", "local_vect_size", "comm",
                                                "coupling"]
    assert params(melissa_api.melissa_send) == ["field_name", "send_vect"]
    assert params(melissa_api.melissa_finalize) == []
    assert params(melissa_api_no_mpi.melissa_init) == ["field_name", "vect_size"]


def test_light_import() -> None:
    heavy = ["pydantic", "numba", "xarray", "scipy", "matplotlib", "torch", "netCDF4", "mpi4py"]
    code = ("import sys, melissa_api, melissa_api_no_mpi; "
            f"print([m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]", out


def test_error_is_one_line_and_exit_1() -> None:
    code = "import melissa_api; melissa_api.melissa_init('heat1', 4, None)"
    env = {"PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("melissa: error: MELISSA_SERVER, MELISSA_SIMULATION_ID, "
                                  "MELISSA_STUDY_TOKEN not set"), proc.stderr
    assert len(proc.stderr.splitlines()) == 1
