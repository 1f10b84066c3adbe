"""The launcher's status API: `GET /status` over HTTP, JSON, with `Authorization: Bearer <token>`;
and, with the same token, `POST /job_limit` with {"job_limit": N} to change the limit live.

It listens on `launcher_config.http_bind:http_port` (loopback by default) in a daemon thread,
serves the latest snapshot published on a StatusBoard, and writes its address to
`output_dir/launcher.json` (the token stays in study.db, readable by the study's owner only).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from melissa.atomic import atomic_write
from melissa.errors import StudyError
from melissa.launcher.control import JobLimitControl, parse_job_limit
from melissa.launcher.status import StatusBoard

log = logging.getLogger("melissa.launcher")

_MAX_BODY = 1024  # bytes of a POST body: {"job_limit": N} is a few


class StatusAPI:
    def __init__(self, board: StatusBoard, token: str, bind: str, port: int,
                 job_limit: JobLimitControl | None = None) -> None:
        """`job_limit`: where POST /job_limit goes (None: the API is read-only)."""
        handler = type("Handler", (_Handler,), {"board": board, "token": token.encode(),
                                                "job_limit": job_limit})
        try:
            self._server = ThreadingHTTPServer((bind, port), handler)
        except (OSError, OverflowError) as exc:
            raise StudyError(
                f"launcher_config: the status API cannot listen on {bind}:{port} ({exc}); "
                "check http_bind and http_port"
            ) from None
        self._server.daemon_threads = True
        bound, bound_port = self._server.server_address[:2]
        host = bound.decode() if isinstance(bound, bytes) else bound
        if host in ("0.0.0.0", ""):
            host = socket.getfqdn()
        self.address = f"http://{host}:{bound_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="melissa-status-api", daemon=True)
        self._info: Path | None = None

    def start(self, info_path: Path) -> None:
        """Serve, and publish the address in `info_path` (launcher.json)."""
        self._thread.start()
        self._info = info_path
        with atomic_write(info_path, durable=False) as tmp:
            tmp.write_text(json.dumps({"address": self.address, "pid": os.getpid()}))
        log.info("status API at %s (melissa-monitor %s)", self.address, info_path.parent)

    def close(self) -> None:
        if self._info is not None:
            self._info.unlink(missing_ok=True)
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    board: StatusBoard
    token: bytes
    job_limit: JobLimitControl | None
    server_version = "melissa-launcher"

    def do_GET(self) -> None:
        if self.path.split("?")[0] not in ("/", "/status"):
            self._send(404, {"error": f"no {self.path} here: GET /status"})
            return
        if self._authorized():
            self._send_bytes(200, self.board.latest())

    def do_POST(self) -> None:
        if self.path.split("?")[0] != "/job_limit" or self.job_limit is None:
            self._send(404, {"error": f"no {self.path} here: POST /job_limit"})
            return
        if not self._authorized():
            return
        try:
            limit = self._requested_limit()
        except (ValueError, TypeError) as exc:
            self._send(400, {"error": f"{exc}: send {{\"job_limit\": N}} with N >= 1"})
            return
        self.job_limit.request(limit)
        self._send(200, {"job_limit": limit})

    def _requested_limit(self) -> int:
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= _MAX_BODY:
            raise ValueError(f"a body of 1 to {_MAX_BODY} bytes is expected, got {length}")
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError:
            raise ValueError("the body is not JSON") from None
        value = body.get("job_limit") if isinstance(body, dict) else None
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"job_limit is not an integer: {value!r}")
        return parse_job_limit(str(value))

    def _authorized(self) -> bool:
        """Whether the request carries the study token; if not, answers 401."""
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.token):
            return True
        self._send(401, {"error": "missing or wrong token: send 'Authorization: Bearer "
                                  "<study token>' (the token is in the study's study.db)"},
                   {"WWW-Authenticate": 'Bearer realm="melissa"'})
        return False

    def _send(self, code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._send_bytes(code, json.dumps(body).encode(), headers)

    def _send_bytes(self, code: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("status API: %s %s", self.address_string(), format % args)
