"""A launcher's cost per simulation stays flat as a study grows (bench/launcher_scale.py times it
at 10,000 simulations; here: what it does per simulation, counted, at 80 and 320)."""

from __future__ import annotations

import io
import json
import re
import sqlite3
import time
from collections import Counter
from pathlib import Path

from rich.console import Console

from melissa.config import load_config
from melissa.launcher.display import StudyDisplay
from melissa.launcher.schedulers.counting import CountingScheduler
from melissa.launcher.schedulers.local import LocalScheduler
from melissa.launcher.state import SimulationStatus
from melissa.launcher.study import Study
from tests.compiled import pkg_config, run_checked, system_tool

TRIVIAL = r"""
#include <stdlib.h>
#include <melissa.h>
int main(int argc, char **argv) {
    double x[2] = {atof(argv[1]), 1.0};
    if (melissa_init_no_mpi("u", 2) || melissa_send("u", x)) return 1;
    return melissa_finalize();
}
"""
# The whole table, read in order.
LISTING = "SELECT * FROM simulations ORDER BY simulation_id"


def trivial_client(workdir: Path) -> Path:
    source, program = workdir / "trivial.c", workdir / "trivial"
    source.write_text(TRIVIAL)
    libdir = pkg_config("--variable=libdir")[0]
    run_checked([system_tool("cc"), "-O2", str(source), "-o", str(program),
                 *pkg_config("--cflags", "--libs"), f"-Wl,-rpath,{libdir}"])
    return program


def run_study(workdir: Path, n: int, program: Path) -> tuple[Counter[str], CountingScheduler]:
    """The study of `n` trivial simulations, run as melissa-launcher runs it; the SQL statements
    it ran (the table's listings apart) and its scheduler calls."""
    workdir.mkdir()
    started = time.monotonic()
    config = {
        "output_dir": "out",
        "study_options": {"field_names": ["u"], "nb_time_steps": 1, "parameter_sweep_size": n},
        "parameters": [{"name": "a", "distribution": "uniform", "low": 0, "high": 1}],
        "sa_config": {"mean": True, "plot_time_steps": []},
        "client_config": {"executable_command": str(program)},
        "launcher_config": {"job_limit": 6},
    }
    (workdir / "config.json").write_text(json.dumps(config))
    scheduler = CountingScheduler(LocalScheduler())
    study = Study.create(load_config(str(workdir / "config.json")), scheduler)
    statements: Counter[str] = Counter()
    # The statements as run, their values bound in them.
    study.store.trace(lambda sql: statements.update([" ".join(sql.split())]))
    try:
        with StudyDisplay(Console(file=io.StringIO())) as display:
            outcome = study.run(display)
        assert study.store.counts()[SimulationStatus.COMPLETED] == n
    finally:
        study.close()
    assert (outcome.completed, outcome.failed) == (n, 0)
    # The whole table is read when the server starts (to align with what it holds) and for
    # parameters.csv (every 5 s at most, and at the end twice), never per simulation.
    assert statements.pop(LISTING, 0) <= 3 + (time.monotonic() - started) / 5
    for sql in statements:  # any other read of simulations: one row, or a few (LIMIT)
        if sql.startswith("SELECT") and "FROM simulations" in sql:
            assert re.search(r"WHERE simulation_id = \d+$|LIMIT \d+$|MAX\(simulation_id\)",
                             sql), sql
    return statements, scheduler


def test_per_simulation_cost_stays_flat(tmp_path: Path) -> None:
    program = trivial_client(tmp_path)
    small_sql, small_calls = run_study(tmp_path / "small", 80, program)
    large_sql, large_calls = run_study(tmp_path / "large", 320, program)
    per_sim_small = sum(small_sql.values()) / 80
    per_sim_large = sum(large_sql.values()) / 320
    assert per_sim_large <= 1.2 * per_sim_small, (per_sim_small, per_sim_large)
    assert large_calls.per_simulation(320) <= 1.2 * small_calls.per_simulation(80) + 0.5
    assert large_calls.calls["submit"] == 320 + 1  # and the server
    # Every statement the main loop runs goes through an index (none scans the table).
    db = sqlite3.connect(tmp_path / "large" / "out" / "study.db")
    for sql in large_sql:
        if not sql.startswith("SELECT"):
            continue
        plan = db.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
        scans = [row[3] for row in plan if row[3] == "SCAN simulations"]
        assert not scans, (sql, plan)
    db.close()
