"""Two views of a status snapshot: plain text (`--once`) and a rich live panel."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

MAX_ROWS = 10  # running simulations and failures shown


def counts(snapshot: Mapping[str, Any]) -> dict[str, int]:
    """total (redrawn ones left out), waiting (not submitted yet or queued by the scheduler),
    queued, running, completed, failed, redrawn, finished."""
    sims = snapshot.get("simulations") or {}
    c = {k: int(sims.get(k, 0)) for k in
         ("total", "pending", "queued", "running", "completed", "failed", "redrawn")}
    c["total"] -= c["redrawn"]  # their replacements are counted instead
    c["waiting"] = c.pop("pending") + c["queued"]
    c["finished"] = c["completed"] + c["failed"]
    return c


def plain(snapshot: Mapping[str, Any]) -> str:
    """The snapshot as a few `key  value` lines, for scripts and logs."""
    if "simulations" not in snapshot:
        return f"study       {snapshot.get('state', 'unknown')}"
    c = counts(snapshot)
    server = snapshot.get("server") or {}
    lines = [
        (f"study       {snapshot.get('output_dir')} ({snapshot.get('scheduler')}, "
         f"{snapshot.get('state')}, {_duration(snapshot.get('elapsed_s'))})"),
        (f"simulations {c['total']} total: {c['waiting']} waiting ({c['queued']} queued), "
         f"{c['running']} running, {c['completed']} completed, {c['failed']} failed"
         + (f", {c['redrawn']} redrawn" if c["redrawn"] else "")),
        f"job_limit   {snapshot.get('job_limit', 'unknown')}",
        (f"progress    {c['finished']}/{c['total']} finished ({_percent(c)}), "
         f"ETA {_duration(snapshot.get('eta_s'))}"),
        f"server      {_server(server)}",
    ]
    if server.get("training"):
        lines.append(f"training    {_training(server['training'])}")
    for field, figures in (server.get("sobol_convergence") or {}).items():
        lines.append(f"sobol       {field}: {sobol_line(figures)}")
    running = snapshot.get("running") or []
    for i, job in enumerate(running[:MAX_ROWS]):
        lines.append(f"{'running' if i == 0 else '':<12}{_job(job)}")
    if len(running) > MAX_ROWS:
        lines.append(f"{'':<12}... and {len(running) - MAX_ROWS} more")
    for i, failure in enumerate(snapshot.get("recent_failures") or []):
        lines.append(f"{'failures' if i == 0 else '':<12}{_failure(failure)}")
    return "\n".join(lines)


def rich_view(snapshot: Mapping[str, Any], address: str) -> RenderableType:
    """The live panel: counts, a progress bar, throughput and ETA, jobs, recent failures."""
    if "simulations" not in snapshot:
        return Panel(f"study {snapshot.get('state', 'unknown')} ...", title=f"Melissa {address}")
    c = counts(snapshot)
    grid = Table.grid(padding=(0, 2))
    for _ in range(6):
        grid.add_column(justify="right")
    grid.add_row("total", "waiting", "running", "completed", "failed", "queued")
    grid.add_row(str(c["total"]), f"[yellow]{c['waiting']}", f"[cyan]{c['running']}",
                 f"[green]{c['completed']}", f"[red]{c['failed']}" if c["failed"] else "0",
                 str(c["queued"]))
    bar = Table.grid(padding=(0, 1), expand=True)
    bar.add_column(ratio=1)
    bar.add_column()
    bar.add_row(ProgressBar(total=max(c["total"], 1), completed=c["finished"]),
                f"{c['finished']}/{c['total']} ({_percent(c)})  "
                f"ETA {_duration(snapshot.get('eta_s'))}")
    parts: list[RenderableType] = [
        grid, bar, Text(f"server: {_server(snapshot.get('server') or {})}"),
        Text(f"job_limit: {snapshot.get('job_limit', 'unknown')}")]
    training = (snapshot.get("server") or {}).get("training")
    if training:
        parts.append(Text(f"training: {_training(training)}"))
    for field, figures in ((snapshot.get("server") or {}).get("sobol_convergence") or {}).items():
        parts.append(Text(f"Sobol' indices, {field}: {sobol_line(figures)}"))
    running = snapshot.get("running") or []
    if running:
        jobs = Table("simulation", "job", "state", "progress", "", "time", title="Running",
                     title_justify="left", expand=True)
        for job in running[:MAX_ROWS]:
            jobs.add_row(str(job["simulation_id"]), str(job["job_id"]), job["state"],
                         ProgressBar(total=1.0, completed=float(job["fraction"]), width=20),
                         f"{job['chunks_received']}/{job['chunks_expected']} chunks",
                         _duration(job.get("seconds")))
        if len(running) > MAX_ROWS:
            jobs.caption = f"... and {len(running) - MAX_ROWS} more"
        parts.append(jobs)
    failures = snapshot.get("recent_failures") or []
    if failures:
        table = Table("simulation", "attempts", "exit", "reason", title="Recent failures",
                      title_justify="left", expand=True)
        for f in failures:
            table.add_row(str(f["simulation_id"]), str(f["attempts"]),
                          "" if f["exit_code"] is None else str(f["exit_code"]), f["message"])
        parts.append(table)
    title = (f"Melissa study {snapshot.get('output_dir')} ({snapshot.get('scheduler')}, "
             f"{snapshot.get('state')}, {_duration(snapshot.get('elapsed_s'))})")
    return Panel(Group(*parts), title=title, title_align="left", subtitle=address)


def _server(server: Mapping[str, Any]) -> str:
    recent = server.get("recent_mb_s")
    recent_text = "" if recent is None else f", {recent:.2f} MB/s over the last 10 s"
    job = f"job {server.get('job_id')} {server.get('state') or ''}".strip()
    return (f"{job}; {int(server.get('bytes', 0)) / 1e6:.1f} MB received "
            f"({float(server.get('mean_mb_s', 0.0)):.2f} MB/s mean{recent_text}), "
            f"{server.get('bad_messages', 0)} bad messages")


def _training(t: Mapping[str, Any]) -> str:
    """A deep-learning server's latest figures (docs/deep-learning.md, "Outputs")."""
    validation = t.get("validation_loss")
    return (f"batch {t.get('batch', 0):.0f}, {t.get('samples', 0):.0f} samples, "
            f"loss {t.get('loss', float('nan')):.4g}"
            + ("" if validation is None else f", validation {validation:.4g}")
            + f", {t.get('samples_per_s', 0):.0f} samples/s, buffer "
            f"{100 * t.get('buffer_fill', 0):.0f}% full, reuse {t.get('buffer_reuse', 0):.1f}")


def sobol_line(figures: Mapping[str, Any]) -> str:
    """A field's convergence (server/sa/convergence.py): complete groups, the widest 95%
    interval of its aggregated indices and the indices themselves."""
    def number(value: object) -> str:
        return "nan" if value is None else f"{float(value):.3f}"  # type: ignore[arg-type]

    first = ", ".join(number(v) for v in figures.get("first") or [])
    total = ", ".join(number(v) for v in figures.get("total") or [])
    return (f"{figures.get('groups', 0)} groups, widest 95% interval "
            f"{number(figures.get('widest_interval'))}; aggregated first order [{first}], "
            f"total [{total}]")


def _job(job: Mapping[str, Any]) -> str:
    return (f"simulation {job['simulation_id']} (job {job['job_id']}, {job['state']}): "
            f"{job['chunks_received']}/{job['chunks_expected']} chunks "
            f"({100 * float(job['fraction']):.0f}%), {_duration(job.get('seconds'))}")


def _failure(failure: Mapping[str, Any]) -> str:
    code = "" if failure.get("exit_code") is None else f", exit {failure['exit_code']}"
    return (f"simulation {failure['simulation_id']} (attempt {failure['attempts']}{code}): "
            f"{failure['message']}")


def _percent(c: Mapping[str, int]) -> str:
    return f"{100 * c['finished'] / c['total']:.0f}%" if c["total"] else "-"


def _duration(seconds: object) -> str:
    if not isinstance(seconds, (int, float)):
        return "unknown"
    total = round(seconds)
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"
