"""The side-by-side workload of the original C Melissa, through `melissa-launcher` as a user runs
it: S simulations x T time steps x N cells, all at once, a synthetic NumPy client, the full SA set
(moments to kurtosis, min/max with ids, 2 thresholds, 5 quantiles), default checkpoints, plots.

It reports the study's wall time and its phases, read from the server's log (start: launcher
start to the server listening; allocation: first HELLO to the state ready; ingest: state ready to
the last simulation complete; checkpoints: their write times; output: the results written;
finish: launcher exit after that, i.e. the plots and the report), the peak memory of each server
rank (VmHWM) and the bytes left on disk. Melissa-SA's wall time on this workload is a recorded
figure (196.7 s wall, 8.1 GB on disk; not re-run here): the ratio is against it.

    .venv/bin/python bench/side_by_side.py [--sims 20] [--steps 100] [--cells 250000]
        [--server-ranks 1] [--output-format auto] [--output-dtype float64] [--no-plots]
        [--server-timeout S] [--keep]

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ANCHOR_WALL_S, ANCHOR_DISK_GB = 196.7, 8.1  # Melissa-SA on this workload (recorded, not re-run)

CLIENT = """
import sys
import numpy as np
import melissa.client as melissa

cells, steps = int(sys.argv[1]), int(sys.argv[2])
a, b = float(sys.argv[3]), float(sys.argv[4])
grid = np.linspace(0.0, 1.0, cells)
u = np.sin(6.0 * a * grid) + b
melissa.init("u", cells, shape=(cells,))
for step in range(steps):
    u = 0.99 * u + 0.01 * np.cos(a * step + grid)
    melissa.send("u", u)
melissa.finalize()
"""

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=20)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--cells", type=int, default=250_000)
    parser.add_argument("--server-ranks", type=int, default=1)
    parser.add_argument("--output-format", default="auto")
    parser.add_argument("--output-dtype", default="float64")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--server-timeout", type=float, default=None,
                        help="launcher_config.server_timeout (on a crowded machine a starved "
                        "server may stay silent past the default 60 s)")
    parser.add_argument("--keep", action="store_true", help="keep the study directory")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="melissa-side-by-side-"))
    try:
        figures = run(work, args)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures))


def run(work: Path, args: argparse.Namespace) -> dict[str, object]:
    (work / "client.py").write_text(CLIENT)
    config = {
        "output_dir": "out",
        "study_options": {"field_names": ["u"], "nb_time_steps": args.steps,
                          "parameter_sweep_size": args.sims, "seed": 1},
        "parameters": [{"name": "a", "distribution": "uniform", "low": 1, "high": 2},
                       {"name": "b", "distribution": "uniform", "low": 0, "high": 1}],
        "sa_config": {"mean": True, "variance": True, "skewness": True, "kurtosis": True,
                      "min": True, "max": True, "threshold_exceedance": True,
                      "threshold_values": [0.5, 1.0], "quantiles": [0.05, 0.25, 0.5, 0.75, 0.95],
                      "output_format": args.output_format, "output_dtype": args.output_dtype,
                      **({"plot_time_steps": []} if args.no_plots else {})},
        "client_config": {"executable_command":
                          f"{sys.executable} client.py {args.cells} {args.steps}"},
        "server_config": {"ranks": args.server_ranks},
        "launcher_config": {"job_limit": args.sims, **(
            {"server_timeout": args.server_timeout} if args.server_timeout else {})},
    }
    (work / "config.json").write_text(json.dumps(config))
    launcher = Path(sys.executable).parent / "melissa-launcher"
    started = time.time()
    proc = subprocess.run([str(launcher), "-c", "config.json"], cwd=work, capture_output=True,
                          text=True, check=False)
    ended = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"the study failed:\n{proc.stdout}\n{proc.stderr}")
    out = work / "out"
    log = (out / "logs" / "server.log").read_text().splitlines()
    phases = _phases(log, started, ended)
    wall = ended - started
    disk = _bytes(out)
    peaks = {m.group(1): float(m.group(2)) for line in log
             if (m := re.search(r"server rank (\d+): peak memory ([\d.]+) MB", line))}
    figures: dict[str, object] = {
        "workload": f"{args.sims} sims x {args.steps} steps x {args.cells} cells, "
                    f"M={args.server_ranks}, output {args.output_format}/{args.output_dtype}",
        "wall_s": round(wall, 1),
        "phases_s": {k: round(v, 2) for k, v in phases.items()},
        "disk_gb": round(disk / 1e9, 2),
        "disk_by_dir_gb": {d.name: round(_bytes(d) / 1e9, 3) for d in sorted(out.iterdir())
                           if d.is_dir()},
        "peak_memory_mb_per_rank": peaks,
        "anchor_melissa_sa_recorded": {"wall_s": ANCHOR_WALL_S, "disk_gb": ANCHOR_DISK_GB},
        "speedup_vs_anchor": round(ANCHOR_WALL_S / wall, 2),
    }
    print(f"wall {wall:.1f} s ({ANCHOR_WALL_S / wall:.2f}x the recorded Melissa-SA "
          f"{ANCHOR_WALL_S} s); disk {disk / 1e9:.2f} GB (recorded Melissa-SA: "
          f"{ANCHOR_DISK_GB} GB)")
    for name, seconds in phases.items():
        print(f"  {name:12s} {seconds:8.2f} s")
    return figures


def _phases(log: list[str], started: float, ended: float) -> dict[str, float]:
    """Phase durations from the server log's timestamps (local time, milliseconds)."""
    def when(pattern: str, last: bool = False) -> float:
        hits = [line for line in log if re.search(pattern, line)]
        if not hits:
            raise SystemExit(f"no {pattern!r} in server.log")
        match = STAMP.match(hits[-1] if last else hits[0])
        assert match is not None
        return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()

    listening = when(r"listening on")
    hello = when(r"field 'u': \d+ cells")
    ready = when(r"MB of statistics state")
    complete = when(r"simulation \d+ complete$", last=True)
    written = when(r"wrote .* in [\d.]+ s", last=True)
    checkpoints = sum(float(m.group(1)) for line in log
                      if (m := re.search(r"checkpoint \S+: [\d.]+ MB in ([\d.]+) s", line)))
    output_s = sum(float(m.group(1)) for line in log
                   if (m := re.search(r"wrote \S+ in ([\d.]+) s", line)))
    return {
        "start": listening - started,
        "wait_clients": hello - listening,
        "allocation": ready - hello,
        "ingest": complete - ready - checkpoints,
        "checkpoints": checkpoints,
        "to_output": written - complete - output_s,
        "output": output_s,
        "finish": ended - written,  # plots, report, processes exiting
    }


def _bytes(path: Path) -> int:
    return sum(os.path.getsize(p) for p in path.rglob("*") if p.is_file())


if __name__ == "__main__":
    main()
