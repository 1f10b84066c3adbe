"""What the user sees in the terminal: a live progress display, then the study's summary."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typing_extensions import Self

from melissa.launcher.state import SimulationRecord, SimulationStatus
from melissa.paths import StudyPaths
from melissa.protocol.events import ServerStatus

_MAX_FAULT_ROWS = 50  # simulations listed in the summary; parameters.csv has them all


class StudyDisplay:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]simulations"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task("study", total=None, detail="starting the server")

    def __enter__(self) -> Self:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(
        self, counts: Mapping[SimulationStatus, int], server: ServerStatus, total: int
    ) -> None:
        done = counts[SimulationStatus.COMPLETED] + counts[SimulationStatus.FAILED]
        detail = (
            f"running {counts[SimulationStatus.RUNNING]}  "
            f"failed {counts[SimulationStatus.FAILED]}  "
            f"server {server.mean_mb_s:.1f} MB/s"
        )
        self.progress.update(self.task, total=total, completed=done, detail=detail)


def _print_faults(console: Console, records: Sequence[SimulationRecord], log_of: Any) -> None:
    """One row per simulation that failed at least once: what happened, what was done."""
    faulty = [r for r in records if r.failures > 0 or r.status == SimulationStatus.REDRAWN]
    if not faulty:
        return
    table = Table(title="Failed simulations and what was done", title_justify="left")
    for column in ("id", "status", "attempts", "exit", "what happened", "log"):
        table.add_column(column)
    for r in faulty[:_MAX_FAULT_ROWS]:
        code = "" if r.exit_code is None else str(r.exit_code)
        table.add_row(str(r.simulation_id), r.status.value, str(r.attempts), code, r.report,
                      str(log_of(r.simulation_id)))
    console.print(table)
    if len(faulty) > _MAX_FAULT_ROWS:
        console.print(f"... and {len(faulty) - _MAX_FAULT_ROWS} more (see parameters.csv)")


def _sobol_convergence(path: Path) -> list[tuple[str, str]]:
    """(field, "N groups, widest 95% interval ...") from the last row of each field in the
    server's statistics/sobol_convergence.csv; nothing when the study has no Sobol' indices."""
    try:
        with open(path, newline="") as f:
            last = {row["field"]: row for row in csv.DictReader(f)}
    except (OSError, KeyError, csv.Error):
        return []
    return [(field, (f"{row['groups']} groups, widest 95% interval {row['widest_first']} "
                     f"(first order), {row['widest_total']} (total)"))
            for field, row in last.items()]


def print_summary(
    console: Console,
    records: Sequence[SimulationRecord],
    output_dir: Path,
    results: Sequence[Path],
    plots: Sequence[Path],
    server: ServerStatus,
    elapsed_s: float,
    log_of: Any,
    server_restarts: Sequence[str] = (),
) -> None:
    """The study's figures, then every fault and what was done about it, then where results are."""
    completed = [r for r in records if r.status == SimulationStatus.COMPLETED]
    failed = [r for r in records if r.status == SimulationStatus.FAILED]
    redrawn = [r for r in records if r.status == SimulationStatus.REDRAWN]
    table = Table(title="Melissa study summary", show_header=False, title_justify="left")
    table.add_row("simulations", f"{len(records) - len(redrawn)}")
    table.add_row("completed", f"[green]{len(completed)}")
    table.add_row("failed", f"[red]{len(failed)}" if failed else "0")
    if redrawn:
        table.add_row("redrawn", f"[yellow]{len(redrawn)}")
    failures = sum(r.failures for r in records)
    if failures:
        table.add_row("failed runs", str(failures))  # attempts, all simulations
    if server_restarts:
        table.add_row("server restarts", f"[yellow]{len(server_restarts)}")
    table.add_row("wall time", f"{elapsed_s:.1f} s")
    table.add_row(
        "data received",
        f"{server.bytes / 1e6:.1f} MB, never written to disk ({server.mean_mb_s:.1f} MB/s)",
    )
    if server.bad_messages:
        table.add_row("bad messages dropped", str(server.bad_messages))
    for field, convergence in _sobol_convergence(StudyPaths(output_dir).sobol_convergence):
        table.add_row(f"Sobol' indices, {field}", convergence)
    console.print(table)
    _print_faults(console, records, log_of)
    for i, reason in enumerate(server_restarts, 1):
        console.print(f"server restart {i}: {reason}", soft_wrap=True, highlight=False)
    # soft_wrap: a path is never broken over two lines, whatever the terminal's width.
    console.print(f"[bold]Results[/bold] in {output_dir}:", soft_wrap=True)
    lines = [("statistics" if p.suffix in (".nc", ".zarr") else "training", p) for p in results]
    lines += [("plot", p) for p in plots]
    lines += [("parameters", output_dir / "parameters.csv"), ("logs", output_dir / "logs")]
    for label, path in lines:  # statistics: NetCDF; training: checkpoint and metrics
        console.print(f"  {label:<10}  {path}", soft_wrap=True, highlight=False)
