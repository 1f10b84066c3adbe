"""OAR backend without a cluster: batch script against a golden file, parsers on oarstat/oarsub
outputs written from OAR 2.5's sources (captured/README.md), the state mapping."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from melissa.errors import SchedulerError, SubmissionError
from melissa.launcher.schedulers.base import JobSpec, JobState, JobStatus
from melissa.launcher.schedulers.oar import (
    OarRecord,
    oar_script,
    oar_status,
    oarsub_argv,
    parse_oarstat,
    parse_oarsub,
)
from tests.unit.golden import check_golden

CAPTURED = Path(__file__).parent / "captured"


SPEC = JobSpec(
    name="simulation_000003",
    argv=["python3", "sim.py", "0.25", "it's"],
    env={"MELISSA_STUDY_TOKEN": "ab" * 16, "PATH": "/venv/bin:/usr/bin", "PWD": "/x",
         "OAR_NODE_FILE": "/old", "BASH_FUNC_f%%": "() { :; }", "QUOTE": "a 'b' $c"},
    cwd=Path("/home/me/my study"),
    log_path=Path("/home/me/out/logs/simulation_000003.log"),
)


def spec(**changes: Any) -> JobSpec:
    return replace(SPEC, **changes)


def test_script_matches_golden() -> None:
    script = oar_script(spec(scheduler_args=("-q", "besteffort")))
    check_golden("oar_simulation.sh", script)
    # The environment is in the script (OAR does not pass it on), minus what OAR and the
    # job's shell set themselves and what a shell cannot name.
    assert f"export MELISSA_STUDY_TOKEN={'ab' * 16}" in script
    assert "OAR_NODE_FILE=/old" not in script and "PWD=" not in script
    assert "BASH_FUNC" not in script


def test_mpi_script_matches_golden() -> None:
    script = oar_script(
        spec(name="server", ranks=4, env={"MELISSA_STUDY_TOKEN": "cd" * 16},
             scheduler_args=("-l", "nodes=2,walltime=1:00:00")),
        mpi_launcher_args=["-mca", "plm_rsh_agent", "oarsh"],
    )
    check_golden("oar_mpi_server.sh", script)
    assert "#OAR -l" not in script  # the user asked for resources: no default


def test_scheduler_arguments_go_on_the_command_line() -> None:
    s = spec(scheduler_args=("-l", "core=2,walltime=0:30:0", "--project", "p1"))
    assert oarsub_argv(s, Path("/o/jobs/simulation_000003.sh")) == [
        "oarsub", "-l", "core=2,walltime=0:30:0", "--project", "p1",
        "-S", "/o/jobs/simulation_000003.sh"]


@pytest.mark.parametrize(
    ("changes", "what"),
    [({"log_path": Path("/home/me/my out/x.log")}, "the log path '/home/me/my out/x.log'"),
     ({"name": "sim;rm"}, "the job name 'sim;rm'")],
)
def test_what_oar_takes_literally_is_refused(changes: dict[str, object], what: str) -> None:
    with pytest.raises(SubmissionError, match="holds characters OAR takes literally") as info:
        oar_script(spec(**changes))
    assert what in str(info.value)
    with pytest.raises(SubmissionError, match="the job script path '/my dir/x.sh'"):
        oarsub_argv(spec(), Path("/my dir/x.sh"))


def test_oarsub_output() -> None:
    assert parse_oarsub((CAPTURED / "oarsub.txt").read_text()) == "4101"
    with pytest.raises(SchedulerError, match="oarsub printed no OAR_JOB_ID: '.*Bad resource"):
        parse_oarsub("[ADMISSION RULE] Bad resource request\n")


def test_oarstat_full_json() -> None:
    by_id = {r.job_id: oar_status(r)
             for r in parse_oarstat((CAPTURED / "oarstat_full.json").read_text())}
    assert by_id["4101"] == JobStatus(JobState.COMPLETED, 0)
    assert by_id["4102"] == JobStatus(JobState.FAILED, 3, "exited with status 3")
    walltime = by_id["4103"]
    assert walltime.state == JobState.FAILED and walltime.exit_code is None
    assert "killed at its walltime (OAR WALLTIME event)" in walltime.message
    assert by_id["4104"] == JobStatus(JobState.CANCELLED, -15, "deleted (oardel)")
    assert by_id["4105"] == JobStatus(JobState.RUNNING)
    assert by_id["4106"] == JobStatus(JobState.PENDING)
    assert by_id["4107"].state == JobState.FAILED
    assert by_id["4107"].message.startswith("ended in OAR state Error: R=1,W=2:0:0")
    assert by_id["4107"].message.endswith("events: PING_CHECKER_NODE_SUSPECTED")


def test_oarstat_edge_cases() -> None:
    assert parse_oarstat("") == [] and parse_oarstat("null\n") == []
    assert parse_oarstat("{}") == []
    with pytest.raises(SchedulerError, match="oarstat printed no JSON"):
        parse_oarstat("DB connection error, exiting.\n")
    with pytest.raises(SchedulerError, match="job 7 has no state"):
        parse_oarstat('{"7": {"name": "x"}}')
    killed = OarRecord("8", "Terminated", 9, "", ())
    assert oar_status(killed) == JobStatus(JobState.FAILED, -9, "killed by signal SIGKILL")


def test_live_oar_outputs() -> None:
    """Captured from OAR 2.5.9 on scripts/oar-cluster.sh (captured/README.md)."""
    assert parse_oarsub((CAPTURED / "oarsub_live.txt").read_text()) == "1"
    by_id = {r.job_id: oar_status(r)
             for r in parse_oarstat((CAPTURED / "oarstat_live.json").read_text())}
    assert by_id["1"] == JobStatus(JobState.FAILED, 3, "exited with status 3")
    assert by_id["2"].state == JobState.FAILED  # Error, events FRAG_JOB_REQUEST and WALLTIME
    assert by_id["2"].message.startswith("killed at its walltime (OAR WALLTIME event)")
    assert by_id["3"] == JobStatus(JobState.COMPLETED, 0)
    assert by_id["4"] == JobStatus(JobState.CANCELLED, None, "deleted (oardel)")
