"""The launcher's state in SQLite (`output_dir/study.db`): the study and every simulation.

The launcher is single-threaded and must survive its own crash (`--resume`), so every change is
committed at once, except in a `batch` of changes a resumed launcher learns again. WAL mode lets readers (the monitor) look while the launcher writes;
synchronous=NORMAL keeps each commit safe from a crash of the launcher process (an OS crash may
lose the last commits, which a resume redoes). WAL needs shared memory: keep the output directory
on a local or POSIX-locking file system.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from melissa.errors import StudyError

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE study (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    token_hex TEXT NOT NULL,
    config_json TEXT NOT NULL,
    parameter_names TEXT NOT NULL,  -- JSON list
    created_at REAL NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL,
    config_path TEXT NOT NULL DEFAULT '',  -- relative paths of the config are from its directory
    server_job TEXT,  -- the latest server job
    groups_drawn INTEGER NOT NULL DEFAULT 0  -- from the Sampler, so a resume draws the same
);
CREATE TABLE simulations (
    simulation_id INTEGER PRIMARY KEY,
    parameters TEXT NOT NULL,  -- JSON list of floats: repr round-trips them exactly
    status TEXT NOT NULL
        CHECK (status IN ('pending', 'running', 'completed', 'failed', 'redrawn')),
    attempt INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,  -- failed attempts
    history TEXT NOT NULL DEFAULT '',  -- what happened to earlier attempts, '; '-separated
    job_id TEXT,
    exit_code INTEGER,
    message TEXT NOT NULL DEFAULT '',
    submitted_at REAL,
    finished_at REAL
);
CREATE INDEX simulations_by_status ON simulations (status);
"""


class SimulationStatus(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"  # for good: not resubmitted
    REDRAWN = "redrawn"  # given up; its parameters were redrawn under new ids


@dataclass(frozen=True)
class SimulationRecord:
    simulation_id: int
    parameters: tuple[float, ...]
    status: SimulationStatus
    # MELISSA_ATTEMPT of the latest submission (of the next one while pending): 0 at first,
    # +1 each time the simulation is submitted again (after a failure, a preemption, ...).
    attempt: int
    failures: int  # failed attempts
    history: str  # what happened to earlier attempts
    job_id: str | None  # of the latest submission
    exit_code: int | None  # of the latest finished attempt
    message: str
    submitted_at: float | None  # seconds since the epoch, latest submission
    finished_at: float | None

    @property
    def attempts(self) -> int:
        """Submissions so far (a submission that the scheduler refused counts as one)."""
        return self.attempt + (self.status != SimulationStatus.PENDING)

    @property
    def report(self) -> str:
        """Its history and the latest message, for people."""
        return "; ".join(part for part in (self.history, self.message) if part)


class StudyInfo(TypedDict):
    token_hex: str
    config_json: str
    parameter_names: list[str]
    created_at: float  # seconds since the epoch
    status: str  # free text chosen by the launcher; "created" after init_study
    message: str
    config_path: str
    server_job: str | None
    groups_drawn: int


_FINISHED_FROM = {
    SimulationStatus.FAILED: (SimulationStatus.PENDING, SimulationStatus.RUNNING),
    # The server's word is final, whatever the launcher thought of the simulation meanwhile.
    SimulationStatus.COMPLETED: tuple(SimulationStatus),
}
# The simulations the status API lists as recent failures (indexed by _INDEXES).
_FAULTY = "(failures > 0 OR status = 'failed')"
# Indexes added after schema version 2 (created on open: an older study.db gets them too).
_INDEXES = f"""
CREATE INDEX IF NOT EXISTS simulations_recent_failures ON simulations (finished_at)
    WHERE {_FAULTY};
"""
_APPEND_HISTORY = "history = CASE WHEN history = '' THEN ? ELSE history || '; ' || ? END"


class StateStore:
    """Typed access to study.db. Misuse (unknown id, impossible transition) raises ValueError;
    a file that is not a readable study database raises StudyError."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._conn = _connect(path)
        # Kept up to date by this store's own changes (the launcher is the only writer), so
        # that the main loop reads them without a scan of the table.
        self._counts = self._count_all()

    def close(self) -> None:
        self._conn.close()

    def trace(self, callback: Callable[[str], object] | None) -> None:
        """Call `callback` with the text of every SQL statement this store runs from now on
        (None: stop); the launcher's scale test counts them."""
        self._conn.set_trace_callback(callback)

    # -- study --------------------------------------------------------------------------------

    def init_study(self, token_hex: str, config_json: str, parameter_names: Sequence[str],
                   config_path: str = "") -> None:
        """Record a new study (once per database), with status "created"."""
        try:
            self._conn.execute(
                "INSERT INTO study VALUES (1, ?, ?, ?, ?, 'created', '', ?, NULL, 0)",
                (token_hex, config_json, json.dumps(list(parameter_names)), self._clock(),
                 config_path),
            )
        except sqlite3.IntegrityError:
            raise ValueError(f"{self.path} already holds a study") from None

    def has_study(self) -> bool:
        return bool(self._conn.execute("SELECT COUNT(*) FROM study").fetchone()[0] == 1)

    def study(self) -> StudyInfo:
        row = self._conn.execute("SELECT * FROM study").fetchone()
        if row is None:
            raise ValueError(f"{self.path} holds no study yet: call init_study first")
        return StudyInfo(
            token_hex=row["token_hex"],
            config_json=row["config_json"],
            parameter_names=json.loads(row["parameter_names"]),
            created_at=row["created_at"],
            status=row["status"],
            message=row["message"],
            config_path=row["config_path"],
            server_job=row["server_job"],
            groups_drawn=row["groups_drawn"],
        )

    def set_study_status(self, status: str, message: str = "") -> None:
        self._update_study("status = ?, message = ?", (status, message))

    def set_server_job(self, job_id: str) -> None:
        self._update_study("server_job = ?", (job_id,))

    def set_groups_drawn(self, groups: int) -> None:
        self._update_study("groups_drawn = ?", (groups,))

    def _update_study(self, assignments: str, values: tuple[object, ...]) -> None:
        if self._conn.execute(f"UPDATE study SET {assignments}", values).rowcount == 0:
            raise ValueError(f"{self.path} holds no study yet: call init_study first")

    # -- simulations --------------------------------------------------------------------------

    def add_simulations(self, rows: Sequence[tuple[int, Sequence[float]]]) -> None:
        """Add pending simulations (id, parameter values in the study's order), all or none."""
        with self._transaction():
            self._insert(rows)

    def _insert(self, rows: Sequence[tuple[int, Sequence[float]]]) -> None:
        width = len(self.study()["parameter_names"])
        values = []
        for simulation_id, parameters in rows:
            if len(parameters) != width:
                raise ValueError(
                    f"simulation {simulation_id} has {len(parameters)} parameter values, "
                    f"the study has {width} parameters"
                )
            values.append((simulation_id, json.dumps([float(p) for p in parameters])))
        try:
            self._conn.executemany(
                "INSERT INTO simulations (simulation_id, parameters, status) "
                "VALUES (?, ?, 'pending')",
                values,
            )
        except sqlite3.IntegrityError:
            raise ValueError("a simulation id to add is already in the study") from None
        self._counts[SimulationStatus.PENDING] += len(values)

    def mark_running(self, simulation_id: int, job_id: str) -> None:
        """A pending simulation was submitted."""
        self._transition(
            simulation_id,
            (SimulationStatus.PENDING,),
            SimulationStatus.RUNNING,
            "job_id = ?, submitted_at = ?, exit_code = NULL, message = '', "
            "finished_at = NULL",
            (job_id, self._clock()),
        )

    def requeue(
        self, simulation_id: int, note: str, *, failed: bool, exit_code: int | None = None
    ) -> None:
        """A running simulation goes back to pending, to be submitted again with attempt + 1:
        after a failure (`failed`), or stopped by the launcher; or a completed one whose data a
        restarted server no longer holds. `note` joins its history."""
        self._transition(
            simulation_id,
            (SimulationStatus.RUNNING, SimulationStatus.COMPLETED),
            SimulationStatus.PENDING,
            f"attempt = attempt + 1, failures = failures + ?, "
            f"exit_code = ?, message = '', finished_at = ?, {_APPEND_HISTORY}",
            (int(failed), exit_code, self._clock(), note, note),
        )

    def redraw(
        self,
        replaced: Mapping[int, str],
        rows: Sequence[tuple[int, Sequence[float]]],
        groups_drawn: int,
        failed: int,
        exit_code: int | None = None,
    ) -> None:
        """All or nothing: the pending or running simulations of `replaced` (id -> why) become
        redrawn, the simulation `failed` counting one more failure (that ended with
        `exit_code`); `rows` are added pending and the study has drawn `groups_drawn` groups."""
        with self._transaction():
            for simulation_id, message in replaced.items():
                this = simulation_id == failed
                self._transition(
                    simulation_id,
                    (SimulationStatus.PENDING, SimulationStatus.RUNNING),
                    SimulationStatus.REDRAWN,
                    "message = ?, finished_at = ?, failures = failures + ?, "
                    "exit_code = CASE WHEN ? THEN ? ELSE exit_code END",
                    (message, self._clock(), int(this), this, exit_code),
                )
            self._insert(rows)
            self.set_groups_drawn(groups_drawn)

    def mark_finished(
        self, simulation_id: int, status: SimulationStatus, exit_code: int | None, message: str
    ) -> None:
        """Record how a simulation ended.

        FAILED (for good, one more failure): from running, or from pending when its submission
        failed. COMPLETED (the server has all its data, which is final): from any status (the
        data arrived before a failure, a preemption or a redraw was seen), or again from
        completed to add the job's exit code and message.
        """
        if status not in _FINISHED_FROM:
            raise ValueError(f"a simulation finishes as completed or failed, not {status.value}")
        failed = int(status == SimulationStatus.FAILED)
        self._transition(
            simulation_id,
            _FINISHED_FROM[status],
            status,
            "exit_code = ?, message = ?, finished_at = ?, failures = failures + ?",
            (exit_code, message, self._clock(), failed),
        )

    def simulation(self, simulation_id: int) -> SimulationRecord:
        row = self._conn.execute(
            "SELECT * FROM simulations WHERE simulation_id = ?", (simulation_id,)
        ).fetchone()
        if row is None:
            raise ValueError(f"no simulation {simulation_id} in {self.path}")
        return _record(row)

    def simulations(self, status: SimulationStatus | None = None) -> list[SimulationRecord]:
        """Every simulation (or those with `status`), by increasing id."""
        if status is None:
            rows = self._conn.execute("SELECT * FROM simulations ORDER BY simulation_id")
        else:
            rows = self._conn.execute(
                "SELECT * FROM simulations WHERE status = ? ORDER BY simulation_id",
                (status.value,),
            )
        return [_record(row) for row in rows]

    def pending(self, limit: int) -> list[SimulationRecord]:
        """The first `limit` pending simulations, by increasing id (read through the status
        index: the cost does not grow with the study)."""
        rows = self._conn.execute(
            "SELECT * FROM simulations WHERE status = 'pending' ORDER BY simulation_id LIMIT ?",
            (max(0, limit),),
        )
        return [_record(row) for row in rows]

    def recent_failures(self, limit: int) -> list[SimulationRecord]:
        """The `limit` simulations that failed at least once (or for good) most recently
        (through a partial index: the cost does not grow with the study)."""
        rows = self._conn.execute(
            f"SELECT * FROM simulations WHERE {_FAULTY} "
            "ORDER BY finished_at DESC, simulation_id LIMIT ?", (max(0, limit),))
        return [_record(row) for row in rows]

    def last_id(self) -> int:
        """The largest simulation id (-1 while there is none)."""
        return int(self._conn.execute(
            "SELECT COALESCE(MAX(simulation_id), -1) FROM simulations").fetchone()[0])

    def counts(self) -> dict[SimulationStatus, int]:
        """Number of simulations in each status (zeros included), without reading the table."""
        return dict(self._counts)

    def _count_all(self) -> dict[SimulationStatus, int]:
        counts = dict.fromkeys(SimulationStatus, 0)
        for status, count in self._conn.execute(
            "SELECT status, COUNT(*) FROM simulations GROUP BY status"
        ):
            counts[SimulationStatus(status)] = count
        return counts

    # -- internals ----------------------------------------------------------------------------

    def _transition(
        self,
        simulation_id: int,
        allowed: tuple[SimulationStatus, ...],
        new: SimulationStatus,
        assignments: str,
        values: tuple[object, ...],
    ) -> None:
        """Set the simulation's status to `new` (and `assignments`) if it is one of `allowed`."""
        row = self._conn.execute("SELECT status FROM simulations WHERE simulation_id = ?",
                                 (simulation_id,)).fetchone()
        # One conditional UPDATE: the check and the change cannot be separated by a crash.
        placeholders = ", ".join("?" * len(allowed))
        cursor = self._conn.execute(
            f"UPDATE simulations SET status = ?, {assignments} "
            f"WHERE simulation_id = ? AND status IN ({placeholders})",
            (new.value, *values, simulation_id, *(s.value for s in allowed)),
        )
        if cursor.rowcount == 1:
            self._counts[SimulationStatus(row["status"])] -= 1
            self._counts[new] += 1
        else:
            current = self.simulation(simulation_id).status  # ValueError if unknown
            expected = " or ".join(s.value for s in allowed)
            raise ValueError(
                f"simulation {simulation_id} is {current.value}, expected {expected}"
            )

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Commit the changes made inside together, once (one write of the WAL instead of one
        per change). A crash loses the whole batch: use it for what a resumed launcher learns
        again (the server's completions, from its checkpoint; ended jobs, by adopting them)."""
        with self._transaction():
            yield

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """All or nothing; inside another transaction (a batch), as a savepoint of it."""
        nested = self._conn.in_transaction
        self._conn.execute("SAVEPOINT nested" if nested else "BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK TO nested" if nested else "ROLLBACK")
            if nested:
                self._conn.execute("RELEASE nested")
            self._counts = self._count_all()  # the changes made inside are undone
            raise
        self._conn.execute("RELEASE nested" if nested else "COMMIT")


def read_token(path: Path) -> str:
    """The study token in a study.db, read without changing anything (for melissa-monitor)."""
    if not path.is_file():
        raise StudyError(f"no Melissa study in {path.parent} (no {path.name})")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)
        try:
            row = conn.execute("SELECT token_hex FROM study").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StudyError(
            f"cannot read the study token from {path}: {exc} (it is readable by the study's "
            "owner only)"
        ) from None
    if row is None:
        raise StudyError(f"{path} holds no study yet")
    return str(row[0])


def _connect(path: Path) -> sqlite3.Connection:
    try:
        # The study token is a secret: create the file (and so its WAL) readable by us only.
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        # isolation_level=None: autocommit, each statement is committed at once.
        conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
    except (OSError, sqlite3.Error) as exc:
        raise StudyError(f"cannot open the launcher state {path}: {exc}") from exc
    try:
        _prepare(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _prepare(conn: sqlite3.Connection, path: Path) -> None:
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            conn.executescript(
                f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            )
    except sqlite3.Error as exc:
        raise StudyError(f"cannot open the launcher state {path}: {exc}") from exc
    if version not in (0, SCHEMA_VERSION):
        raise StudyError(
            f"{path} has state schema version {version}, this Melissa reads version "
            f"{SCHEMA_VERSION}: resume it with the Melissa version that started it"
        )
    try:
        conn.executescript(_INDEXES)
    except sqlite3.Error as exc:
        raise StudyError(f"cannot open the launcher state {path}: {exc}") from exc


def _record(row: sqlite3.Row) -> SimulationRecord:
    return SimulationRecord(
        simulation_id=row["simulation_id"],
        parameters=tuple(json.loads(row["parameters"])),
        status=SimulationStatus(row["status"]),
        attempt=row["attempt"],
        failures=row["failures"],
        history=row["history"],
        job_id=row["job_id"],
        exit_code=row["exit_code"],
        message=row["message"],
        submitted_at=row["submitted_at"],
        finished_at=row["finished_at"],
    )
