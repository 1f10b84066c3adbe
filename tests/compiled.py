"""Helpers for the tests of the compiled clients (libmelissa, module melissa, C/Fortran heat).

The tools come from the system (.ci/run installs them: gcc, gfortran, libzmq3-dev, pkg-config,
OpenMPI) and libmelissa from `make install` (into the venv running the tests). Where one is
missing the test is skipped, saying what to install, except with MELISSA_REQUIRE_CLIB=1 (CI),
where it fails: a CI run must not pass by skipping them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[1]
C_SOURCES = REPO / "src" / "melissa" / "client" / "c"
TEST_SOURCES = REPO / "tests" / "c"
EXAMPLES = REPO / "examples" / "heat_equation"
PREFIX = Path(sys.prefix)  # the venv `make install` put libmelissa in
PKG_CONFIG_PATH = PREFIX / "lib" / "pkgconfig"

# OpenMPI refuses to run as root without these; harmless otherwise.
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1"}


def missing(what: str) -> NoReturn:
    if os.environ.get("MELISSA_REQUIRE_CLIB") == "1":
        pytest.fail(f"{what} (MELISSA_REQUIRE_CLIB=1)")
    pytest.skip(what)


def system_tool(name: str) -> str:
    """A tool from the system PATH, not the venv's (whose mpicc/mpiexec are the mpich wheel's)."""
    venv_bin = str(PREFIX / "bin")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and os.path.realpath(p) != os.path.realpath(venv_bin))
    found = shutil.which(name, path=path or "/usr/bin:/bin")
    if found is None:
        missing(f"{name} not found: install the system packages of .ci/run")
    return found


def pkg_config(*args: str, package: str = "melissa") -> list[str]:
    proc = subprocess.run([system_tool("pkg-config"), *args, package],
                          env={**os.environ, "PKG_CONFIG_PATH": str(PKG_CONFIG_PATH)},
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        missing(f"libmelissa is not installed in {PREFIX}: run `make install` "
                f"({proc.stderr.strip()})")
    return proc.stdout.split()


def run_checked(cmd: list[str], **kwargs: object) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout}\n{proc.stderr}"
    return str(proc.stdout)


def openmpi() -> tuple[str, str, str]:
    """(mpicc, mpif90, mpirun) of the system MPI that libmelissa_mpi was built against."""
    mpif90 = system_tool("mpif90")
    bindir = Path(mpif90).parent
    tools = [bindir / "mpicc", Path(mpif90), bindir / "mpirun"]
    for tool in tools:
        if not tool.exists():
            missing(f"{tool} not found next to {mpif90}")
    return str(tools[0]), str(tools[1]), str(tools[2])
