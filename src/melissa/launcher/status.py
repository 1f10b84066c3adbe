"""The study's status as the status API serves it (melissa-monitor reads it).

The launcher's main loop builds a snapshot (a JSON object, `build_snapshot`) at most once a
second and publishes it on a `StatusBoard`; the status API's threads only ever read the latest
published bytes, so they never touch the launcher's state while it changes.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from melissa.launcher.state import SimulationRecord, SimulationStatus
from melissa.protocol.events import ServerStatus

SNAPSHOT_VERSION = 1
RECENT_FAILURES = 10
THROUGHPUT_WINDOW_S = 10.0


@dataclass(frozen=True)
class RunningJob:
    """A simulation whose job was submitted and has not ended yet."""

    simulation_id: int
    job_id: str
    queued: bool  # the scheduler has not started it yet
    submitted_s: float  # seconds since its submission


class StatusBoard:
    """The latest snapshot, as JSON bytes: published by the main loop, read by HTTP threads."""

    def __init__(self, period_s: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self._period = period_s
        self._clock = clock
        self._lock = threading.Lock()
        self._latest = json.dumps({"version": SNAPSHOT_VERSION, "state": "starting"}).encode()
        self._next = -math.inf
        self._bytes: deque[tuple[float, int]] = deque()  # (time, server bytes) samples

    def due(self) -> bool:
        """Whether a new snapshot is worth building (one per period)."""
        return self._clock() >= self._next

    def publish(self, snapshot: Mapping[str, Any]) -> None:
        data = json.dumps(snapshot, separators=(",", ":")).encode()
        with self._lock:
            self._latest = data
        self._next = self._clock() + self._period

    def latest(self) -> bytes:
        with self._lock:
            return self._latest

    def recent_rate(self, server: ServerStatus) -> float | None:
        """The server's intake (bytes in its latest status event) in MB/s over the last
        THROUGHPUT_WINDOW_S (None until two samples)."""
        now = self._clock()
        self._bytes.append((now, server.bytes))
        while len(self._bytes) > 2 and now - self._bytes[1][0] >= THROUGHPUT_WINDOW_S:
            self._bytes.popleft()
        (t0, b0), (t1, b1) = self._bytes[0], self._bytes[-1]
        return (b1 - b0) / (t1 - t0) / 1e6 if t1 > t0 else None


def build_snapshot(
    *,
    output_dir: Path,
    scheduler: str,
    state: str,
    elapsed_s: float,
    job_limit: int,
    counts: Mapping[SimulationStatus, int],
    failures: Sequence[SimulationRecord],
    running: Sequence[RunningJob],
    server_job: Mapping[str, Any],
    server: ServerStatus,
    chunks_expected: int,
    recent_mb_s: float | None,
    log_of: Callable[[int], Path],
) -> dict[str, Any]:
    """The status API's JSON document (see docs/schedulers.md, "The status API"). `counts`:
    the simulations in each status; `failures`: the RECENT_FAILURES simulations that failed
    (at least once) most recently, newest first (StateStore.recent_failures)."""
    total = sum(counts.values())
    queued = sum(job.queued for job in running)
    chunks = {int(k): v for k, v in server.chunks_received.items()}
    progress = [_progress(job, chunks.get(job.simulation_id, 0), chunks_expected)
                for job in sorted(running, key=lambda j: j.simulation_id)]
    finished = (counts[SimulationStatus.COMPLETED] + counts[SimulationStatus.FAILED]
                + counts[SimulationStatus.REDRAWN])
    done = finished + sum(p["fraction"] for p in progress)
    remaining = total - done
    eta = remaining * elapsed_s / done if done > 0 and elapsed_s > 0 else None
    return {
        "version": SNAPSHOT_VERSION,
        "state": state,
        "output_dir": str(output_dir),
        "scheduler": scheduler,
        "elapsed_s": round(elapsed_s, 3),
        "job_limit": job_limit,
        "simulations": {
            "total": total,
            "pending": counts[SimulationStatus.PENDING],
            "queued": queued,
            "running": counts[SimulationStatus.RUNNING] - queued,
            "completed": counts[SimulationStatus.COMPLETED],
            "failed": counts[SimulationStatus.FAILED],
            "redrawn": counts[SimulationStatus.REDRAWN],
        },
        "eta_s": None if eta is None else round(eta, 1),
        "server": {
            **server_job,
            "bytes": server.bytes,
            "messages": server.messages,
            "bad_messages": server.bad_messages,
            "mean_mb_s": server.mean_mb_s,
            "recent_mb_s": recent_mb_s,
            # Deep learning: the latest training figures (batch, loss, validation_loss, ...).
            "training": dict(server.training or {}),
            # Sobol' studies: per field, the aggregated indices and their widest 95% interval.
            "sobol_convergence": dict(server.sobol_convergence or {}),
        },
        "running": progress,
        "recent_failures": [
            {"simulation_id": r.simulation_id, "attempts": r.attempts, "exit_code": r.exit_code,
             "message": r.report, "finished_at": r.finished_at,
             "log": str(log_of(r.simulation_id))}
            for r in failures[:RECENT_FAILURES]
        ],
    }


def _progress(job: RunningJob, chunks: int, expected: int) -> dict[str, Any]:
    return {
        "simulation_id": job.simulation_id,
        "job_id": job.job_id,
        "state": "queued" if job.queued else "running",
        "seconds": round(job.submitted_s, 1),
        "chunks_received": chunks,
        "chunks_expected": expected,
        "fraction": min(1.0, chunks / expected) if expected > 0 else 0.0,
    }
