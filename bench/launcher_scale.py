"""Launcher scale: N trivial simulations through melissa-launcher against a bare process pool
starting the same processes against the same server, in the same run.

A trivial simulation is a C program over libmelissa (built here with pkg-config) that sends one
time step of 4 cells and exits: its own cost is a few milliseconds, so what is measured is the
launcher's cost per simulation. Both sides run job_limit simulations at once, start the server
(`python -m melissa.server`), wait for every simulation, ask for the results and wait for the
server to exit; the wall time covers all of it. Each side runs in its own child process, whose
peak resident memory (VmHWM) and CPU time (its own, without the server's and the simulations')
are reported; the launcher's scheduler calls are counted by a wrapper around its backend.

    .venv/bin/python bench/launcher_scale.py [--sizes 1000 5000 10000] [--job-limit 8]
                                              [--repeats 1] [--scheduler local]

`--scheduler` picks the launcher's backend (by launcher_config.scheduler's name) and the bare
pool to compare it with (BASELINES). The last line printed is one JSON object with the figures;
ratio = pool wall time / launcher wall time (target >= 0.8).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from melissa.config import load_config
from melissa.launcher.channel import ServerChannel
from melissa.launcher.cli import run_study
from melissa.launcher.schedulers import make_scheduler
from melissa.launcher.schedulers.counting import CountingScheduler
from melissa.paths import StudyPaths
from melissa.protocol import token_from_hex
from melissa.protocol.events import SimulationComplete

TRIVIAL = r"""
#include <stdlib.h>
#include <melissa.h>
int main(int argc, char **argv) {
    double x[4] = {argc > 1 ? atof(argv[1]) : 0.0, 1.0, 2.0, 3.0};
    if (melissa_init_no_mpi("u", 4)) return 1;
    if (melissa_send("u", x)) return 2;
    return melissa_finalize();
}
"""


def build_trivial(workdir: Path) -> str:
    env = {**os.environ, "PKG_CONFIG_PATH": str(Path(sys.prefix) / "lib" / "pkgconfig")}
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "melissa"], env=env,
                           capture_output=True, text=True, check=False)
    if flags.returncode != 0 or shutil.which("cc") is None:
        raise SystemExit(f"launcher_scale needs cc and libmelissa (make install): "
                         f"{flags.stderr.strip()}")
    libdir = Path(sys.prefix) / "lib" / "melissa"
    source, program = workdir / "trivial.c", workdir / "trivial"
    source.write_text(TRIVIAL)
    subprocess.run(["cc", "-O2", str(source), "-o", str(program), *flags.stdout.split(),
                    f"-Wl,-rpath,{libdir}"], check=True)
    return str(program)


def study_config(n: int, job_limit: int, program: str, scheduler: str) -> dict[str, Any]:
    return {
        "output_dir": "out",
        "study_options": {"field_names": ["u"], "nb_time_steps": 1, "parameter_sweep_size": n,
                          "seed": 1},
        "parameters": [{"name": "a", "distribution": "uniform", "low": 0, "high": 1}],
        "sa_config": {"mean": True, "variance": True, "plot_time_steps": []},
        "client_config": {"executable_command": program},
        "launcher_config": {"job_limit": job_limit, "scheduler": scheduler},
    }


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_launcher(workdir: Path, config: dict[str, Any]) -> dict[str, Any]:
    path = workdir / "config.json"
    path.write_text(json.dumps(config))
    loaded = load_config(str(path))
    scheduler = CountingScheduler(make_scheduler(loaded.config.launcher_config,
                                                 StudyPaths(loaded.output_dir)))
    console = Console(file=io.StringIO(), width=200)
    t0, c0 = time.monotonic(), cpu_s()
    code = run_study(loaded, console, overwrite=True, scheduler=scheduler)
    wall, cpu = time.monotonic() - t0, cpu_s() - c0
    if code != 0:
        raise SystemExit(f"the launcher failed ({code}): {console.file.getvalue()[-2000:]}")  # type: ignore[attr-defined]
    return {"wall_s": wall, "cpu_s": cpu, "peak_mb": peak_rss_mb(), "calls": dict(scheduler.calls)}


def run_local_pool(workdir: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The same server and simulations with no launcher: a bare pool of job_limit processes
    (os.wait reaps whichever ends first)."""
    n = config["study_options"]["parameter_sweep_size"]
    limit = config["launcher_config"]["job_limit"]
    paths = StudyPaths(workdir / "pool")
    paths.make_dirs()
    paths.study_file.write_text(json.dumps({**config, "output_dir": str(paths.root)}))
    token = secrets.token_hex(16)
    env = {**os.environ, "MELISSA_STUDY_TOKEN": token}
    t0, c0 = time.monotonic(), cpu_s()
    with open(paths.server_log, "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "melissa.server", str(paths.root)],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
    while not paths.rendezvous.exists():
        time.sleep(0.02)
    address = json.loads(paths.rendezvous.read_text())["address"]
    channel = ServerChannel(address, token_from_hex(token))
    channel.attach(60)
    argv = [config["client_config"]["executable_command"]]
    env = {**env, "MELISSA_SERVER": address, "MELISSA_ATTEMPT": "0"}
    quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
    running: set[int] = set()
    complete = failed = started = 0
    while started < n or running:
        while started < n and len(running) < limit:
            pid = os.posix_spawn(argv[0], [*argv, repr(started / n)],
                                 {**env, "MELISSA_SIMULATION_ID": str(started)},
                                 file_actions=quiet)
            running.add(pid)
            started += 1
        pid, status = os.wait()
        if pid == server.pid:
            raise SystemExit(f"the pool's server died; see {paths.server_log}")
        running.discard(pid)
        failed += status != 0
        complete += sum(isinstance(e, SimulationComplete) for e in channel.events())
    while complete < n - failed:
        complete += sum(isinstance(e, SimulationComplete) for e in channel.wait(5.0))
    channel.finish()
    if server.wait(timeout=600):
        raise SystemExit(f"the pool's server failed; see {paths.server_log}")
    channel.close()
    wall, cpu = time.monotonic() - t0, cpu_s() - c0
    if failed:
        raise SystemExit(f"{failed} simulations of the pool failed")
    return {"wall_s": wall, "cpu_s": cpu, "peak_mb": peak_rss_mb(), "calls": {}}


# launcher_config.scheduler -> the bare pool that starts the same simulations without Melissa.
BASELINES: dict[str, Callable[[Path, dict[str, Any]], dict[str, Any]]] = {
    "local": run_local_pool,
}


def child(args: argparse.Namespace) -> None:
    workdir = Path(args.workdir)
    config = study_config(args.n, args.job_limit, args.program, args.scheduler)
    run = run_launcher if args.child == "launcher" else BASELINES[args.scheduler]
    print(json.dumps(run(workdir, config)))


def measure(side: str, n: int, args: argparse.Namespace, program: str, tmp: Path) -> dict[str, Any]:
    workdir = tmp / f"{side}_{n}"
    workdir.mkdir()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", side, "--n", str(n), "--job-limit",
         str(args.job_limit), "--scheduler", args.scheduler, "--program", program,
         "--workdir", str(workdir)],
        capture_output=True, text=True, check=False, timeout=7200)
    if proc.returncode != 0:
        raise SystemExit(f"{side} N={n} failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    shutil.rmtree(workdir)
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--job-limit", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each side per size (interleaved; the best is reported)")
    parser.add_argument("--scheduler", default="local", choices=sorted(BASELINES))
    parser.add_argument("--child", choices=["launcher", "pool"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--program", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        program = build_trivial(Path(tmp))
        print(f"{args.scheduler} scheduler, job_limit {args.job_limit}, {os.cpu_count()} cores, "
              f"best of {args.repeats}, load average {os.getloadavg()[0]:.1f} at the start")
        print(f"{'N':>6} {'pool s':>8} {'launcher s':>10} {'ratio':>6} {'ms/sim':>7} "
              f"{'cpu ms/sim':>10} {'peak MB':>8} {'pool MB':>8} {'calls/sim':>9}")
        for n in args.sizes:
            # Interleaved, best wall time of each side: a load spike on a shared machine hits
            # one run, not the figure.
            pools, launchers = [], []
            for _ in range(args.repeats):
                pools.append(measure("pool", n, args, program, Path(tmp)))
                launchers.append(measure("launcher", n, args, program, Path(tmp)))
            pool = min(pools, key=lambda r: r["wall_s"])
            launcher = min(launchers, key=lambda r: r["wall_s"])
            calls = launcher["calls"]
            per_sim = (calls.get("submit", 0) + calls.get("poll", 0) + calls.get("cancel", 0)) / n
            row = {"n": n, "pool_s": round(pool["wall_s"], 2),
                   "launcher_s": round(launcher["wall_s"], 2),
                   "ratio": round(pool["wall_s"] / launcher["wall_s"], 3),
                   "launcher_cpu_ms_per_sim": round(1000 * launcher["cpu_s"] / n, 3),
                   "launcher_peak_mb": round(launcher["peak_mb"], 1),
                   "pool_peak_mb": round(pool["peak_mb"], 1),
                   "scheduler_calls_per_sim": round(per_sim, 2), "calls": calls}
            rows.append(row)
            print(f"{n:>6} {row['pool_s']:>8.1f} {row['launcher_s']:>10.1f} {row['ratio']:>6.2f} "
                  f"{1000 * launcher['wall_s'] / n:>7.2f} {row['launcher_cpu_ms_per_sim']:>10.2f} "
                  f"{row['launcher_peak_mb']:>8.1f} {row['pool_peak_mb']:>8.1f} {per_sim:>9.2f}",
                  flush=True)
    print(json.dumps({"bench": "launcher_scale", "scheduler": args.scheduler,
                      "job_limit": args.job_limit, "cores": os.cpu_count(), "rows": rows}))


if __name__ == "__main__":
    main()
