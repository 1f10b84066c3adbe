"""Server ingest throughput: K client processes stream one field to the Melissa server, which
updates the four moments; against raw pyzmq PUSH/PULL of the same bytes, in the same run; with
M = 1 and 2 server ranks, and with Python and C (libmelissa) clients.

Both sides use real processes and tcp://127.0.0.1. Clients connect first, then start sending at a
common wall-clock instant; the time runs from that instant until the receiver has everything
(Melissa: every simulation_complete event on the control channel, i.e. data received, validated
and folded into the statistics). The output phase (NetCDF writing) is timed separately.

    .venv/bin/python bench/ingest.py [--clients 2] [--cells 524288] [--steps 25] [--repeats 3]
                                     [--server-ranks 1 2] [--client-nodes n2 n3]

--client-nodes runs the clients on nodes of the multi-node test cluster (scripts/slurm-cluster.sh
start --nodes N; as root), client i in the network namespace of node i mod len: both receivers
then listen on the bridge's address 127.1.0.1 and the bytes cross veth pairs and the bridge.

The last line printed is one JSON object with the figures and the ratios (target >= 0.5).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq

from melissa.launcher.channel import ServerChannel
from melissa.paths import StudyPaths
from melissa.protocol import token_from_hex
from melissa.protocol.events import SimulationComplete

# Clients start, connect (Melissa: handshake, and the server allocates and touches the statistics
# state, a one-off cost per study) and then wait for this common instant; a client that is late
# makes the run invalid rather than silently slower.
START_DELAY_S = 4.0

MELISSA_CLIENT = """
import os, time, numpy as np, melissa.client as melissa
cells, steps, start = int(os.environ["B_CELLS"]), int(os.environ["B_STEPS"]), float(os.environ["B_START"])
x = np.random.default_rng(int(os.environ["MELISSA_SIMULATION_ID"])).random(cells)
melissa.init("field", cells)
if time.time() > start:
    raise SystemExit("late: raise START_DELAY_S")
while time.time() < start:
    time.sleep(0.0005)
for step in range(steps):
    x[0] = step
    melissa.send("field", x)
melissa.finalize()
"""

# The same sender in C over libmelissa (built here against the installed library with pkg-config).
C_CLIENT = r"""
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <melissa.h>
static double now(void) { struct timeval t; gettimeofday(&t, NULL); return t.tv_sec + t.tv_usec * 1e-6; }
int main(void) {
    int cells = atoi(getenv("B_CELLS")), steps = atoi(getenv("B_STEPS"));
    double start = atof(getenv("B_START"));
    double *x = malloc(sizeof(double) * cells);
    srand(atoi(getenv("MELISSA_SIMULATION_ID")));
    for (int i = 0; i < cells; i++) x[i] = rand() / (double)RAND_MAX;
    if (melissa_init_no_mpi("field", cells)) return 1;
    if (now() > start) { fprintf(stderr, "late: raise START_DELAY_S\n"); return 1; }
    while (now() < start) { struct timespec d = {0, 500000}; nanosleep(&d, NULL); }
    for (int step = 0; step < steps; step++) {
        x[0] = step;
        if (melissa_send("field", x)) return 1;
    }
    return melissa_finalize();
}
"""

RAW_CLIENT = """
import os, time, numpy as np, zmq
cells, steps, start = int(os.environ["B_CELLS"]), int(os.environ["B_STEPS"]), float(os.environ["B_START"])
x = np.random.default_rng(0).random(cells)
sock = zmq.Context().socket(zmq.PUSH)
sock.connect(os.environ["B_ADDRESS"])
header = bytes(72)
if time.time() > start:
    raise SystemExit("late: raise START_DELAY_S")
while time.time() < start:
    time.sleep(0.0005)
for step in range(steps):
    x[0] = step
    tracker = sock.send_multipart([header, x], copy=False, track=True)
    tracker.wait()
sock.send_multipart([b"end"])
sock.close(linger=-1)
"""


HOST = "127.0.0.1"  # where both receivers listen (--client-nodes: the cluster's bridge)
CLIENT_NODES: list[str] = []  # --client-nodes: node i's network namespace runs client i


def client_env(**extra: str) -> dict[str, str]:
    return {**os.environ, **extra}


def client_argv(i: int, argv: list[str]) -> list[str]:
    if not CLIENT_NODES:
        return argv
    node = CLIENT_NODES[i % len(CLIENT_NODES)]
    return ["nsenter", f"--net=/var/run/netns/melissa-{node}", *argv]


def run_raw(clients: int, cells: int, steps: int) -> float:
    ctx = zmq.Context.instance()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port(f"tcp://{HOST}")
    start = time.time() + START_DELAY_S
    env = client_env(B_CELLS=str(cells), B_STEPS=str(steps), B_START=repr(start),
                     B_ADDRESS=f"tcp://{HOST}:{port}")
    procs = [subprocess.Popen(client_argv(i, [sys.executable, "-c", RAW_CLIENT]), env=env)
             for i in range(clients)]
    ends = 0
    while ends < clients:
        frames = pull.recv_multipart(copy=False)
        if len(frames) == 1:
            ends += 1
    elapsed = time.time() - start
    for p in procs:
        if p.wait():
            raise SystemExit("a raw client failed")
    pull.close()
    return elapsed


def build_c_client(workdir: Path) -> list[str] | None:
    """Compile C_CLIENT against the venv's libmelissa; None (with a note) if it is not there."""
    env = {**os.environ, "PKG_CONFIG_PATH": str(Path(sys.prefix) / "lib" / "pkgconfig")}
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "melissa"], env=env,
                           capture_output=True, text=True, check=False)
    if flags.returncode != 0 or shutil.which("cc") is None:
        print(f"note: no C client figures (libmelissa not installed: {flags.stderr.strip()})")
        return None
    source, program = workdir / "sender.c", workdir / "sender"
    source.write_text(C_CLIENT)
    subprocess.run(["cc", "-O2", str(source), "-o", str(program), *flags.stdout.split()],
                   check=True)
    return [str(program)]


MOMENTS = {"mean": True, "variance": True, "skewness": True, "kurtosis": True}


def run_melissa(
    clients: int, cells: int, steps: int, workdir: Path, server_ranks: int = 1,
    client_command: list[str] | None = None, sa_config: dict[str, object] = MOMENTS,
    nb_parameters: int = 1,
) -> tuple[float, float]:
    """Seconds from the common start to the last simulation_complete, and of the output phase.
    With sa_config's sobol_indices, `clients` must be whole groups of nb_parameters + 2."""
    paths = StudyPaths(workdir / f"study_{secrets.token_hex(4)}")
    paths.make_dirs()
    groups = clients // (nb_parameters + 2) if sa_config.get("sobol_indices") else clients
    study = {
        "output_dir": str(paths.root),
        "study_options": {"field_names": ["field"], "nb_time_steps": steps,
                          "parameter_sweep_size": groups},
        "parameters": [{"name": f"p{i}", "distribution": "uniform", "low": 0, "high": 1}
                       for i in range(nb_parameters)],
        "sa_config": sa_config,
        "client_config": {"executable_command": "unused"},
        "server_config": {"ranks": server_ranks, "bind_address": HOST},
    }
    paths.study_file.write_text(json.dumps(study))
    token = secrets.token_hex(16)
    env = client_env(MELISSA_STUDY_TOKEN=token)
    with open(paths.server_log, "w") as log:
        mpi = [str(Path(sys.executable).parent / "mpiexec"), "-n", str(server_ranks)]
        server = subprocess.Popen(
            [*(mpi if server_ranks > 1 else []), sys.executable, "-m", "melissa.server",
             str(paths.root)], env=env, stderr=log)
    while not paths.rendezvous.exists():
        time.sleep(0.02)
    address = json.loads(paths.rendezvous.read_text())["address"]
    channel = ServerChannel(address, token_from_hex(token))
    channel.attach(30)
    start = time.time() + START_DELAY_S
    procs = [
        subprocess.Popen(client_argv(i, client_command or [sys.executable, "-c", MELISSA_CLIENT]),
                         env=client_env(
            MELISSA_SERVER=address, MELISSA_SIMULATION_ID=str(i), MELISSA_STUDY_TOKEN=token,
            B_CELLS=str(cells), B_STEPS=str(steps), B_START=repr(start)))
        for i in range(clients)
    ]
    complete = 0
    while complete < clients:
        for event in channel.wait(5.0):
            complete += isinstance(event, SimulationComplete)
        if server.poll() is not None:
            raise SystemExit(f"server died; see {paths.server_log}")
        if any(p.poll() for p in procs):  # e.g. a client late for the start: no figure
            raise SystemExit("a Melissa client failed (see its message above)")
    elapsed = time.time() - start
    for p in procs:
        if p.wait():
            raise SystemExit("a Melissa client failed")
    t0 = time.time()
    channel.finish()
    server.wait(timeout=300)
    output_s = time.time() - t0
    channel.close()
    return elapsed, output_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--cells", type=int, default=512 * 1024)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--server-ranks", type=int, nargs="+", default=[1, 2],
                        help="server sizes to measure (M > 1 runs under the venv's mpiexec)")
    parser.add_argument("--client-nodes", nargs="+", default=[], metavar="NODE",
                        help="test-cluster nodes (n2 ...) whose network namespaces run the clients")
    args = parser.parse_args()
    global HOST
    if args.client_nodes:
        HOST = "127.1.0.1"
        CLIENT_NODES.extend(args.client_nodes)
    total_bytes = args.clients * args.cells * args.steps * 8
    raw_times: list[float] = []
    melissa_times: dict[int, list[float]] = {m: [] for m in args.server_ranks}
    output_times: dict[int, list[float]] = {m: [] for m in args.server_ranks}
    c_times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        c_client = build_c_client(Path(tmp))
        for _ in range(args.repeats):  # interleaved, so that load changes hit every variant
            raw_times.append(run_raw(args.clients, args.cells, args.steps))
            for m in args.server_ranks:
                elapsed, output_s = run_melissa(
                    args.clients, args.cells, args.steps, Path(tmp), server_ranks=m)
                melissa_times[m].append(elapsed)
                output_times[m].append(output_s)
            if c_client:
                c_times.append(run_melissa(args.clients, args.cells, args.steps, Path(tmp),
                                           client_command=c_client)[0])
    raw = total_bytes / min(raw_times) / 1e9
    where = f", clients on {' '.join(CLIENT_NODES)} to {HOST}" if CLIENT_NODES else ""
    print(f"{args.clients} clients x {args.steps} steps x {args.cells} float64 cells "
          f"= {total_bytes / 1e6:.0f} MB per run, best of {args.repeats}, {os.cpu_count()} cores"
          f"{where}")
    print(f"  raw pyzmq PUSH/PULL                {raw:6.2f} GB/s")
    figures: dict[str, object] = {
        "bench": "ingest", "client_nodes": CLIENT_NODES, "clients": args.clients, "cells": args.cells, "steps": args.steps,
        "bytes": total_bytes, "raw_gbps": round(raw, 3),
    }
    for m in args.server_ranks:
        mel = total_bytes / min(melissa_times[m]) / 1e9
        print(f"  melissa, {m} server rank(s), 4 moments {mel:6.2f} GB/s   ratio {mel / raw:.2f}"
              f"   output phase {min(output_times[m]):.2f} s")
        figures[f"melissa_m{m}_gbps"] = round(mel, 3)
        figures[f"ratio_m{m}"] = round(mel / raw, 3)
        figures[f"output_m{m}_s"] = round(min(output_times[m]), 3)
    if c_times:
        mel = total_bytes / min(c_times) / 1e9
        print(f"  melissa, 1 server rank, C clients  {mel:6.2f} GB/s   ratio {mel / raw:.2f}")
        figures["melissa_c_clients_gbps"] = round(mel, 3)
        figures["ratio_c_clients"] = round(mel / raw, 3)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
