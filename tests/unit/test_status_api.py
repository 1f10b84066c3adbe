"""The status API over real HTTP (token, 401, 404), the snapshot, and melissa-monitor's client
and views on it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from melissa.errors import StudyError
from melissa.launcher.http_api import StatusAPI
from melissa.launcher.state import SimulationRecord, SimulationStatus, StateStore, read_token
from melissa.launcher.status import RunningJob, StatusBoard, build_snapshot
from melissa.monitor.cli import main as monitor_main
from melissa.monitor.client import MonitorError, StatusSource
from melissa.monitor.render import plain, rich_view
from melissa.paths import StudyPaths
from melissa.protocol.events import ServerStatus

TOKEN = "0123456789abcdef" * 2


def record(sim: int, status: SimulationStatus, **changes: Any) -> SimulationRecord:
    return replace(SimulationRecord(sim, (0.5,), status, 0, 0, "", None, None, "", None, None),
                   **changes)


def snapshot(elapsed_s: float = 20.0) -> dict[str, object]:
    records = [
        record(0, SimulationStatus.COMPLETED), record(1, SimulationStatus.COMPLETED),
        record(2, SimulationStatus.FAILED, exit_code=3, message="exited with status 3",
               finished_at=10.0),
        record(3, SimulationStatus.FAILED, message="killed at its time limit", finished_at=12.0),
        record(4, SimulationStatus.RUNNING), record(5, SimulationStatus.RUNNING),
        record(6, SimulationStatus.PENDING), record(7, SimulationStatus.PENDING),
    ]
    return build_snapshot(
        output_dir=Path("/s/out"), scheduler="slurm", state="running", elapsed_s=elapsed_s,
        job_limit=3, counts=Counter(r.status for r in records),
        failures=[records[3], records[2]],  # newest first, as StateStore.recent_failures
        running=[RunningJob(4, "14", False, 5.0), RunningJob(5, "15", True, 1.0)],
        server_job={"job_id": "10", "state": "running", "address": "tcp://n:1"},
        server=ServerStatus(messages=40, bytes=4_000_000, bad_messages=1, ingest_s=2.0,
                            chunks_received={"4": 30, "5": 0}),
        chunks_expected=20, recent_mb_s=1.5, log_of=lambda s: Path(f"/s/out/logs/{s}.log"),
    )


def test_snapshot_counts_progress_eta_and_failures() -> None:
    snap = snapshot()
    assert snap["simulations"] == {"total": 8, "pending": 2, "queued": 1, "running": 1,
                                   "completed": 2, "failed": 2, "redrawn": 0}
    assert snap["job_limit"] == 3
    running = snap["running"]
    assert isinstance(running, list)
    assert [(j["simulation_id"], j["state"], j["fraction"]) for j in running] == [
        (4, "running", 1.0), (5, "queued", 0.0)]  # 30 of 20 chunks: capped
    # 4 finished + 1 whole simulation's worth of data in 20 s: 3 more take 12 s.
    assert snap["eta_s"] == 12.0
    server = snap["server"]
    assert isinstance(server, dict)
    assert server["mean_mb_s"] == 2.0 and server["recent_mb_s"] == 1.5
    failures = snap["recent_failures"]
    assert isinstance(failures, list)
    assert [f["simulation_id"] for f in failures] == [3, 2]  # most recent first
    assert failures[1]["log"] == "/s/out/logs/2.log" and failures[1]["exit_code"] == 3
    json.dumps(snap)  # JSON as it is


def test_plain_and_rich_views() -> None:
    text = plain(snapshot())
    assert "simulations 8 total: 3 waiting (1 queued), 1 running, 2 completed, 2 failed" in text
    assert "progress    4/8 finished (50%), ETA 0:00:12" in text
    assert "job_limit   3" in text
    assert "simulation 5 (job 15, queued): 0/20 chunks (0%)" in text
    assert "simulation 2 (attempt 1, exit 3): exited with status 3" in text
    assert "4.0 MB received (2.00 MB/s mean, 1.50 MB/s over the last 10 s), 1 bad messages" in text
    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(rich_view(snapshot(), "http://127.0.0.1:1"))
    shown = console.export_text()
    assert "Recent failures" in shown and "killed at its time limit" in shown


def test_board_recent_rate() -> None:
    now = [0.0]
    board = StatusBoard(period_s=1.0, clock=lambda: now[0])
    assert board.due() and board.recent_rate(ServerStatus(bytes=0)) is None
    for t in range(1, 15):
        now[0] = float(t)
        rate = board.recent_rate(ServerStatus(bytes=t * 2_000_000))
    assert rate == pytest.approx(2.0)
    board.publish({"state": "running"})
    assert not board.due() and json.loads(board.latest()) == {"state": "running"}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[StatusAPI, StudyPaths]]:
    paths = StudyPaths(tmp_path / "out")
    paths.make_dirs()
    board = StatusBoard()
    board.publish(snapshot())
    server = StatusAPI(board, TOKEN, "127.0.0.1", 0)
    server.start(paths.launcher_info)
    yield server, paths
    server.close()


def get(address: str, path: str = "/status", token: str | None = TOKEN) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(address + path, headers=headers),
                                    timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        assert exc.headers["Content-Type"] == "application/json"
        if exc.code == 401:
            assert exc.headers["WWW-Authenticate"] == 'Bearer realm="melissa"'
        return exc.code, json.loads(exc.read())


def test_the_api_needs_the_token(api: tuple[StatusAPI, StudyPaths]) -> None:
    server, paths = api
    info = json.loads(paths.launcher_info.read_text())
    assert info["address"] == server.address and TOKEN not in paths.launcher_info.read_text()
    assert get(server.address, token=None)[0] == 401
    assert get(server.address, token="f" * 32)[0] == 401
    code, body = get(server.address)
    assert code == 200 and body["simulations"]["total"] == 8
    assert get(server.address, "/")[0] == 200
    assert get(server.address, "/jobs")[0] == 404


def test_closing_removes_the_address(api: tuple[StatusAPI, StudyPaths]) -> None:
    server, paths = api
    server.close()
    assert not paths.launcher_info.exists()
    with pytest.raises(MonitorError, match="no launcher answers at http://127.0.0.1:.*: the study "
                                           "has finished or its launcher stopped"):
        StatusSource(server.address, TOKEN).fetch()


def test_port_in_use_is_a_clear_error(api: tuple[StatusAPI, StudyPaths]) -> None:
    port = int(api[0].address.rsplit(":", 1)[1])
    with pytest.raises(StudyError, match=f"status API cannot listen on 127.0.0.1:{port} .*"
                                         "check http_bind and http_port"):
        StatusAPI(StatusBoard(), TOKEN, "127.0.0.1", port)


def test_monitor_once_from_the_output_directory(
        api: tuple[StatusAPI, StudyPaths], capsys: pytest.CaptureFixture[str]) -> None:
    server, paths = api
    store = StateStore(paths.state_db)
    store.init_study(TOKEN, "{}", ["p"])
    store.close()
    assert read_token(paths.state_db) == TOKEN
    assert monitor_main([str(paths.root), "--once"]) == 0
    assert "simulations 8 total: 3 waiting (1 queued)" in capsys.readouterr().out
    assert monitor_main([server.address, "--token", TOKEN, "--once", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["scheduler"] == "slurm"
    assert monitor_main([server.address, "--token", "0" * 32, "--once"]) == 1
    assert "refused the token" in capsys.readouterr().err


def test_monitor_errors(tmp_path: Path) -> None:
    paths = StudyPaths(tmp_path / "out")
    with pytest.raises(MonitorError, match="is neither a study's output directory nor an http"):
        StatusSource.resolve(str(paths.root), None)
    paths.make_dirs()
    with pytest.raises(MonitorError, match="no Melissa study in .*out \\(no study.db\\)"):
        StatusSource.resolve(str(paths.root), None)
    StateStore(paths.state_db).close()
    with pytest.raises(MonitorError, match="the study in .*out is not running \\(no launcher.json"
                                           "\\): its outcome is in .*parameters.csv"):
        StatusSource.resolve(str(paths.root), None)
    paths.launcher_info.write_text('{"address": "http://127.0.0.1:9"}')
    with pytest.raises(MonitorError, match="holds no study yet"):
        StatusSource.resolve(str(paths.root), None)
    with pytest.raises(MonitorError, match="give the study token for http://h:1 with --token"):
        StatusSource.resolve("http://h:1", None)
