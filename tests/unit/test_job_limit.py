"""job_limit changed live: the file output_dir/job_limit and POST /job_limit on the status API."""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from melissa.launcher.control import JobLimitControl
from melissa.launcher.http_api import StatusAPI
from melissa.launcher.status import StatusBoard

TOKEN = "0123456789abcdef" * 2


def touch(path: Path, text: str) -> None:
    """Write, with an mtime that differs from the previous write's (coarse file systems)."""
    path.write_text(text)
    stamp = path.stat().st_mtime_ns + 10_000_000
    os.utime(path, ns=(stamp, stamp))


def test_the_file_changes_the_limit(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    control = JobLimitControl(tmp_path / "job_limit", 4)
    assert (control.limit, control.poll()) == (4, None)  # no file: the config's limit
    touch(control.path, "6\n")
    assert (control.poll(), control.limit) == ((6, str(control.path)), 6)
    assert control.poll() is None  # unchanged file: nothing new
    touch(control.path, " 6 ")
    assert control.poll() is None  # the same limit: no change to report
    with caplog.at_level(logging.WARNING, "melissa.launcher"):
        touch(control.path, "many")
        assert control.poll() is None
        touch(control.path, "0")
        assert control.poll() is None
    assert control.limit == 6
    assert "'many' is not an integer; job_limit stays 6" in caplog.text
    assert "job_limit must be >= 1, got 0; job_limit stays 6" in caplog.text


def test_a_request_wins_and_is_written_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "job_limit"
    path.write_text("3")
    control = JobLimitControl(path, 8)
    assert control.limit == 3  # a resumed study keeps the limit it had
    control.request(5)
    assert control.poll() == (5, "the status API")
    assert path.read_text() == "5\n" and control.poll() is None


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[str, JobLimitControl]]:
    control = JobLimitControl(tmp_path / "job_limit", 2)
    server = StatusAPI(StatusBoard(), TOKEN, "127.0.0.1", 0, control)
    server.start(tmp_path / "launcher.json")
    yield server.address, control
    server.close()


def post(address: str, body: bytes, token: str = TOKEN,
         path: str = "/job_limit") -> tuple[int, object]:
    request = urllib.request.Request(address + path, data=body, method="POST",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())["error"]


def test_post_job_limit(api: tuple[str, JobLimitControl]) -> None:
    address, control = api
    assert post(address, b'{"job_limit": 3}') == (200, {"job_limit": 3})
    assert control.poll() == (3, "the status API")
    assert post(address, b'{"job_limit": 3}', token="f" * 32)[0] == 401
    assert post(address, b'{"job_limit": 3}', path="/status")[0] == 404
    for body, error in [(b'{"job_limit": 0}', "job_limit must be >= 1, got 0"),
                        (b'{"job_limit": "4"}', "job_limit is not an integer: '4'"),
                        (b'{"job_limit": true}', "job_limit is not an integer: True"),
                        (b"[4]", "job_limit is not an integer: None"),
                        (b"{job_limit: 4}", "the body is not JSON")]:
        code, message = post(address, body)
        assert (code, message) == (400, f'{error}: send {{"job_limit": N}} with N >= 1')
    assert control.poll() is None  # no bad request changed anything


def test_a_read_only_api_has_no_job_limit(tmp_path: Path) -> None:
    server = StatusAPI(StatusBoard(), TOKEN, "127.0.0.1", 0)
    server.start(tmp_path / "launcher.json")
    try:
        assert post(server.address, b'{"job_limit": 3}')[0] == 404
    finally:
        server.close()
