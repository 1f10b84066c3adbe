"""Studies on the multi-node test cluster (one network namespace per node): the server on some
nodes, the simulations on others, reaching it at the address it advertises for
`bind_address` 0.0.0.0; sacct's node lists say where each job ran. Statistics equal NumPy."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from tests.integration.conftest import LauncherRun, run_launcher
from tests.integration.test_parallel import SIMULATION, SIZE, STEPS, field

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("multinode")]

SIMS = 6


def study_config(**changes: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {
        "output_dir": "out",
        "study_options": {"field_names": ["u"], "nb_time_steps": STEPS,
                          "parameter_sweep_size": SIMS, "seed": 7},
        "parameters": [{"name": "a", "distribution": "uniform", "low": 0, "high": 2},
                       {"name": "b", "distribution": "normal", "mean": 0, "std": 0.1}],
        "sa_config": {"mean": True, "variance": True, "min": True, "max": True,
                      "plot_time_steps": []},
        "client_config": {"executable_command": f"{sys.executable} sim.py"},
        # All the user says for a cluster: Slurm, and a server listening on every interface.
        "server_config": {"bind_address": "0.0.0.0"},
        "launcher_config": {"scheduler": "slurm", "job_limit": SIMS,
                            "mpi_launcher_args": ["--mpi=pmi2"]},
    }
    for section, values in changes.items():
        config[section] = {**config[section], **values}
    return config


def run_study(tmp_path: Path, config: dict[str, Any]) -> LauncherRun:
    (tmp_path / "sim.py").write_text(SIMULATION)
    run = run_launcher(config, tmp_path, timeout=300)
    if run.returncode != 0 and _pmi2_start_up_failed(run):
        # Known, open: a server of several ranks over srun's PMI2 across the namespace nodes
        # sometimes dies in MPI_Init (slurmstepd "mpi/pmi2: invalid client request", then a UCX
        # address assertion), before any Melissa code runs; seen in 2 of 4 loaded CI runs. The
        # study is run once more in a new directory; a second failure fails the test.
        retry = tmp_path / "retry"
        retry.mkdir()
        (retry / "sim.py").write_text(SIMULATION)
        run = run_launcher(config, retry, timeout=300)
    assert run.returncode == 0, run.output
    return run


def _pmi2_start_up_failed(run: LauncherRun) -> bool:
    log = run.output_dir / "logs" / "server.log"
    return log.exists() and "mpi/pmi2: invalid client request" in log.read_text(errors="replace")


def assert_equals_numpy(run: LauncherRun, server_ranks: int = 1) -> None:
    rows = run.parameters()
    assert len(rows) == SIMS and {r["status"] for r in rows} == {"completed"}, rows
    x = np.array([[field(float(r["a"]), float(r["b"]), t) for t in range(STEPS)] for r in rows])
    with xr.open_dataset(run.output_dir / "statistics" / "u.nc") as ds:
        assert ds.attrs["server_ranks"] == server_ranks
        assert ds["mean"].shape == (STEPS, SIZE)
        for name, expected in [("mean", x.mean(axis=0)), ("variance", x.var(axis=0, ddof=1)),
                               ("minimum", x.min(axis=0)), ("maximum", x.max(axis=0))]:
            np.testing.assert_allclose(ds[name].values, expected, rtol=1e-10, atol=1e-12,
                                       err_msg=name)


def job_nodes(run: LauncherRun) -> dict[str, set[str]]:
    """Job name -> the nodes it ran on, from sacct (for the jobs the launcher log names)."""
    log = (run.output_dir / "logs" / "launcher.log").read_text()
    ids = sorted(set(re.findall(r"(?:server job|submitted as job) (\d+)", log)))
    # Only this study's jobs: a cluster re-created on the same accounting database (a second
    # test run on one machine) numbers its jobs from the start again, so an id may also name an
    # older job; keep the newest record of each id, submitted since this study started.
    started = log[:19].replace(" ", "T")
    # slurmdbd records jobs asynchronously: under load the last ones appear a little later.
    deadline = time.monotonic() + 60
    while True:
        out = subprocess.run(["sacct", "--allocations", "--noheader", "--parsable2",
                              f"--starttime={started}", f"--jobs={','.join(ids)}",
                              "--format=JobID,Submit,JobName,NodeList"],
                             capture_output=True, text=True, check=True, timeout=30).stdout
        newest: dict[str, tuple[str, str, str]] = {}
        for line in out.splitlines():
            job, submit, name, node_list = line.split("|")
            if submit >= started and submit >= newest.get(job, ("",))[0]:
                newest[job] = (submit, name, node_list)
        # ... and a job's name reaches it after the job (a moment named "allocation").
        named = all(n == "server" or n.startswith("simulation_") for _, n, _ in newest.values())
        if (len(newest) >= len(ids) and named) or time.monotonic() > deadline:
            break
        time.sleep(1)
    nodes: dict[str, set[str]] = {}
    for _, name, node_list in newest.values():
        expanded = subprocess.run(["scontrol", "show", "hostnames", node_list],
                                  capture_output=True, text=True, check=True, timeout=30).stdout
        nodes[name] = set(expanded.split())
    return nodes


def server_address(run: LauncherRun) -> str:
    return (run.output_dir / "server.json").read_text()


@pytest.mark.parametrize("encryption", [False, True], ids=["plain", "encrypted"])
def test_server_on_one_node_clients_on_others(tmp_path: Path, encryption: bool) -> None:
    run = run_study(tmp_path, study_config(
        server_config={"encryption": encryption},
        launcher_config={"scheduler_arg_server": ["--nodelist=n1"],
                         "scheduler_arg_client": ["--exclude=n1"]}))
    assert_equals_numpy(run)
    nodes = job_nodes(run)
    assert nodes["server"] == {"n1"}
    clients = set().union(*(v for k, v in nodes.items() if k.startswith("simulation_")))
    assert len([k for k in nodes if k.startswith("simulation_")]) == SIMS
    # Never on the server's node. Both n2 and n3 only if Slurm placed the last ones while the
    # first 4 (of n2's 4 CPUs) still ran: short simulations on a loaded machine all fit on n2.
    assert clients and clients <= {"n2", "n3"}, nodes
    # n1's own address, which the clients in other namespaces reached it at.
    assert '"address": "tcp://127.1.0.11:' in server_address(run)
    if encryption:
        assert '"public_key"' in server_address(run)


def test_two_server_ranks_on_two_nodes_two_rank_clients(tmp_path: Path) -> None:
    run = run_study(tmp_path, study_config(
        client_config={"ranks": 2},
        server_config={"ranks": 2},
        launcher_config={"scheduler_arg_server": ["--nodes=2", "--nodelist=n1,n2"],
                         "scheduler_arg_client": ["--nodes=2", "--exclude=n1"]}))
    assert_equals_numpy(run, server_ranks=2)
    nodes = job_nodes(run)
    assert nodes["server"] == {"n1", "n2"}
    for name, where in nodes.items():
        if name.startswith("simulation_"):
            assert where == {"n2", "n3"}, (name, where)  # each client spans two nodes
