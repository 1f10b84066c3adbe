"""The compiled clients (libmelissa in C, module melissa in Fortran) against a real server and the
real launcher: the C and Fortran heat equations give the Python heat equation's results, MPI
clients of any number of ranks send the same fields, N x M pieces go where partition.py says,
and every misuse gives its documented error code and message without hanging.

Programs are built from the installed library (pkg-config, as a user would) and the examples'
Makefiles; see tests/compiled.py for what is needed and how a missing tool is reported.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zmq

from melissa.protocol import (
    Dtype,
    Header,
    Kind,
    cell_ranges,
    decode_header,
    decode_json,
    encode_json,
    split,
)
from tests.compiled import (
    EXAMPLES,
    MPI_ENV,
    PREFIX,
    TEST_SOURCES,
    openmpi,
    pkg_config,
    run_checked,
    system_tool,
)
from tests.integration.test_heat_study import heat_config, offline_ensemble
from tests.live_server import LiveServer, live_server

# melissa.h error codes
OK, ENV, ARG, ORDER, SIZE, STEPS, TIMEOUT, REFUSED, PROTOCOL, SYSTEM = range(10)


@dataclass(frozen=True)
class Programs:
    client_ops: Path  # tests/c/client_ops.c
    fortran_ops: Path  # tests/c/fortran_ops.f90 (OpenMPI)
    heat_serial: Path  # examples/heat_equation/c, no MPI
    heat_openmpi: Path  # examples/heat_equation/c with the system OpenMPI
    heat_fortran: Path  # examples/heat_equation/fortran (OpenMPI, mpi_f08)
    mpirun: str  # OpenMPI's


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> Programs:
    out = tmp_path_factory.mktemp("programs")
    cflags, libs = pkg_config("--cflags"), pkg_config("--libs")
    mpicc, mpif90, mpirun = openmpi()
    make, cc = system_tool("make"), system_tool("cc")
    run_checked([cc, "-std=c99", "-Wall", "-Wextra", "-Werror", *cflags,
                 str(TEST_SOURCES / "client_ops.c"), "-o", str(out / "client_ops"), *libs])
    run_checked([mpif90, *pkg_config("--cflags", package="melissa-mpi"),
                 str(TEST_SOURCES / "fortran_ops.f90"), "-o", str(out / "fortran_ops"),
                 *pkg_config("--libs", package="melissa-mpi")])
    # The examples' own Makefiles, as the docs tell users to build them.
    venv = f"VENV={PREFIX}"
    run_checked([make, "-s", "-C", str(EXAMPLES / "c"), f"OUT={out}", venv, f"CC={cc}",
                 f"MPICC={mpicc}", "all"])
    (out / "heat").rename(out / "heat_openmpi")
    run_checked([make, "-s", "-C", str(EXAMPLES / "fortran"), f"OUT={out}", venv,
                 f"MPIFC={mpif90}"])
    (out / "heat").rename(out / "heat_fortran")
    return Programs(out / "client_ops", out / "fortran_ops", out / "heat_serial",
                    out / "heat_openmpi", out / "heat_fortran", mpirun)


def test_cmake_package_config(tmp_path: Path, programs: Programs) -> None:
    """find_package(melissa) gives targets that build the C (serial and MPI) and Fortran heat
    equations, as docs/c-fortran.md shows."""
    cmake = system_tool("cmake")
    mpicc, mpif90, _ = openmpi()
    (tmp_path / "CMakeLists.txt").write_text(f"""
cmake_minimum_required(VERSION 3.18)
project(heat LANGUAGES C Fortran)
find_package(melissa 0.1 REQUIRED)
find_package(MPI REQUIRED COMPONENTS C Fortran)
add_executable(heat_serial {EXAMPLES}/c/heat.c)
target_link_libraries(heat_serial PRIVATE melissa::melissa m)
add_executable(heat_mpi {EXAMPLES}/c/heat.c)
target_compile_definitions(heat_mpi PRIVATE HEAT_MPI)
target_link_libraries(heat_mpi PRIVATE melissa::melissa MPI::MPI_C m)
add_executable(heat_fortran {EXAMPLES}/fortran/heat.f90)
target_link_libraries(heat_fortran PRIVATE melissa::melissa_mpi MPI::MPI_Fortran)
""")
    build = tmp_path / "build"
    run_checked([cmake, "-S", str(tmp_path), "-B", str(build),
                 f"-Dmelissa_DIR={PREFIX}/lib/cmake/melissa", f"-DMPI_C_COMPILER={mpicc}",
                 f"-DMPI_Fortran_COMPILER={mpif90}"])
    run_checked([cmake, "--build", str(build)])
    for name in ("heat_serial", "heat_mpi", "heat_fortran"):
        out = run_checked([str(build / name), "--help"], env={**os.environ, **MPI_ENV})
        assert out.startswith("usage: heat INITIAL"), out


# ---- a real server, started as the launcher starts it ----------------------------------------

@contextmanager
def server(root: Path, field: str, steps: int) -> Iterator[LiveServer]:
    with live_server(root, field, steps,
                     {"mean": True, "variance": True, "min": True, "max": True}) as srv:
        yield srv


def client_env(srv: LiveServer, sim: int, timeout: float = 20, **extra: str) -> dict[str, str]:
    return srv.env(sim, timeout, **MPI_ENV, **extra)


def run_ops(program: Path, ops: list[str], env: dict[str, str],
            timeout: float = 60) -> tuple[list[tuple[str, int, float]], str]:
    """Run client_ops; returns [(op, return code, seconds)] and stderr."""
    proc = subprocess.run([str(program), *ops], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = [(w[0], int(w[1]), float(w[2])) for w in (line.split() for line in
                                                      proc.stdout.splitlines())]
    return calls, proc.stderr


def codes(calls: list[tuple[str, int, float]]) -> list[int]:
    return [rc for _, rc, _ in calls]


def values(sim: int, steps: int, cells: int, offset: int = 0) -> np.ndarray:
    """What client_ops and fortran_ops send: [step, cell]."""
    return (np.arange(cells)[None, :] + offset + 1000.0 * np.arange(steps)[:, None] + 1e6 * sim)


# ---- heat equations through the launcher ------------------------------------------------------

def check_heat_study(run: Any, nx: int, ny: int, steps: int, sims: int) -> None:
    assert run.returncode == 0, run.output
    rows = run.parameters()
    assert len(rows) == sims and {r["status"] for r in rows} == {"completed"}, rows
    _, x = offline_ensemble(run)  # heat.py's simulate() for the same parameters
    ds = xr.open_dataset(run.output_dir / "statistics" / "temperature.nc")
    assert ds["mean"].dims == ("time", "y", "x") and ds["mean"].shape == (steps, ny, nx)
    assert (ds["count"].values == sims).all()
    for name, expected in [("mean", x.mean(axis=0)), ("variance", x.var(axis=0, ddof=1)),
                           ("minimum", x.min(axis=0)), ("maximum", x.max(axis=0))]:
        np.testing.assert_allclose(ds[name].values, expected, rtol=1e-10, atol=1e-9,
                                   err_msg=name)
    # The same operations in the same order as NumPy: the fields are bitwise equal.
    np.testing.assert_array_equal(ds["minimum"].values, x.min(axis=0))
    np.testing.assert_array_equal(ds["maximum"].values, x.max(axis=0))
    ds.close()


HEAT_NX, HEAT_NY, HEAT_STEPS, SIMS = 12, 9, 6, 6


def compiled_heat_config(command: str, **client: Any) -> dict[str, Any]:
    cfg = heat_config()
    cfg["study_options"]["parameter_sweep_size"] = SIMS
    cfg["sa_config"]["plot_time_steps"] = []  # no plots: not what is tested here
    cfg["client_config"] = {"executable_command": command, **client}
    return cfg


def test_c_heat_study_equals_python(launcher: Any, programs: Programs) -> None:
    run = launcher(compiled_heat_config(
        f"{programs.heat_serial} --nx {HEAT_NX} --ny {HEAT_NY} --steps {HEAT_STEPS}"))
    check_heat_study(run, HEAT_NX, HEAT_NY, HEAT_STEPS, SIMS)


def test_fortran_heat_study_equals_python(launcher: Any, programs: Programs) -> None:
    # An OpenMPI program of one rank, started without mpiexec (singleton MPI_Init).
    run = launcher(compiled_heat_config(
        f"{programs.heat_fortran} --nx {HEAT_NX} --ny {HEAT_NY} --steps {HEAT_STEPS}"))
    check_heat_study(run, HEAT_NX, HEAT_NY, HEAT_STEPS, SIMS)


def test_mpi_c_heat_study_n_by_m(launcher: Any, tmp_path: Path) -> None:
    """client_config.ranks = 3 and server_config.ranks = 2: the launcher's mpiexec is the mpich
    wheel's, so heat is built with the wheel's mpicc (the example Makefile's default)."""
    mpicc = PREFIX / "bin" / "mpicc"
    if not mpicc.exists():
        pytest.skip("no mpich wheel in the venv (pip install -e '.[mpi]')")
    run_checked([system_tool("make"), "-s", "-C", str(EXAMPLES / "c"), f"OUT={tmp_path}",
                 f"VENV={PREFIX}", f"MPICC={mpicc}", f"{tmp_path}/heat"])
    cfg = compiled_heat_config(f"{tmp_path}/heat --nx {HEAT_NX} --ny {HEAT_NY} --steps {HEAT_STEPS}", ranks=3)
    cfg["server_config"] = {"ranks": 2}
    cfg["launcher_config"]["job_limit"] = 2
    check_heat_study(launcher(cfg), HEAT_NX, HEAT_NY, HEAT_STEPS, SIMS)


def test_fortran_mpi_heat_study_through_openmpi(launcher: Any, programs: Programs) -> None:
    """scheduler "openmpi": clients of 2 ranks start with the system's mpirun (an OpenMPI
    program cannot start under the venv's MPICH mpiexec)."""
    cfg = compiled_heat_config(
        f"{programs.heat_fortran} --nx {HEAT_NX} --ny {HEAT_NY} --steps {HEAT_STEPS}", ranks=2)
    cfg["launcher_config"] = {"scheduler": "openmpi", "job_limit": 2}
    check_heat_study(launcher(cfg), HEAT_NX, HEAT_NY, HEAT_STEPS, SIMS)


def test_mpi_clients_of_any_size_send_the_same_fields(tmp_path: Path,
                                                      programs: Programs) -> None:
    """The C heat equation on 1, 2, 3 ranks and the Fortran one on 2, 3 ranks (mpirun), with the
    same parameters, to a 1-rank server: every cell gets bitwise the same values (min = max),
    those of heat.py. Sizes do not divide evenly; 1 rank sends 70 KiB (not copied by ZeroMQ:
    through the field's buffer, or with MELISSA_ZERO_COPY=1 from heat's own array, which it
    overwrites right after), 2 and 3 ranks send pieces below 64 KiB (copied by ZeroMQ)."""
    nx, ny, steps = 101, 89, 3
    params = ["337.5", "123.25", "456.0", "1e-05", "250.75", "1.3"]
    runs = [(programs.heat_openmpi, 1, "0"), (programs.heat_openmpi, 1, "1"),
            (programs.heat_openmpi, 2, "0"), (programs.heat_openmpi, 3, "0"),
            (programs.heat_fortran, 2, "0"), (programs.heat_fortran, 3, "1")]
    with server(tmp_path / "out", "temperature", steps) as srv:
        for sim, (program, ranks, zero_copy) in enumerate(runs):
            run_checked([programs.mpirun, "--oversubscribe", "-n", str(ranks), str(program),
                         *params, "--nx", str(nx), "--ny", str(ny), "--steps", str(steps)],
                        env=client_env(srv, sim, MELISSA_ZERO_COPY=zero_copy), timeout=120)
        srv.finish()
        ds = srv.results("temperature")
    sys.path.insert(0, str(EXAMPLES))
    try:
        import heat  # examples/heat_equation/heat.py
    finally:
        sys.path.remove(str(EXAMPLES))
    expected = np.array(list(heat.simulate(*map(float, params), nx=nx, ny=ny, nb_steps=steps)))
    assert (ds["count"].values == len(runs)).all()
    np.testing.assert_array_equal(ds["minimum"].values, ds["maximum"].values)
    np.testing.assert_array_equal(ds["maximum"].values, expected)
    np.testing.assert_allclose(ds["mean"].values, expected, rtol=1e-12)
    ds.close()


# ---- API misuse -------------------------------------------------------------------------------

def test_c_api_misuse(tmp_path: Path, programs: Programs) -> None:
    cells, steps = 10, 3
    ops = programs.client_ops
    with server(tmp_path / "out", "f", steps) as srv:
        calls, err = run_ops(ops, ["send:f", "finalize", "init:f:10", "init:f:10", "send:f:3",
                                   "send:f", "finalize", "finalize", "send:f", "init:g:1"],
                             client_env(srv, 0))
        assert codes(calls) == [ORDER, ORDER, OK, ORDER, OK, STEPS, OK, ORDER, ORDER, ORDER]
        for message in ['melissa_send("f") before melissa_init("f")',
                        "melissa_finalize() before melissa_init()",
                        'field "f" initialised twice',
                        ('melissa_send("f"): all 3 time steps (study_options.nb_time_steps) '
                         "were already sent"),
                        "melissa_finalize() called twice",
                        'melissa_send("f") after melissa_finalize()',
                        'melissa_init("g") after melissa_finalize()']:
            assert f"melissa: error: {message}\n" in err, (message, err)

        calls, err = run_ops(ops, ["initnull", "initempty", "init:f:-1", "shape:f:2x3",
                                   "init:g:10", "init:f:11", "init:f:10", "sendnull:f",
                                   "send:f:2", "finalize", "sendfloat:f", "finalize"],
                             client_env(srv, 1))
        assert codes(calls) == [ARG, ARG, ARG, REFUSED, REFUSED, REFUSED, OK, ARG, OK, STEPS,
                                OK, OK]
        for message in ["the field name must be a non-empty string",
                        'melissa_init("f"): local_size must be >= 0, got -1',
                        "refused by the server: field 'f' has 6 values here but 10",
                        "refused by the server: unknown field 'g'",
                        "refused by the server: field 'f' has 11 values here but 10",
                        'melissa_send("f"): data is NULL',
                        'melissa_finalize() after 2 of the 3 time steps of field "f"']:
            assert message in err, (message, err)

        # A wrong token is not answered: a timeout that names the likely causes.
        calls, err = run_ops(ops, ["init:f:10", "send:f", "finalize"],
                             client_env(srv, 2, timeout=1, MELISSA_STUDY_TOKEN="01" * 16))
        assert codes(calls) == [TIMEOUT, ORDER, ORDER]
        assert calls[0][2] < 3, calls
        assert "no answer from the Melissa server at tcp://" in err
        assert "within 1 s (MELISSA_TIMEOUT)" in err and "MELISSA_STUDY_TOKEN" in err
        assert ("an earlier error (the server did not answer or take data within "
                "MELISSA_TIMEOUT) ended the connection") in err

        # Zero-copy sends of float32 values, checked in the results below.
        calls, _ = run_ops(ops, ["init:f:10", "sendfloat:f:3", "finalize"], client_env(srv, 3))
        assert codes(calls) == [OK, OK, OK]
        srv.finish()
        ds = srv.results("f")
    x = np.array([values(sim, steps, cells) for sim in (0, 1, 3)])
    assert (ds["count"].values == 3).all()
    np.testing.assert_array_equal(ds["minimum"].values, x.min(axis=0))
    np.testing.assert_array_equal(ds["maximum"].values, x.max(axis=0))
    np.testing.assert_allclose(ds["mean"].values, x.mean(axis=0), rtol=1e-14)
    ds.close()


def test_c_client_large_sends_arrive_intact(tmp_path: Path, programs: Programs) -> None:
    """Fields of 1.6 MB, which ZeroMQ sends without copying, and which client_ops overwrites as
    soon as melissa_send returns: what arrives is what was sent, in both send modes."""
    cells, steps = 200_000, 3
    with server(tmp_path / "out", "f", steps) as srv:
        for sim, zero_copy in enumerate(["0", "1"]):
            calls, err = run_ops(programs.client_ops, [f"init:f:{cells}", f"send:f:{steps}",
                                                       "finalize"],
                                 client_env(srv, sim, MELISSA_ZERO_COPY=zero_copy))
            assert codes(calls) == [OK, OK, OK], err
        srv.finish()
        ds = srv.results("f")
    np.testing.assert_array_equal(ds["minimum"].values, values(0, steps, cells))
    np.testing.assert_array_equal(ds["maximum"].values, values(1, steps, cells))
    ds.close()


def test_c_client_environment_errors(programs: Programs) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MELISSA_")}
    good = {**clean, "MELISSA_SERVER": "tcp://127.0.0.1:9", "MELISSA_SIMULATION_ID": "0",
            "MELISSA_STUDY_TOKEN": "00" * 16}
    cases = [
        (clean, ENV, ("MELISSA_SERVER, MELISSA_SIMULATION_ID, MELISSA_STUDY_TOKEN not set: run "
                      "this simulation through melissa-launcher")),
        ({**good, "MELISSA_STUDY_TOKEN": "zz" * 16}, ENV,
         "study token must be hexadecimal (MELISSA_STUDY_TOKEN)"),
        ({**good, "MELISSA_STUDY_TOKEN": "ab"}, ENV,
         "study token must be 16 bytes (32 hex digits), got 1"),
        ({**good, "MELISSA_SIMULATION_ID": "x"}, ENV, "MELISSA_SIMULATION_ID='x' is not an integer"),
        ({**good, "MELISSA_ATTEMPT": "-1"}, ENV, "MELISSA_ATTEMPT=-1 must not be negative"),
        ({**good, "MELISSA_TIMEOUT": "soon"}, ENV,
         "MELISSA_TIMEOUT='soon' is not a number of seconds"),
        ({**good, "MELISSA_TIMEOUT": "0"}, ENV,
         "MELISSA_TIMEOUT='0' must be a positive number of seconds"),
        ({**good, "MELISSA_SERVER": "bogus"}, SYSTEM,
         "cannot connect to the Melissa server at 'bogus': Invalid argument"),
    ]
    for env, code, message in cases:
        calls, err = run_ops(programs.client_ops, ["init:f:4"], env)
        assert codes(calls) == [code] and f"melissa: error: {message}" in err, (env, err)


def test_c_client_without_server_times_out(programs: Programs) -> None:
    ctx: zmq.Context[Any] = zmq.Context.instance()
    sock = ctx.socket(zmq.ROUTER)  # a port that accepts connections but never answers
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    env = {**os.environ, "MELISSA_SERVER": f"tcp://127.0.0.1:{port}",
           "MELISSA_SIMULATION_ID": "0", "MELISSA_STUDY_TOKEN": "00" * 16,
           "MELISSA_TIMEOUT": "1"}
    started = time.monotonic()
    calls, err = run_ops(programs.client_ops, ["init:f:4"], env)
    assert codes(calls) == [TIMEOUT] and 0.9 < calls[0][2] < 3
    assert time.monotonic() - started < 10
    assert f"no answer from the Melissa server at tcp://127.0.0.1:{port} within 1 s" in err
    sock.close(0)


@pytest.mark.parametrize("zero_copy", ["0", "1"])
def test_c_client_times_out_when_the_server_dies(tmp_path: Path, programs: Programs,
                                                 zero_copy: str) -> None:
    """After the server is killed, sends of 80 KB (sent without copy by ZeroMQ) wait at most
    MELISSA_TIMEOUT, and every later call fails at once: the simulation never hangs."""
    cells = 10_000
    with server(tmp_path / "out", "f", 3) as srv:
        proc = subprocess.Popen(
            [str(programs.client_ops), f"init:f:{cells}", "send:f", "pause", "send:f",
             "send:f", "finalize"], env=client_env(srv, 0, timeout=1.5, MELISSA_ZERO_COPY=zero_copy),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdin is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        assert lines[2] == "paused\n", lines
        srv.process.send_signal(signal.SIGKILL)
        srv.process.wait()
        started = time.monotonic()
        out, err = proc.communicate("go\n", timeout=30)
    assert proc.returncode == 0
    calls = [line.split() for line in [*lines, *out.splitlines()] if line != "paused\n"]
    # By default a send copies the values and returns; the next send of the field waits for
    # that copy to leave. With MELISSA_ZERO_COPY=1 each send waits for its own array.
    expected = ([OK, OK, OK, TIMEOUT, ORDER, ORDER] if zero_copy == "1"
                else [OK, OK, OK, OK, TIMEOUT, ORDER])
    assert [int(c[1]) for c in calls] == expected, calls
    assert time.monotonic() - started < 6
    assert "the Melissa server took no data for 1.5 s (MELISSA_TIMEOUT)" in err


def test_fortran_api(tmp_path: Path, programs: Programs) -> None:
    cells, steps = 10, 3
    with server(tmp_path / "out", "f", steps) as srv:
        proc = subprocess.run([str(programs.fortran_ops), "arrays"], env=client_env(srv, 0),
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.splitlines() == [
            "init 0", "send_2d 0", f"send_wrong_size {SIZE}", "send_strided 0", "send_float 0",
            f"send_too_many {STEPS}", "finalize 0", f"finalize_again {ORDER}",
            "last_error melissa_finalize() called twice"], proc.stderr
        assert ('melissa: error: melissa_send("f"): array has 11 values, melissa_init declared '
                "local_size=10") in proc.stderr

        # Without ierr, an error stops the program with the error code as exit status.
        proc = subprocess.run([str(programs.fortran_ops), "noierr"], env=client_env(srv, 1),
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == ORDER and "not reached" not in proc.stdout
        assert 'melissa: error: melissa_send("f") before melissa_init("f")' in proc.stderr

        clean = {k: v for k, v in client_env(srv, 2).items() if not k.startswith("MELISSA_")}
        proc = subprocess.run([str(programs.fortran_ops), "noenv"], env=clean,
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.stdout.splitlines() == [f"init {ENV}"], proc.stdout + proc.stderr

        # melissa_init with the integer communicator of `use mpi`, on 3 ranks.
        run_checked([programs.mpirun, "--oversubscribe", "-n", "3", str(programs.fortran_ops),
                     "mpi"], env=client_env(srv, 3), timeout=60)
        srv.finish()
        ds = srv.results("f")
    # Shape given in Fortran order [5, 2] arrives in C order (2, 5).
    assert ds["mean"].dims == ("time", "y", "x") and ds["mean"].shape == (steps, 2, 5)
    x = np.array([values(0, steps, cells), values(3, steps, cells)]).reshape(2, steps, 2, 5)
    assert (ds["count"].values == 2).all()
    np.testing.assert_array_equal(ds["minimum"].values, x.min(axis=0))
    np.testing.assert_array_equal(ds["maximum"].values, x.max(axis=0))
    ds.close()


# ---- N x M: the pieces of each client rank go to the server ranks owning them ---------------

def test_c_client_splits_its_cells_over_server_ranks(programs: Programs) -> None:
    """A stand-in for an M-rank server (M ROUTER sockets; rank 0 answers HELLO with the
    endpoints and partition of all ranks): N C client ranks send each server rank exactly the
    pieces protocol.split gives, with the right values, then END to every rank."""
    size, steps, m, n = 17, 2, 3, 2
    token = secrets.token_bytes(16)
    ctx: zmq.Context[Any] = zmq.Context.instance()
    socks = [ctx.socket(zmq.ROUTER) for _ in range(m)]
    endpoints = [f"tcp://127.0.0.1:{s.bind_to_random_port('tcp://127.0.0.1')}" for s in socks]
    ranges = cell_ranges(size, m)
    bounds = [0, 5, size]  # client rank i holds [bounds[i], bounds[i + 1])
    procs = [subprocess.Popen(
        [str(programs.client_ops),
         f"global:f:{bounds[i + 1] - bounds[i]}:{bounds[i]}:{size}:{i}:{n}", f"send:f:{steps}",
         "finalize"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "MELISSA_SERVER": endpoints[0], "MELISSA_SIMULATION_ID": "7",
             "MELISSA_STUDY_TOKEN": token.hex(), "MELISSA_TIMEOUT": "20"})
        for i in range(n)]
    data: dict[tuple[int, int, int, int], np.ndarray] = {}  # server rank, client rank, step, offset
    hellos: list[tuple[int, int]] = []  # server rank, client rank
    ends: list[tuple[int, int, int]] = []
    poller = zmq.Poller()
    for s in socks:
        poller.register(s, zmq.POLLIN)
    deadline = time.monotonic() + 30
    while len(ends) < n * m and time.monotonic() < deadline:
        for sock, _ in poller.poll(100):
            rank = socks.index(sock)
            peer, frame, *payload = sock.recv_multipart()
            h = decode_header(frame, token)
            if h.kind == Kind.HELLO:
                hello = decode_json(payload[0], "HELLO")
                assert hello == {"field": "f", "global_size": size, "client_ranks": n,
                                 "shape": None}
                assert (h.offset, h.count) == (bounds[h.client_rank],
                                               bounds[h.client_rank + 1] - bounds[h.client_rank])
                # rank 0 first (the authority on the field), then every other rank
                assert (rank == 0) != ((0, h.client_rank) in hellos)
                hellos.append((rank, h.client_rank))
                sock.send_multipart([peer, Header(Kind.WELCOME, token, 7).encode(), encode_json(
                    {"field_id": 0, "endpoints": endpoints, "ranges": ranges,
                     "nb_time_steps": steps})])
            elif h.kind == Kind.DATA:
                assert h.dtype == Dtype.FLOAT64 and (h.simulation_id, h.field_id) == (7, 0)
                values_ = np.frombuffer(payload[0], dtype="<f8")
                assert values_.size == h.count
                data[(rank, h.client_rank, h.time_step, h.offset)] = values_
            elif h.kind == Kind.END:
                assert h.count == n
                ends.append((rank, h.client_rank, h.simulation_id))
                sock.send_multipart([peer, Header(Kind.END_ACK, token, 7).encode()])
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0 and [line.split()[1] for line in out.splitlines()] == [
            "0", "0", "0"], out + err
    for s in socks:
        s.close(0)
    assert sorted(hellos) == sorted((r, i) for r in range(m) for i in range(n))
    assert sorted(ends) == sorted((r, i, 7) for r in range(m) for i in range(n))
    expected = {}
    for i in range(n):
        for piece in split(bounds[i], bounds[i + 1] - bounds[i], ranges):
            for step in range(steps):
                cells = np.arange(piece.global_offset, piece.global_offset + piece.count)
                expected[(piece.server_rank, i, step, piece.global_offset)] = (
                    cells + 1000.0 * step + 1e6 * 7)
    assert data.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(data[key], value, err_msg=str(key))
