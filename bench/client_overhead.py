"""Client overhead: wall time of the C heat equation (examples/heat_equation/c) with and without
Melissa, in the same run: the same binary with `--no-send` (computes, never calls Melissa)
against sending (melissa_init, one melissa_send per output step, melissa_finalize, to a real
Melissa server computing mean, variance, min and max), in libmelissa's two send modes: the
default (the values are copied into a buffer of the field's and sent while the simulation goes
on) and MELISSA_ZERO_COPY=1 (sent from the simulation's array; melissa_send waits until ZeroMQ
is done with it). The ratios are what a simulation pays.

Each process is timed from its start to its exit (so the handshake and the final acknowledgement
are included); runs alternate between the variants so that load changes hit all of them. The
ratios are of the best (minimum) wall times, the least disturbed by other load; medians and the
CPU time of the simulation's process (all its threads, ZeroMQ's I/O thread included) are
reported too.

    .venv/bin/python bench/client_overhead.py [--repeats 5] [--case NX NY STEPS ...]

Default cases: the demo's grid (100 x 100, 100 steps: 80 KB per step, 49 sub-iterations per
step, 0.07 s in all), a longer run (200 x 200, 200 steps: 320 KB every 99 sub-iterations) and
a send-heavy one (100 x 100, 1000 steps: 80 KB every 5 sub-iterations). The server runs on the
same machine, so on few cores it competes with the simulation for the CPU: the ratios include
the server's work. Needs `make install` (libmelissa) and a C compiler. The last line printed is
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from melissa.launcher.channel import ServerChannel
from melissa.paths import StudyPaths

REPO = Path(__file__).resolve().parents[1]
PARAMETERS = ["300.0", "150.0", "450.0", "200.0", "350.0", "1.0"]  # heat.py's order


def build(workdir: Path) -> Path:
    make = shutil.which("make")
    if make is None:
        raise SystemExit("make not found")
    proc = subprocess.run([make, "-s", "-C", str(REPO / "examples" / "heat_equation" / "c"),
                           f"OUT={workdir}", f"VENV={sys.prefix}", f"{workdir}/heat_serial"],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"cannot build the C heat equation (run `make install` first):\n"
                         f"{proc.stdout}{proc.stderr}")
    return workdir / "heat_serial"


def start_server(root: Path, steps: int) -> tuple[subprocess.Popen[bytes], str, str,
                                                    ServerChannel]:
    paths = StudyPaths(root)
    paths.make_dirs()
    paths.study_file.write_text(json.dumps({
        "output_dir": str(paths.root),
        "study_options": {"field_names": ["temperature"], "nb_time_steps": steps,
                          "parameter_sweep_size": 1000},
        "parameters": [{"name": "p", "distribution": "uniform", "low": 0, "high": 1}],
        "sa_config": {"mean": True, "variance": True},
        "client_config": {"executable_command": "unused"},
    }))
    token = secrets.token_hex(16)
    with open(paths.server_log, "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "melissa.server", str(paths.root)],
                                  env={**os.environ, "MELISSA_STUDY_TOKEN": token}, stderr=log)
    deadline = time.monotonic() + 60
    while not paths.rendezvous.exists():
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the server did not start; see {paths.server_log}")
        time.sleep(0.02)
    address = json.loads(paths.rendezvous.read_text())["address"]
    channel = ServerChannel(address, bytes.fromhex(token))
    channel.attach(30)
    return server, address, token, channel


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall time, CPU time) of one run of `cmd`."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(cmd)} failed:\n{err.read().decode()}")
    return elapsed, usage.ru_utime + usage.ru_stime


def measure(heat: Path, nx: int, ny: int, steps: int, repeats: int, workdir: Path) -> dict:
    server, address, token, channel = start_server(workdir / f"study_{nx}x{ny}x{steps}", steps)
    cmd = [str(heat), *PARAMETERS, "--nx", str(nx), "--ny", str(ny), "--steps", str(steps)]
    times: dict[str, list[tuple[float, float]]] = {"off": [], "on": [], "zero_copy": []}
    sim = 0
    try:
        timed([*cmd, "--no-send"], dict(os.environ))  # warm the page cache
        for _ in range(repeats):
            times["off"].append(timed([*cmd, "--no-send"], dict(os.environ)))
            for mode, zero_copy in (("on", "0"), ("zero_copy", "1")):
                times[mode].append(timed(cmd, {
                    **os.environ, "MELISSA_SERVER": address, "MELISSA_SIMULATION_ID": str(sim),
                    "MELISSA_STUDY_TOKEN": token, "MELISSA_ZERO_COPY": zero_copy}))
                sim += 1
        channel.finish()
        server.wait(timeout=300)
    finally:
        server.kill()
        channel.close()
    best = {mode: min(w for w, _ in v) for mode, v in times.items()}
    median = {mode: statistics.median(w for w, _ in v) for mode, v in times.items()}
    cpu = {mode: statistics.median(c for _, c in v) for mode, v in times.items()}
    return {"nx": nx, "ny": ny, "steps": steps, "bytes_per_step": nx * ny * 8,
            "time_off_s": round(best["off"], 4), "time_on_s": round(best["on"], 4),
            "time_zero_copy_s": round(best["zero_copy"], 4),
            "ratio": round(best["on"] / best["off"], 3),
            "ratio_zero_copy": round(best["zero_copy"] / best["off"], 3),
            "overhead_per_step_us": round((best["on"] - best["off"]) / steps * 1e6, 1),
            "median_ratio": round(median["on"] / median["off"], 3),
            "median_ratio_zero_copy": round(median["zero_copy"] / median["off"], 3),
            "cpu_off_s": round(cpu["off"], 4), "cpu_on_s": round(cpu["on"], 4),
            "cpu_zero_copy_s": round(cpu["zero_copy"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--case", type=int, nargs=3, action="append", metavar=("NX", "NY", "STEPS"),
                        help="grid and output steps (repeatable)")
    args = parser.parse_args()
    cases = args.case or [(100, 100, 100), (200, 200, 200), (100, 100, 1000)]
    results = []
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        heat = build(Path(tmp))
        for nx, ny, steps in cases:
            results.append(measure(heat, nx, ny, steps, args.repeats, Path(tmp)))
    print(f"C heat equation, best of {args.repeats} runs each, {os.cpu_count()} cores, "
          f"{platform.processor() or platform.machine()}, load average {load:.1f}")
    for r in results:
        print(f"  {r['nx']}x{r['ny']}, {r['steps']} steps ({r['bytes_per_step'] / 1e3:.0f} KB/step):"
              f" without Melissa {r['time_off_s']:.3f} s; with {r['time_on_s']:.3f} s,"
              f" ratio {r['ratio']:.3f} ({r['overhead_per_step_us']:.0f} us per step);"
              f" MELISSA_ZERO_COPY=1 {r['time_zero_copy_s']:.3f} s,"
              f" ratio {r['ratio_zero_copy']:.3f}; medians: {r['median_ratio']:.3f},"
              f" {r['median_ratio_zero_copy']:.3f}; CPU s (off/on/zero-copy): {r['cpu_off_s']:.3f}"
              f" / {r['cpu_on_s']:.3f} / {r['cpu_zero_copy_s']:.3f}")
    print(json.dumps({"bench": "client_overhead", "repeats": args.repeats, "cores": os.cpu_count(),
                      "load_average": round(load, 2), "cases": results,
                      "ratio_demo_grid": results[0]["ratio"]}))


if __name__ == "__main__":
    main()
