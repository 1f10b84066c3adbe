"""Server faults with a real `python -m melissa.server` process and real clients: SIGKILL and
SIGTERM (also in the middle of a checkpoint write), restart from the checkpoint, resend everything
→ the same results as an uninterrupted run; hung clients reported; abandoned simulations refused."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from melissa.client.session import ClientEnvironment, Session
from melissa.errors import ClientError
from melissa.launcher.channel import ServerChannel
from melissa.paths import StudyPaths
from melissa.protocol import Header, Kind, encode_json
from tests.live_server import LiveServer

STEPS, CELLS, SIMS = 3, 12, 6
SA = {"mean": True, "variance": True, "skewness": True, "kurtosis": True, "min": True,
      "max": True, "threshold_exceedance": True, "threshold_values": [3.0]}


def write_study(root: Path, sa: dict[str, Any], steps: int = STEPS, ranks: int = 1,
                simulation_timeout: float = 600, sims: int = 100) -> StudyPaths:
    paths = StudyPaths(root)
    paths.make_dirs()
    paths.study_file.write_text(json.dumps({
        "output_dir": str(root),
        "study_options": {"field_names": ["f"], "nb_time_steps": steps,
                          "parameter_sweep_size": sims, "simulation_timeout": simulation_timeout},
        "parameters": [{"name": "p", "distribution": "uniform", "low": 0, "high": 1}],
        "sa_config": sa,
        "client_config": {"executable_command": "unused"},
        "server_config": {"ranks": ranks},
    }))
    return paths


@dataclass
class Server(LiveServer):
    events: list[dict[str, Any]] = field(default_factory=list)  # arrived, not yet looked at


def start(paths: StudyPaths, token: bytes, ranks: int = 1) -> Server:
    """The server as the launcher (re)starts it, on an existing output directory; attached."""
    paths.rendezvous.unlink(missing_ok=True)
    mpi = [str(Path(sys.executable).parent / "mpiexec"), "-n", str(ranks)] if ranks > 1 else []
    with open(paths.server_log, "a") as log:
        proc = subprocess.Popen([*mpi, sys.executable, "-m", "melissa.server", str(paths.root)],
                                env={**os.environ, "MELISSA_STUDY_TOKEN": token.hex()},
                                stderr=log, start_new_session=True)
    deadline = time.monotonic() + 30
    while not paths.rendezvous.exists():
        assert proc.poll() is None and time.monotonic() < deadline, paths.server_log.read_text()
        time.sleep(0.02)
    address = json.loads(paths.rendezvous.read_text())["address"]
    channel = ServerChannel(address, token)
    # ATTACH by hand: the events right after "attached" ("restored") must not be lost.
    channel.socket.send(Header(Kind.ATTACH, token).encode())
    server = Server(proc, paths, address, token, channel)
    wait_event(server, "attached")
    return server


def stop(server: Server, sig: signal.Signals) -> int:
    os.killpg(server.process.pid, sig)
    code = server.process.wait(timeout=30)
    server.channel.close()
    return code


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Every server a test starts, killed at the end whatever happened."""
    started: list[Server] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()


def values(sim: int, step: int, cells: int = CELLS) -> np.ndarray:
    rng = np.random.default_rng(1000 * sim + step)
    return rng.normal(sim % 3, 1.5, cells)


def session(server: Server, sim: int, attempt: int = 0) -> Session:
    return Session(ClientEnvironment(server.address, sim, server.token, attempt, 10.0))


def run_client(server: Server, sim: int, attempt: int = 0, steps: int = STEPS,
               cells: int = CELLS, finalize: bool = True) -> None:
    s = session(server, sim, attempt)
    s.init("f", cells, 0, cells, None)
    for step in range(steps):
        s.send("f", values(sim, step, cells))
    if finalize:
        s.finalize()
    else:
        s.close()


def wait_event(server: Server, name: str, timeout: float = 10) -> dict[str, Any]:
    """The first event called `name`, as its wire JSON (events before it are dropped, later
    ones kept)."""
    deadline = time.monotonic() + timeout
    while True:
        while server.events:
            event = server.events.pop(0)
            if event["event"] == name:
                return event
        assert time.monotonic() < deadline, f"no {name!r} event within {timeout} s"
        server.events.extend(e.to_json() for e in server.channel.wait(0.2))


def checkpoints_logged(paths: StudyPaths) -> int:
    return len(re.findall(r"checkpoint \S+: [\d.]+ MB", paths.server_log.read_text()))


def wait_checkpoint_after(paths: StudyPaths, seen: int, timeout: float = 10) -> None:
    """Wait until a checkpoint is written after the `seen` ones so far (it holds all before)."""
    deadline = time.monotonic() + timeout
    while checkpoints_logged(paths) <= seen:
        assert time.monotonic() < deadline, paths.server_log.read_text()
        time.sleep(0.05)


def results(paths: StudyPaths) -> dict[str, np.ndarray]:
    with xr.open_dataset(paths.field_results("f")) as ds:
        return {str(name): ds[name].values for name in ds.data_vars}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    paths = write_study(tmp_path_factory.mktemp("reference"), SA)
    server = start(paths, secrets.token_bytes(16))
    try:
        for sim in range(SIMS):
            run_client(server, sim)
        server.finish()
    finally:
        if server.process.poll() is None:
            os.killpg(server.process.pid, signal.SIGKILL)
    return results(paths)


def assert_same_results(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert set(got) == set(expected)
    np.testing.assert_array_equal(got["count"], SIMS)
    for name, array in expected.items():
        if array.dtype.kind in "iub":
            np.testing.assert_array_equal(got[name], array, err_msg=name)
        else:
            np.testing.assert_allclose(got[name], array, rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_restart_from_checkpoint_gives_the_uninterrupted_results(
    tmp_path: Path, servers: list[Server], uninterrupted: dict[str, np.ndarray],
    sig: signal.Signals,
) -> None:
    paths = write_study(tmp_path, {**SA, "checkpoint_interval": 0.3})
    token = secrets.token_bytes(16)
    servers.append(first := start(paths, token))
    for sim in range(3):
        run_client(first, sim)
    wait_checkpoint_after(paths, checkpoints_logged(paths))
    run_client(first, 3, steps=2, finalize=False)  # half sent when the server dies
    code = stop(first, sig)
    if sig == signal.SIGTERM:
        assert code == 143 and "stopping on SIGTERM" in paths.server_log.read_text()

    newest = paths.server_checkpoints(0)[0]
    servers.append(second := start(paths, token))
    restored = wait_event(second, "restored")
    assert restored == {"event": "restored", "checkpoint": str(newest), "complete": [0, 1, 2]}
    for sim in range(SIMS):  # every client again, from the start: held chunks are duplicates
        run_client(second, sim, attempt=1)
    log = second.finish()
    assert re.search(r"restored \S+server-rank0000-\d+\.ckpt", log)
    assert_same_results(results(paths), uninterrupted)


def test_kill_during_a_checkpoint_write_restores_the_previous_one(
    tmp_path: Path, servers: list[Server]
) -> None:
    cells = 4_000_000  # 64 MB of state: a write takes long enough to be caught in the middle
    paths = write_study(tmp_path, {"mean": True, "variance": True, "checkpoint_interval": 0.2},
                        steps=1)
    token = secrets.token_bytes(16)
    servers.append(first := start(paths, token))
    run_client(first, 0, steps=1, cells=cells)
    wait_checkpoint_after(paths, checkpoints_logged(paths))
    run_client(first, 1, steps=1, cells=cells)
    deadline = time.monotonic() + 20
    while not _partly_written(paths):
        assert time.monotonic() < deadline, "no checkpoint write seen"
    stop(first, signal.SIGKILL)
    [partial] = paths.checkpoints.glob("*.tmp")  # killed mid-write: the temporary file is left
    newest = paths.server_checkpoints(0)[0]
    assert newest.name < partial.name

    servers.append(second := start(paths, token))
    restored = wait_event(second, "restored")
    assert restored["checkpoint"] == str(newest) and 0 in restored["complete"]
    for sim in (0, 1):
        run_client(second, sim, attempt=1, steps=1, cells=cells)
    wait_checkpoint_after(paths, checkpoints_logged(paths))
    assert not list(paths.checkpoints.glob("*.tmp"))  # the next write took over its name
    second.finish()
    got = results(paths)
    x = np.array([values(sim, 0, cells) for sim in (0, 1)])
    np.testing.assert_array_equal(got["count"], 2)
    # atol: means near 0 of two values cancel (relative error of ulps there).
    np.testing.assert_allclose(got["mean"][0], x.mean(axis=0), rtol=1e-12, atol=1e-15)


def _partly_written(paths: StudyPaths) -> bool:
    """A checkpoint's temporary file exists and has some of its bytes."""
    for tmp in paths.checkpoints.glob("*.tmp"):
        try:
            return tmp.stat().st_size > 0
        except FileNotFoundError:  # renamed meanwhile: the write is over
            pass
    return False


def test_a_silent_client_is_reported_per_timeout_and_attempt(
    tmp_path: Path, servers: list[Server]
) -> None:
    paths = write_study(tmp_path, {"mean": True}, simulation_timeout=1.0)
    servers.append(server := start(paths, secrets.token_bytes(16)))
    run_client(server, 0)
    run_client(server, 1, steps=1, finalize=False)  # hangs after its first step
    started = time.monotonic()
    event = wait_event(server, "simulation_silent", timeout=10)
    assert event["simulation_id"] == 1 and event["silent_s"] >= 1.0
    assert time.monotonic() - started >= 0.9
    # Still silent one more timeout later: reported again (a resubmitted job that hangs before
    # its HELLO is only seen this way), never more often than once per timeout.
    again = wait_event(server, "simulation_silent", timeout=10)
    assert again["simulation_id"] == 1 and again["silent_s"] >= event["silent_s"] + 1.0
    run_client(server, 1, attempt=1, steps=1, finalize=False)  # resubmitted, hangs again
    assert wait_event(server, "simulation_silent")["simulation_id"] == 1
    log = server.finish()
    assert log.count("simulation 1 (attempt 0) sent nothing") >= 2
    assert log.count("simulation 1 (attempt 1) sent nothing") >= 1
    assert "simulation 0 (attempt" not in log  # the complete one: never


def test_abandoned_simulations_are_refused(tmp_path: Path, servers: list[Server]) -> None:
    paths = write_study(tmp_path, {"mean": True})
    servers.append(server := start(paths, secrets.token_bytes(16)))
    run_client(server, 0)
    mid = session(server, 2)
    mid.init("f", CELLS, 0, CELLS, None)
    mid.send("f", values(2, 0))
    while wait_event(server, "status")["chunks_received"].get("2") != 1:
        pass  # its first step is in before the ABANDON (they come over different sockets)
    abandon = [Header(Kind.ABANDON, server.token).encode(), encode_json({"simulations": [1, 2]})]
    server.channel.socket.send_multipart(abandon)
    with pytest.raises(ClientError, match="simulation 1 was abandoned by the launcher"):
        run_client(server, 1)
    with pytest.raises(ClientError, match="simulation 2 was abandoned by the launcher"):
        for step in (1, 2):
            mid.send("f", values(2, step))
        mid.finalize()
    mid.close()
    log = server.finish()
    assert "abandoned simulations [1, 2]" in log
    assert "refused HELLO: simulation 1 was abandoned" in log
    assert "left the data of simulations [2] out of the results" in log
    got = results(paths)
    # What simulation 2 sent before it was abandoned leaves no trace: simulation 0 alone.
    np.testing.assert_array_equal(got["count"], [[1] * CELLS] * 3)
    np.testing.assert_allclose(got["mean"], [values(0, t) for t in range(3)], rtol=1e-12)
    with xr.open_dataset(paths.field_results("f")) as ds:
        assert (ds.attrs["simulations_seen"], ds.attrs["simulations_dropped"]) == (1, 1)


def test_two_ranks_stop_on_sigterm_and_restore(
    tmp_path: Path, servers: list[Server], uninterrupted: dict[str, np.ndarray]
) -> None:
    paths = write_study(tmp_path, {**SA, "checkpoint_interval": 0}, ranks=2)
    token = secrets.token_bytes(16)
    servers.append(first := start(paths, token, ranks=2))
    for sim in range(2):
        run_client(first, sim)
    run_client(first, 2, steps=1, finalize=False)
    assert stop(first, signal.SIGTERM) != 0
    assert [len(paths.server_checkpoints(rank)) for rank in (0, 1)] == [1, 1]

    servers.append(second := start(paths, token, ranks=2))
    restored = wait_event(second, "restored")
    assert restored["complete"] == [0, 1]
    for sim in range(SIMS):
        run_client(second, sim, attempt=1)
    second.finish()
    assert_same_results(results(paths), uninterrupted)


SOBOL = {"sobol_indices": True, "mean": True, "variance": True, "quantiles": [0.5]}


def sobol_study(paths: StudyPaths, token: bytes, servers: list[Server],
                kill: bool, size: int) -> dict[str, np.ndarray]:
    """5 groups of `size` members (A, B, C_p and, second order, D_p): groups 0-1 complete, then
    group 2's A fully and its B half sent; with `kill`, a SIGKILL after a checkpoint holds
    that, then a restart where every client sends everything again."""
    servers.append(server := start(paths, token))
    if kill:
        for sim in range(2 * size + 1):
            run_client(server, sim)
        run_client(server, 2 * size + 1, steps=2, finalize=False)
        wait_checkpoint_after(paths, checkpoints_logged(paths))
        stop(server, signal.SIGKILL)
        servers.append(server := start(paths, token))
        assert wait_event(server, "restored")["complete"] == list(range(2 * size + 1))
        assert "half-joined" not in paths.server_log.read_text()
    for sim in range(5 * size):
        run_client(server, sim, attempt=int(kill))
    server.finish()
    return results(paths)


@pytest.mark.parametrize("second_order", [False, True])
def test_sobol_restart_keeps_half_joined_groups_and_quantiles(
    tmp_path: Path, servers: list[Server], second_order: bool
) -> None:
    """A Sobol' study killed with groups half joined: the restored join completes them, and
    every index, interval, aggregated index, quantile and moment equals the uninterrupted
    run."""
    token = secrets.token_bytes(16)
    sa = {**SOBOL, "second_order": second_order}
    size = 4 if second_order else 3
    expected = sobol_study(write_study(tmp_path / "a", sa), token, servers, kill=False,
                           size=size)
    got = sobol_study(write_study(tmp_path / "b", {**sa, "checkpoint_interval": 0.3}), token,
                      servers, kill=True, size=size)
    assert set(got) == set(expected) and "sobol_first" in got
    assert ("sobol_second" in got) == second_order and "sobol_first_aggregated" in got
    np.testing.assert_array_equal(got["sobol_groups"], 5)
    np.testing.assert_array_equal(got["count"], 10)  # the A and B members
    for name, array in expected.items():
        np.testing.assert_allclose(got[name], array, rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("keep", [False, True])
def test_a_finished_study_removes_its_checkpoints_unless_kept(
    tmp_path: Path, servers: list[Server], keep: bool
) -> None:
    paths = write_study(tmp_path, {**SA, "checkpoint_interval": 0.05, "keep_checkpoints": keep})
    servers.append(server := start(paths, secrets.token_bytes(16)))
    run_client(server, 0)
    wait_checkpoint_after(paths, 0)
    run_client(server, 1)
    log = server.finish()
    assert bool(paths.server_checkpoints(0)) == keep, log
    assert ("removed" in log) != keep


def test_no_checkpoint_once_every_simulation_is_complete(tmp_path: Path,
                                                         servers: list[Server]) -> None:
    paths = write_study(tmp_path, {**SA, "checkpoint_interval": 0.05}, sims=2)
    servers.append(server := start(paths, secrets.token_bytes(16)))
    run_client(server, 0)
    wait_checkpoint_after(paths, 0)  # periodic checkpoints while simulations remain
    run_client(server, 1)  # the last one: acknowledged once complete on the server
    written = checkpoints_logged(paths)
    time.sleep(0.5)  # ten intervals, with a changed state
    assert checkpoints_logged(paths) == written
    server.finish()
