"""What the user sees in the terminal: a live progress display, then the study's summary."""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typing_extensions import Self

from melissa.launcher.simlog import last_lines
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


def compact_report(report: str) -> str:
    """A simulation's history with consecutive attempts that failed the same way told once:
    "attempts 0-2: exited with status 1; failed 3 times, redrawn as simulation 5"."""
    parts = re.split(r"(?:^|; )attempt (\d+): ", report)
    if len(parts) < 5:  # fewer than two attempts: nothing to merge
        return report
    entries: list[tuple[int, int, str, str]] = []  # first, last attempt, what happened, outcome
    for number, text in zip(parts[1::2], parts[2::2]):
        attempt = int(number)
        what, outcome = text.removesuffix(", resubmitted"), ""
        if what == text:  # the latest attempt: what was done follows "; "
            what, _, outcome = text.rpartition("; ") if "; failed " in text else (text, "", "")
        if entries and entries[-1][2] == what and entries[-1][1] == attempt - 1:
            entries[-1] = (entries[-1][0], attempt, what, outcome)
        else:
            entries.append((attempt, attempt, what, outcome))
    if len(entries) == len(parts) // 2:
        return report  # no two alike in a row: as recorded
    told = [parts[0]] if parts[0] else []
    for first, last, what, outcome in entries:
        span = f"attempt {first}" if first == last else f"attempts {first}-{last}"
        told.append(f"{span}: {what}" + (f"; {outcome}" if outcome else ""))
    return "; ".join(told)


def _print_faults(console: Console, records: Sequence[SimulationRecord], log_of: Any) -> None:
    """Each simulation that failed at least once: what happened and what was done, its last line
    of output (its error, mostly) and its log. Lines are never cut: the terminal wraps them, so
    a path stays whole."""
    faulty = [r for r in records if r.failures > 0 or r.status == SimulationStatus.REDRAWN]
    if not faulty:
        return
    console.print("[bold]Failed simulations and what was done[/bold]")
    for r in faulty[:_MAX_FAULT_ROWS]:
        runs = f"{r.attempts} run" + ("s" if r.attempts != 1 else "")
        told = compact_report(r.report)
        lines = [f"  simulation {r.simulation_id}: {r.status.value} ({runs}): {told}"]
        if r.status != SimulationStatus.COMPLETED:  # else its last run went well
            lines += [f"    last output: {line}" for line in last_lines(log_of(r.simulation_id), 1)]
        lines.append(f"    log: {log_of(r.simulation_id)}")
        for line in lines:  # markup off: an error line may hold [brackets]
            console.print(line, soft_wrap=True, highlight=False, markup=False)
    if len(faulty) > _MAX_FAULT_ROWS:
        console.print(f"  ... and {len(faulty) - _MAX_FAULT_ROWS} more (see parameters.csv)")


def _sobol_convergence(path: Path) -> list[tuple[str, str]]:
    """(field, "N groups, widest 95% interval ...") from the last row of each field in the
    server's statistics/sobol_convergence.csv; nothing when the study has no Sobol' indices."""
    try:
        with open(path, newline="") as f:
            last = {row["field"]: row for row in csv.DictReader(f) if "widest_interval" in row}
    except (OSError, KeyError, csv.Error):
        return []
    out = []
    for field, row in last.items():
        parameters = [c.removeprefix("first_") for c in row
                      if c.startswith("first_") and not c.endswith(("_low", "_high"))]
        indices = "; ".join(
            f"{p} {row[f'first_{p}']} [{row[f'first_{p}_low']}, {row[f'first_{p}_high']}] / "
            f"{row[f'total_{p}']}" for p in parameters)
        out.append((field, (f"{row['groups']} groups, widest 95% interval "
                            f"{row['widest_interval']}; aggregated first order [95%] / total: "
                            f"{indices}")))
    return out


def _stop_when(path: Path) -> list[tuple[str, str]]:
    """sa_config.stop_when: the figure at the end (the last row of statistics/stop_when.csv;
    after a stop, the simulations that were running still count, so it may differ from the
    value that stopped the study, which the stop line gives)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        last = rows[-1]
        text = (f"{last['value']} at the end, with {last['simulations']} simulations (target: "
                f"below {last['below']})")
        return [(f"stop_when {last['figure']}", text)]
    except (OSError, KeyError, IndexError, csv.Error):
        return []


def _training(path: Path) -> list[tuple[str, str]]:
    """Deep learning: the last row of metrics.csv (batches, training loss, validation metrics);
    nothing when the study trained no surrogate."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error):
        return []
    if not rows:
        return []
    last = rows[-1]
    trained = (f"{last.get('batch', '?')} batches, {last.get('samples', '?')} samples, "
               f"loss {_number(last.get('loss'))}")
    lines = [("training", trained)]
    for key, value in last.items():
        if key.startswith("validation_") and key != "validation_samples" and value:
            held_out = last.get("validation_samples", "?")
            lines.append((f"validation {key.removeprefix('validation_')}",
                          f"{_number(value)} over {held_out} held-out samples"))
    if len(lines) == 1:
        lines.append(("validation", "none (dl_config.validation_fraction is 0)"))
    return lines


def _number(text: str | None) -> str:
    try:
        return f"{float(text or 'nan'):.4g}"
    except ValueError:
        return str(text)


def _abandoned_included(path: Path) -> list[int]:
    """Simulation ids listed in statistics/abandoned_data.csv, if the server wrote it."""
    try:
        with path.open(newline="") as f:
            return sorted({int(row["simulation"]) for row in csv.DictReader(f)})
    except (OSError, ValueError, KeyError):
        return []


def _ids(ids: list[int]) -> str:
    shown = ", ".join(map(str, ids[:10]))
    return f"ids {shown}" + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")


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
    stopped: str = "",
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
        table.add_row("redrawn", f"[yellow]{len(redrawn)}[/yellow] (new parameters under new ids; "
                      "what they sent is left out of the results)")
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
    paths = StudyPaths(output_dir)
    for field, convergence in _sobol_convergence(paths.sobol_convergence):
        table.add_row(f"Sobol' indices, {field}", convergence)
    for label, text in _stop_when(paths.stop_when):
        table.add_row(label, text)
    for label, text in _training(paths.training_metrics):
        table.add_row(label, text)
    console.print(table)
    if stopped:
        console.print(f"[bold]The study {stopped}.[/bold]", soft_wrap=True, highlight=False)
    abandoned = _abandoned_included(paths.abandoned_data)
    if abandoned:
        console.print(f"[bold red]The results hold data of {len(abandoned)} simulations that did "
                      f"not complete ({_ids(abandoned)}): committed early to stay within "
                      "sa_config.hold_memory_mb; the variable abandoned_samples and "
                      f"{paths.abandoned_data} say which time steps.[/bold red]", soft_wrap=True)
    elif redrawn or failed:
        console.print(f"[yellow]The statistics hold completed simulations only: the data of "
                      f"{len(redrawn) + len(failed)} redrawn or failed ones is left out of the "
                      "results.[/yellow]", soft_wrap=True)
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
