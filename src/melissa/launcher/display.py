"""What the user sees in the terminal: a live progress display, then the study's summary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typing_extensions import Self

from melissa.launcher.state import SimulationRecord, SimulationStatus


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
        self, counts: Mapping[SimulationStatus, int], server: Mapping[str, Any], total: int
    ) -> None:
        done = counts[SimulationStatus.COMPLETED] + counts[SimulationStatus.FAILED]
        rate = _rate_mb_s(server)
        detail = (
            f"running {counts[SimulationStatus.RUNNING]}  "
            f"failed {counts[SimulationStatus.FAILED]}  "
            f"server {rate:.1f} MB/s"
        )
        self.progress.update(self.task, total=total, completed=done, detail=detail)


def _rate_mb_s(server: Mapping[str, Any]) -> float:
    elapsed = float(server.get("ingest_s", 0.0) or 0.0)
    return float(server.get("bytes", 0)) / elapsed / 1e6 if elapsed > 0 else 0.0


def print_summary(
    console: Console,
    records: Sequence[SimulationRecord],
    output_dir: Path,
    results: Sequence[Path],
    plots: Sequence[Path],
    server: Mapping[str, Any],
    elapsed_s: float,
    log_of: Any,
) -> None:
    completed = [r for r in records if r.status == SimulationStatus.COMPLETED]
    failed = [r for r in records if r.status == SimulationStatus.FAILED]
    table = Table(title="Melissa study summary", show_header=False, title_justify="left")
    table.add_row("simulations", f"{len(records)}")
    table.add_row("completed", f"[green]{len(completed)}")
    table.add_row("failed", f"[red]{len(failed)}" if failed else "0")
    table.add_row("wall time", f"{elapsed_s:.1f} s")
    table.add_row(
        "data received",
        f"{float(server.get('bytes', 0)) / 1e6:.1f} MB, never written to disk "
        f"({_rate_mb_s(server):.1f} MB/s)",
    )
    if server.get("bad_messages"):
        table.add_row("bad messages dropped", str(server["bad_messages"]))
    console.print(table)
    if failed:
        fails = Table(title="Failed simulations", title_justify="left")
        for column in ("id", "exit", "reason", "log"):
            fails.add_column(column)
        for r in failed[:20]:
            code = "" if r.exit_code is None else str(r.exit_code)
            fails.add_row(str(r.simulation_id), code, r.message, str(log_of(r.simulation_id)))
        console.print(fails)
        if len(failed) > 20:
            console.print(f"... and {len(failed) - 20} more (see parameters.csv)")
    # soft_wrap: a path is never broken over two lines, whatever the terminal's width.
    console.print(f"[bold]Results[/bold] in {output_dir}:", soft_wrap=True)
    lines = [("statistics" if p.suffix == ".nc" else "training", p) for p in results]
    lines += [("plot", p) for p in plots]
    lines += [("parameters", output_dir / "parameters.csv"), ("logs", output_dir / "logs")]
    for label, path in lines:  # statistics: NetCDF; training: checkpoint and metrics
        console.print(f"  {label:<10}  {path}", soft_wrap=True, highlight=False)
