"""Studies through melissa-launcher on the live OAR test cluster (scripts/oar-cluster.sh: nodes
o1..o3, network namespaces at 127.1.1.11..13): the server on o1 and the simulations on the other
nodes give NumPy's statistics; a simulation that exits non-zero and one OAR kills at its walltime
are recorded as failures and resubmitted; a killed launcher's OAR jobs are adopted by --resume.
Where each job ran is OAR's own word (`oarstat -f -J`: assigned_network_address)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.test_multinode import SIMS, assert_equals_numpy, study_config
from tests.integration.conftest import run_launcher, start_launcher
from tests.integration.test_parallel import SIMULATION

pytestmark = pytest.mark.oar

O1 = "127.1.1.11"
# The server on o1, each simulation on one core of o2 or o3 (OAR's -p is an SQL filter on the
# resources' properties, set by scripts/oar-cluster.sh).
SERVER_ARGS = ["-p", "host='o1'", "-l", "/core=1,walltime=0:10:0"]
CLIENT_ARGS = ["-p", "host<>'o1'", "-l", "/core=1,walltime=0:05:0"]


def oar_config(**launcher: Any) -> dict[str, Any]:
    """The multi-node Slurm tests' study, through OAR."""
    config = study_config()
    config["launcher_config"] = {"scheduler": "oar", "job_limit": SIMS,
                                 "scheduler_arg_server": SERVER_ARGS,
                                 "scheduler_arg_client": CLIENT_ARGS, **launcher}
    return config


def job_ids(run_dir: Path) -> dict[str, list[str]]:
    """Job name ("server", "simulation 3") -> its OAR job ids, from the launcher's log."""
    log = (run_dir / "logs" / "launcher.log").read_text()
    ids: dict[str, list[str]] = {}
    for job in re.findall(r"server job (\d+)", log):
        ids.setdefault("server", []).append(job)
    for sim, job in re.findall(r"simulation (\d+) \(attempt \d+\) submitted as job (\d+)", log):
        ids.setdefault(f"simulation {sim}", []).append(job)
    return ids


def all_jobs(ids: dict[str, list[str]]) -> list[str]:
    return [j for js in ids.values() for j in js]


def oarstat(ids: list[str]) -> dict[str, dict[str, Any]]:
    argv = ["oarstat", "-f", "-J"] + [a for j in ids for a in ("-j", j)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout
    return json.loads(out)


def test_sa_study_server_and_simulations_on_different_oar_nodes(tmp_path: Path) -> None:
    (tmp_path / "sim.py").write_text(SIMULATION)
    run = run_launcher(oar_config(), tmp_path, timeout=300)
    assert run.returncode == 0, run.output
    assert_equals_numpy(run)
    ids = job_ids(run.output_dir)
    jobs = oarstat(all_jobs(ids))
    assert jobs[ids["server"][0]]["assigned_network_address"] == [O1]
    clients = {a for name, js in ids.items() if name != "server"
               for j in js for a in jobs[j]["assigned_network_address"]}
    assert clients and O1 not in clients, clients
    assert all(jobs[j]["state"] == "Terminated" and jobs[j]["exit_code"] == 0
               for js in ids.values() for j in js), jobs
    # o1's own address, which the clients in other namespaces reached it at.
    assert f'"address": "tcp://{O1}:' in (run.output_dir / "server.json").read_text()
    script = (run.output_dir / "jobs" / "simulation_000001.sh").read_text()
    assert "#OAR -l" not in script  # the user's -l replaces the backend's /core=<ranks>


def test_two_rank_server_through_mpirun_on_one_oar_node(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A job of several ranks: `mpirun -machinefile "$OAR_NODE_FILE"` on the node OAR gave it
    (within one node: across nodes mpirun needs oarsh, which needs OAR's cpuset manager, which the
    namespace nodes cannot run; docs/schedulers.md)."""
    monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT", "1")  # the tests run as root
    monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    (tmp_path / "sim.py").write_text(SIMULATION)
    config = oar_config(scheduler_arg_server=["-p", "host='o1'", "-l",
                                              "/host=1/core=2,walltime=0:10:0"])
    config["server_config"]["ranks"] = 2
    run = run_launcher(config, tmp_path, timeout=300)
    assert run.returncode == 0, run.output
    assert_equals_numpy(run, server_ranks=2)
    server = oarstat(job_ids(run.output_dir)["server"])
    assert next(iter(server.values()))["assigned_network_address"] == [O1]
    assert 'mpirun -np 2 -machinefile "$OAR_NODE_FILE"' in (
        run.output_dir / "jobs" / "server.sh").read_text()


# Attempt 0 of simulation 0 exits 3, attempt 0 of simulation 1 outlives its 20 s walltime;
# their resubmissions (MELISSA_ATTEMPT=1) and the other simulations complete.
FAILING = SIMULATION.replace("import numpy as np", """import numpy as np
import os
import time as _time
if os.environ["MELISSA_ATTEMPT"] == "0" and os.environ["MELISSA_SIMULATION_ID"] == "0":
    sys.exit(3)
if os.environ["MELISSA_ATTEMPT"] == "0" and os.environ["MELISSA_SIMULATION_ID"] == "1":
    _time.sleep(300)""", 1)


def test_failed_and_walltime_killed_simulations_are_resubmitted(tmp_path: Path) -> None:
    (tmp_path / "sim.py").write_text(FAILING)
    config = oar_config(scheduler_arg_client=["-p", "host<>'o1'", "-l", "/core=1,walltime=0:0:20"])
    config["study_options"]["simulation_timeout"] = 600.0  # OAR, not the launcher, ends it
    run = run_launcher(config, tmp_path, timeout=400)
    assert run.returncode == 0, run.output
    assert_equals_numpy(run)
    rows = {int(r["simulation_id"]): r for r in run.parameters()}
    assert rows[0]["message"] == "attempt 0: exited with status 3, resubmitted", rows[0]
    assert rows[1]["message"].startswith(
        "attempt 0: killed at its walltime (OAR WALLTIME event)"), rows[1]
    assert rows[1]["message"].endswith(", resubmitted"), rows[1]
    ids = job_ids(run.output_dir)
    assert len(ids["simulation 0"]) == len(ids["simulation 1"]) == 2, ids
    first = oarstat([ids["simulation 0"][0], ids["simulation 1"][0]])
    assert first[ids["simulation 0"][0]]["exit_code"] == 3 << 8
    assert "WALLTIME" in {e["type"] for e in first[ids["simulation 1"][0]]["events"]}


def test_killed_launcher_resumes_adopting_its_oar_jobs(tmp_path: Path) -> None:
    """The resumed launcher follows the dead one's OAR jobs and stops them with oardel (its new
    server restarts from the checkpoint, the clients of the old one are resubmitted)."""
    # Slow simulations (10 s a step) keep their jobs running across the launcher's death.
    (tmp_path / "sim.py").write_text(SIMULATION.replace(
        "import numpy as np", "import numpy as np\nimport time as _time", 1).replace(
        "melissa.send(", "_time.sleep(10); melissa.send(", 1))
    config = oar_config()
    launcher = start_launcher(tmp_path, config)
    out = tmp_path / "out"
    deadline = time.monotonic() + 120
    try:
        while True:  # until every simulation's job runs
            ids = job_ids(out) if (out / "logs" / "launcher.log").exists() else {}
            if len(ids) == SIMS + 1:
                states = {j: job["state"] for j, job in oarstat(all_jobs(ids)).items()}
                if set(states.values()) == {"Running"}:
                    break
            assert launcher.poll() is None and time.monotonic() < deadline, "no jobs running"
            time.sleep(0.5)
    finally:
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.communicate()
    run = run_launcher(config, tmp_path, "--resume", timeout=300)
    assert run.returncode == 0, run.output
    assert_equals_numpy(run)
    after = job_ids(out)
    old = oarstat(all_jobs(ids))
    events = {j: {e["type"] for e in job["events"]} for j, job in old.items()}
    assert all(job["state"] in ("Error", "Terminated") for job in old.values()), old
    assert "FRAG_JOB_REQUEST" in events[ids["server"][0]]  # oardel by the new launcher
    deleted = 0
    rows = {f"simulation {r['simulation_id']}": r for r in run.parameters()}
    for name, js in ids.items():
        assert after[name][0] == js[0], (name, ids, after)
        if name == "server":
            continue
        if len(after[name]) == 1:  # complete in the server's checkpoint before the kill
            assert rows[name]["attempts"] == "1", rows[name]
        else:
            assert rows[name]["message"] == "attempt 0: stopped, the server was restarted"
            deleted += "FRAG_JOB_REQUEST" in events[js[0]]
    assert deleted > 0, (events, rows)  # running simulations were adopted, then oardel-ed
    log = (run.output_dir / "logs" / "launcher.log").read_text()
    assert "resumed: 0 simulations completed" in log, log
