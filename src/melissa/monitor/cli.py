"""`melissa-monitor <output_dir | http://host:port>`: watch a running study live."""

from __future__ import annotations

import argparse
import json
import sys
import time

from rich.console import Console
from rich.live import Live

from melissa.monitor.client import MonitorError, StatusSource
from melissa.monitor.render import plain, rich_view


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="melissa-monitor",
        description="Watch a running Melissa study: jobs waiting, running, completed and failed, "
        "per-simulation progress, server throughput, ETA and recent failures.",
    )
    parser.add_argument(
        "target", help="the study's output directory, or its launcher's status API address "
        "(http://host:port, printed in output_dir/launcher.json)")
    parser.add_argument(
        "--token", help="the study token (default: read from output_dir/study.db; needed with "
        "an http:// address)")
    parser.add_argument("--once", action="store_true",
                        help="print one plain snapshot and exit (for scripts)")
    parser.add_argument("--json", action="store_true",
                        help="with --once: print the status API's JSON as it is")
    parser.add_argument("--interval", type=float, default=1.0,
                        help="seconds between two refreshes (default 1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.interval <= 0:
        _error(f"--interval must be a positive number of seconds, got {args.interval}")
        return 2
    try:
        source = StatusSource.resolve(args.target, args.token)
        snapshot = source.fetch()
    except MonitorError as exc:
        _error(str(exc))
        return 1
    if args.once:
        print(json.dumps(snapshot, indent=2) if args.json else plain(snapshot))
        return 0
    return _watch(source, snapshot, args.interval)


def _watch(source: StatusSource, snapshot: dict[str, object], interval: float) -> int:
    console = Console()
    try:
        with Live(rich_view(snapshot, source.address), console=console,
                  auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                try:
                    snapshot = source.fetch()
                except MonitorError as exc:
                    live.stop()
                    console.print(f"[bold]{exc}[/bold]")
                    return 0
                live.update(rich_view(snapshot, source.address), refresh=True)
    except KeyboardInterrupt:
        return 0


def _error(message: str) -> None:
    print(f"melissa-monitor: error: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
