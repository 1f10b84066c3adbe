"""The server listens only on server_config.bind_address, every rank, and the launcher's status
API only on launcher_config.http_bind: read from the kernel's socket table, not from our config.
127.0.0.2 is a loopback address distinct from 127.0.0.1, so a wildcard bind would show."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from melissa.launcher.http_api import StatusAPI
from melissa.launcher.status import StatusBoard
from melissa.paths import StudyPaths
from tests.live_server import live_server

ADDRESS = "127.0.0.2"


def listening(pids: list[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket these processes listen on (Linux /proc)."""
    inodes: set[str] = set()
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            link = os.readlink(f"/proc/{pid}/fd/{fd}") if os.path.exists(
                f"/proc/{pid}/fd/{fd}") else ""
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        with open(f"/proc/{pids[0]}/net/{table}") as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] != "0A" or cols[9] not in inodes:  # 0A: LISTEN
                    continue
                host, port = cols[1].split(":")
                raw = bytes.fromhex(host)
                # /proc prints each 32-bit word in host (little-endian) order
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.add((socket.inet_ntop(family, raw), int(port, 16)))
    return found


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def server_pids(root_pid: int) -> list[int]:
    """The server process and its descendants (mpiexec's ranks)."""
    pids, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                todo += [int(c) for c in f.read().split()]
    return pids


@pytest.mark.parametrize("ranks", [1, 2])
def test_server_binds_only_to_bind_address(tmp_path: Path, ranks: int) -> None:
    with live_server(tmp_path / "out", "f", 1, {"mean": True},
                     {"bind_address": ADDRESS, "ranks": ranks}) as srv:
        sockets = listening(server_pids(srv.process.pid))
        # With several ranks MPI listens too (MPICH on every interface: docs/protocol.md).
        ours = {s for s in sockets if s[0] == ADDRESS}
        assert len(ours) == ranks and (ranks > 1 or sockets == ours), sockets
        port = int(srv.address.rsplit(":", 1)[1])
        assert srv.address == f"tcp://{ADDRESS}:{port}" and (ADDRESS, port) in ours
        assert all(refused(p) for _, p in ours)
        srv.finish()


def test_status_api_binds_only_to_http_bind(tmp_path: Path) -> None:
    api = StatusAPI(StatusBoard(), "00" * 16, ADDRESS, 0)
    api.start(StudyPaths(tmp_path).launcher_info)
    try:
        port = int(api.address.rsplit(":", 1)[1])
        assert api.address == f"http://{ADDRESS}:{port}"
        assert (ADDRESS, port) in listening([os.getpid()])
        assert not any(p == port and h != ADDRESS for h, p in listening([os.getpid()]))
        assert refused(port)
    finally:
        api.close()
