"""The launcher's SQLite state store and parameters.csv, on real files."""

from __future__ import annotations

import csv
import math
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from melissa.errors import StudyError
from melissa.launcher.report import write_parameters_csv
from melissa.launcher.state import SimulationStatus, StateStore

NAMES = ["x", "y"]
# Values whose shortest repr needs all 17 digits, or extreme exponents.
AWKWARD = [0.1 + 0.2, math.pi, 1e-300, -2.2250738585072014e-308, math.nextafter(1.0, 0.0), 5e-324]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    store = StateStore(tmp_path / "study.db", clock=FakeClock())
    store.init_study("ab" * 16, '{"a": 1}', NAMES)
    yield store
    store.close()


def test_new_database_has_no_study(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "study.db")
    assert not store.has_study()
    with pytest.raises(ValueError, match="init_study"):
        store.study()
    with pytest.raises(ValueError, match="init_study"):
        store.add_simulations([(0, [1.0, 2.0])])
    with pytest.raises(ValueError, match="init_study"):
        store.set_study_status("running")
    store.close()


def test_study_record(store: StateStore) -> None:
    assert store.has_study()
    assert store.study() == {
        "token_hex": "ab" * 16,
        "config_json": '{"a": 1}',
        "parameter_names": NAMES,
        "created_at": 1001.0,
        "status": "created",
        "message": "",
        "config_path": "",
        "server_job": None,
        "groups_drawn": 0,
    }
    store.set_study_status("failed", "the server died")
    store.set_server_job("12-345")
    store.set_groups_drawn(7)
    assert (store.study()["server_job"], store.study()["groups_drawn"]) == ("12-345", 7)
    assert (store.study()["status"], store.study()["message"]) == ("failed", "the server died")
    with pytest.raises(ValueError, match="already holds a study"):
        store.init_study("cd" * 16, "{}", NAMES)


def test_add_and_list_simulations(store: StateStore) -> None:
    store.add_simulations([(2, (5.0, 6.0)), (0, [1.0, 2.0]), (1, (3.0, 4.0))])
    records = store.simulations()
    assert [r.simulation_id for r in records] == [0, 1, 2]
    first = records[0]
    assert first.parameters == (1.0, 2.0)
    assert first.status == SimulationStatus.PENDING
    assert (first.attempt, first.attempts, first.job_id, first.exit_code) == (0, 0, None, None)
    assert (first.message, first.submitted_at, first.finished_at) == ("", None, None)
    assert store.counts() == {
        SimulationStatus.PENDING: 3,
        SimulationStatus.RUNNING: 0,
        SimulationStatus.COMPLETED: 0,
        SimulationStatus.FAILED: 0,
        SimulationStatus.REDRAWN: 0,
    }
    assert store.last_id() == 2
    store.mark_running(1, "job-1")
    assert [r.simulation_id for r in store.simulations(SimulationStatus.PENDING)] == [0, 2]
    assert [r.simulation_id for r in store.simulations(SimulationStatus.RUNNING)] == [1]


def test_adding_is_all_or_nothing(store: StateStore) -> None:
    store.add_simulations([(0, [1.0, 2.0])])
    with pytest.raises(ValueError, match="already in the study"):
        store.add_simulations([(1, [1.0, 2.0]), (0, [3.0, 4.0])])
    with pytest.raises(ValueError, match="3 parameter values, the study has 2"):
        store.add_simulations([(2, [1.0, 2.0]), (3, [1.0, 2.0, 3.0])])
    assert [r.simulation_id for r in store.simulations()] == [0]
    assert store.simulation(0).parameters == (1.0, 2.0)


def test_lifecycle_with_a_restart(store: StateStore) -> None:
    store.add_simulations([(7, [1.0, 2.0])])
    store.mark_running(7, "job-a")
    running = store.simulation(7)
    assert (running.status, running.attempt, running.attempts) == (SimulationStatus.RUNNING, 0, 1)
    assert (running.job_id, running.submitted_at, running.finished_at) == ("job-a", 1002.0, None)

    store.requeue(7, "attempt 0: exit status 3, resubmitted", failed=True, exit_code=3)
    requeued = store.simulation(7)
    assert (requeued.status, requeued.exit_code, requeued.failures) == (
        SimulationStatus.PENDING, 3, 1)
    assert (requeued.attempt, requeued.attempts) == (1, 1)  # MELISSA_ATTEMPT becomes 1
    assert requeued.finished_at == 1003.0

    store.mark_running(7, "job-b")
    again = store.simulation(7)
    assert (again.attempt, again.attempts, again.job_id) == (1, 2, "job-b")
    assert (again.exit_code, again.message, again.finished_at) == (None, "", None)
    store.requeue(7, "attempt 1: preempted", failed=False)  # not a failure
    store.mark_running(7, "job-c")

    store.mark_finished(7, SimulationStatus.COMPLETED, None, "")
    store.mark_finished(7, SimulationStatus.COMPLETED, 0, "exited")  # the exit code came later
    done = store.simulation(7)
    assert (done.status, done.exit_code, done.message) == (SimulationStatus.COMPLETED, 0, "exited")
    assert (done.attempt, done.attempts, done.failures) == (2, 3, 1)
    assert done.report == ("attempt 0: exit status 3, resubmitted; attempt 1: preempted; "
                           "exited")
    assert store.counts()[SimulationStatus.COMPLETED] == 1


def test_redraw_replaces_a_group_at_once(store: StateStore) -> None:
    store.add_simulations([(i, [float(i), 0.0]) for i in range(4)])
    store.mark_running(1, "j1")
    store.mark_running(0, "j0")
    store.mark_finished(0, SimulationStatus.COMPLETED, 0, "")
    replaced = {1: "attempt 0: exit 1; redrawn as group 2", 2: "group 0 redrawn as group 2"}
    store.redraw(replaced, [(4, [4.0, 1.0]), (5, [5.0, 1.0])], groups_drawn=3, failed=1)
    assert [r.status.value for r in store.simulations()] == [
        "completed", "redrawn", "redrawn", "pending", "pending", "pending"]
    assert (store.simulation(1).failures, store.simulation(2).failures) == (1, 0)
    assert store.simulation(2).message == "group 0 redrawn as group 2"
    assert (store.study()["groups_drawn"], store.last_id()) == (3, 5)
    with pytest.raises(ValueError, match="simulation 0 is completed"):  # all or nothing
        store.redraw({3: "x", 0: "y"}, [(6, [6.0, 0.0])], groups_drawn=4, failed=3)
    assert (store.simulation(3).status, store.last_id()) == (SimulationStatus.PENDING, 5)
    assert store.study()["groups_drawn"] == 3


def test_refused_submission_fails_a_pending_simulation(store: StateStore) -> None:
    store.add_simulations([(0, [1.0, 2.0])])
    store.mark_finished(0, SimulationStatus.FAILED, None, "no such command")
    record = store.simulation(0)
    assert (record.status, record.attempt, record.attempts) == (SimulationStatus.FAILED, 0, 1)


def test_server_completion_overrides_a_failure(store: StateStore) -> None:
    store.add_simulations([(0, [1.0, 2.0])])
    store.mark_running(0, "j")
    store.mark_finished(0, SimulationStatus.FAILED, None, "timed out")
    store.mark_finished(0, SimulationStatus.COMPLETED, None, "")
    assert store.simulation(0).status == SimulationStatus.COMPLETED


def test_impossible_transitions_are_refused(store: StateStore) -> None:
    store.add_simulations([(0, [1.0, 2.0]), (1, [1.0, 2.0])])
    with pytest.raises(ValueError, match="simulation 0 is pending, expected running"):
        store.requeue(0, "", failed=True)
    store.mark_running(0, "j")
    with pytest.raises(ValueError, match="simulation 0 is running, expected pending"):
        store.mark_running(0, "j2")
    with pytest.raises(ValueError, match="completed or failed, not running"):
        store.mark_finished(0, SimulationStatus.RUNNING, None, "")
    store.mark_finished(0, SimulationStatus.COMPLETED, 0, "")
    with pytest.raises(ValueError, match="is completed"):
        store.mark_finished(0, SimulationStatus.FAILED, 1, "")
    with pytest.raises(ValueError, match="is completed"):
        store.mark_running(0, "j3")
    with pytest.raises(ValueError, match="no simulation 9"):
        store.mark_running(9, "j")
    assert store.simulation(0).job_id == "j"
    assert store.simulation(1).status == SimulationStatus.PENDING


def test_reopening_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "study.db"
    store = StateStore(path)
    store.init_study("ff" * 16, "{}", NAMES)
    store.add_simulations([(i, [v, -v]) for i, v in enumerate(AWKWARD)])
    store.mark_running(1, "job-1")
    store.mark_finished(1, SimulationStatus.FAILED, -9, "killed by signal SIGKILL")
    store.set_study_status("running")
    before = (store.study(), store.simulations(), store.counts())
    store.close()

    reopened = StateStore(path)
    assert (reopened.study(), reopened.simulations(), reopened.counts()) == before
    assert [r.parameters for r in reopened.simulations()] == [(v, -v) for v in AWKWARD]
    reopened.close()


def test_every_change_survives_a_crash(tmp_path: Path) -> None:
    """A launcher killed without closing the store loses nothing it had recorded."""
    path = tmp_path / "study.db"
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from melissa.launcher.state import SimulationStatus, StateStore
        store = StateStore(Path({str(path)!r}))
        store.init_study("00", "{{}}", ["x"])
        store.add_simulations([(0, [0.5]), (1, [0.25])])
        store.mark_running(0, "job-0")
        store.mark_finished(0, SimulationStatus.COMPLETED, 0, "")
        store.mark_running(1, "job-1")
        os._exit(0)
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    store = StateStore(path)
    assert [r.status for r in store.simulations()] == [SimulationStatus.COMPLETED,
                                                       SimulationStatus.RUNNING]
    assert store.simulation(1).job_id == "job-1"
    store.close()


def test_readers_see_commits_while_the_launcher_writes(store: StateStore) -> None:
    reader = StateStore(store.path)
    store.add_simulations([(0, [1.0, 2.0])])
    assert [r.status for r in reader.simulations()] == [SimulationStatus.PENDING]
    store.mark_running(0, "j")
    assert reader.simulation(0).status == SimulationStatus.RUNNING
    reader.close()


def test_wal_mode_and_private_file(store: StateStore) -> None:
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600  # it holds the study token


def test_other_schema_version_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "study.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StudyError, match="schema version 99, this Melissa reads version 2"):
        StateStore(path)


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "study.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StudyError, match="cannot open the launcher state .*study.db"):
        StateStore(path)
    with pytest.raises(StudyError, match="cannot open the launcher state"):
        StateStore(tmp_path / "missing" / "study.db")


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_parameters_csv_round_trips(store: StateStore, tmp_path: Path) -> None:
    store.add_simulations([(i, [v, -v]) for i, v in enumerate(AWKWARD)])
    store.mark_running(0, "j")
    store.mark_finished(0, SimulationStatus.FAILED, 3, 'said "no", then\nstopped')
    store.mark_running(1, "k")
    store.mark_finished(1, SimulationStatus.COMPLETED, 0, "")
    path = tmp_path / "parameters.csv"
    path.write_text("old table")
    write_parameters_csv(path, NAMES, store.simulations())

    rows = read_csv(path)
    assert list(rows[0]) == ["simulation_id", "x", "y", "status", "attempts", "exit_code",
                             "message"]
    assert [(float(r["x"]), float(r["y"])) for r in rows] == [(v, -v) for v in AWKWARD]
    assert [r["simulation_id"] for r in rows] == [str(i) for i in range(len(AWKWARD))]
    assert rows[0] | {"x": "", "y": ""} == {
        "simulation_id": "0", "x": "", "y": "", "status": "failed", "attempts": "1",
        "exit_code": "3", "message": 'said "no", then\nstopped',
    }
    assert (rows[1]["status"], rows[1]["exit_code"]) == ("completed", "0")
    assert (rows[2]["status"], rows[2]["attempts"], rows[2]["exit_code"]) == ("pending", "0", "")
    assert sorted(p.name for p in tmp_path.iterdir() if "parameters" in p.name) == [
        "parameters.csv"
    ]


def test_parameters_csv_refuses_mismatched_names(store: StateStore, tmp_path: Path) -> None:
    store.add_simulations([(0, [1.0, 2.0])])
    path = tmp_path / "parameters.csv"
    path.write_text("old table")
    with pytest.raises(ValueError, match="2 parameter values for 3 names"):
        write_parameters_csv(path, ["x", "y", "z"], store.simulations())
    assert path.read_text() == "old table"
    assert [p.name for p in tmp_path.iterdir() if "parameters" in p.name] == ["parameters.csv"]


def test_pending_and_recent_failures_read_few_rows_through_indexes(store: StateStore) -> None:
    store.add_simulations([(i, [float(i), 0.0]) for i in range(50)])
    for sim in (3, 7, 9):
        store.mark_running(sim, f"job{sim}")
    assert [r.simulation_id for r in store.pending(4)] == [0, 1, 2, 4]
    store.requeue(7, "attempt 0: exit status 1, resubmitted", failed=True, exit_code=1)
    store.mark_finished(3, SimulationStatus.FAILED, 2, "exit status 2")
    store.mark_finished(9, SimulationStatus.COMPLETED, 0, "")
    # Newest first; a completed simulation without failures is none of them.
    assert [r.simulation_id for r in store.recent_failures(10)] == [3, 7]
    assert [r.simulation_id for r in store.recent_failures(1)] == [3]
    conn = sqlite3.connect(store.path)
    plans = [" ".join(str(c) for c in row) for sql, args in (
        ("SELECT * FROM simulations WHERE status = 'pending' ORDER BY simulation_id LIMIT ?",
         (4,)),
        (("SELECT * FROM simulations WHERE (failures > 0 OR status = 'failed') "
         "ORDER BY finished_at DESC, simulation_id LIMIT ?"), (10,)),
    ) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", args)]
    conn.close()
    assert any("simulations_by_status" in p for p in plans), plans
    assert any("simulations_recent_failures" in p for p in plans), plans
    assert not any("SCAN simulations" == p.split(" ", 3)[-1] for p in plans), plans


def test_counts_follow_every_change_without_reading_the_table(store: StateStore) -> None:
    store.add_simulations([(i, [float(i), 0.0]) for i in range(6)])
    store.mark_running(0, "a")
    store.mark_running(1, "b")
    store.mark_finished(0, SimulationStatus.COMPLETED, 0, "")
    store.requeue(1, "attempt 0: failed", failed=True)
    store.mark_running(2, "c")
    store.redraw({2: "redrawn", 3: "group redrawn"}, [(6, [1.0, 1.0])], 2, failed=2)
    with pytest.raises(ValueError, match="already in the study"):  # rolled back, all of it
        store.redraw({4: "redrawn"}, [(0, [1.0, 1.0])], 3, failed=4)
    with pytest.raises(ValueError, match="is redrawn, expected pending"):
        store.mark_running(2, "d")
    store.mark_finished(5, SimulationStatus.FAILED, None, "refused")
    expected = {SimulationStatus.PENDING: 3, SimulationStatus.RUNNING: 0,
                SimulationStatus.COMPLETED: 1, SimulationStatus.FAILED: 1,
                SimulationStatus.REDRAWN: 2}
    assert store.counts() == expected
    reopened = StateStore(store.path)
    assert reopened.counts() == expected
    reopened.close()


def test_a_batch_commits_once_and_a_failed_redraw_inside_undoes_only_itself(
        store: StateStore) -> None:
    store.add_simulations([(i, [float(i), 0.0]) for i in range(3)])
    reader = sqlite3.connect(store.path)
    with store.batch():
        store.mark_running(0, "a")
        store.mark_finished(0, SimulationStatus.COMPLETED, None, "")
        with pytest.raises(ValueError, match="already in the study"):
            store.redraw({1: "redrawn"}, [(2, [1.0, 1.0])], 2, failed=1)
        store.mark_finished(2, SimulationStatus.FAILED, None, "refused")
        # Nothing is visible to another connection before the batch ends.
        assert reader.execute("SELECT COUNT(*) FROM simulations WHERE status = 'pending'"
                              ).fetchone()[0] == 3
    statuses = [s for (s,) in reader.execute("SELECT status FROM simulations ORDER BY 1")]
    assert statuses == ["completed", "failed", "pending"]
    assert store.counts()[SimulationStatus.PENDING] == 1
    reader.close()
