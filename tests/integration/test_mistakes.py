"""A new user's mistakes, each through the CLI as they make it: two launchers on one study, a
misspelt command, a wrong field size, a killed launcher, quoted numbers, trying one simulation.
Each must be told at once, in a few lines, with the simulation's own error, and lose nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from tests.integration.conftest import run_launcher, start_launcher

STEPS, CELLS = 4, 5

# Simulation 3 sends a field of the wrong size; MISTAKE picks a mistake for every simulation.
SIMULATION = f"""
import os, sys, time
import numpy as np
import melissa.client as melissa
p = float(sys.argv[1])
mistake = os.environ.get("MISTAKE", "")
cells = 7 if mistake == "size" and os.environ["MELISSA_SIMULATION_ID"] == "3" else {CELLS}
melissa.init("f", cells)
for step in range({STEPS}):
    melissa.send("f", p * np.arange(1, cells + 1) + step)
    time.sleep(float(os.environ.get("STEP_S", "0")))
if mistake != "no-finalize":
    melissa.finalize()
"""


def config(workdir: Path, sims: int, step_s: float = 0.0, mistake: str = "",
           **launcher: Any) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "sim.py").write_text(SIMULATION)
    return {
        "output_dir": "out",
        "study_options": {"field_names": ["f"], "nb_time_steps": STEPS,
                          "parameter_sweep_size": sims, "seed": 5, "simulation_timeout": 20},
        "parameters": [{"name": "p", "distribution": "uniform", "low": 0, "high": 1}],
        "sa_config": {"mean": True, "variance": True, "plot_time_steps": [],
                      "checkpoint_interval": 1.0},
        "client_config": {"executable_command": "python3 sim.py",
                          "environment": {"STEP_S": str(step_s), "MISTAKE": mistake}},
        "launcher_config": {"job_limit": 2, "poll_interval": 0.1, **launcher},
    }


def wait_for(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def assert_exact_statistics(out: Path) -> None:
    """mean and variance of the completed simulations, from parameters.csv (NumPy, offline)."""
    import csv
    with open(out / "parameters.csv", newline="") as f:
        p = np.array([float(r["p"]) for r in csv.DictReader(f) if r["status"] == "completed"])
    samples = p[:, None, None] * np.arange(1, CELLS + 1) + np.arange(STEPS)[None, :, None]
    with xr.open_dataset(out / "statistics" / "f.nc") as ds:
        assert (ds["count"].values == len(p)).all()
        np.testing.assert_allclose(ds["mean"].values, samples.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(ds["variance"].values, samples.var(axis=0, ddof=1),
                                   rtol=1e-10)


def test_a_second_launcher_refuses_and_the_first_completes(tmp_path: Path) -> None:
    cfg = config(tmp_path, sims=8, step_s=1.5)  # about 25 s: the second launcher meets it
    first = start_launcher(tmp_path, cfg)
    out = tmp_path / "out"
    try:
        wait_for(lambda: (out / "launcher.json").exists())
        for extra in (["--overwrite"], ["--resume"], []):
            second = run_launcher(cfg, tmp_path, *extra, timeout=60)
            assert second.returncode == 1, second.output
            assert (f"error: the study in {out} is in use by the launcher with pid {first.pid} "
                    "on ") in second.output
            assert "Traceback" not in second.output
        assert first.poll() is None  # it was live all along
        assert first.wait(timeout=180) == 0
    finally:
        first.kill()
        output = first.communicate()[0]
    assert "server restarts" not in output and "completed     │ 8" in output, output
    assert not (out / "launcher.lock").exists()  # released at the end
    assert_exact_statistics(out)


def test_a_misspelt_command_stops_after_the_fail_fast_limit(tmp_path: Path) -> None:
    cfg = config(tmp_path, sims=6)
    cfg["client_config"]["executable_command"] = "python3 advdif.py"
    run = run_launcher(cfg, tmp_path, timeout=120)
    assert run.returncode == 1, run.output
    error = run.output[run.output.index("melissa-launcher: error:"):]
    assert error.startswith("melissa-launcher: error: stopped early: simulations 0, 1, 2 all "
                            "failed the same way before any simulation completed "
                            "(launcher_config.fail_fast): exited with status 2")
    assert f"| python3: can't open file '{tmp_path}/advdif.py'" in error
    assert "command: python3 advdif.py 0." in error and f"(in {tmp_path})" in error
    assert "melissa-launcher --try-one -c" in error and "--overwrite" in error
    assert len(error.splitlines()) <= 6
    runs = sum(int(r["attempts"]) for r in run.parameters())
    assert runs <= 8, runs  # not 3 tries x (6 + 6 redrawn) simulations
    assert not (run.output_dir / "statistics").exists()
    assert not (run.output_dir / "plots").exists()


def test_a_missing_finalize_stops_after_the_fail_fast_limit(tmp_path: Path) -> None:
    run = run_launcher(config(tmp_path, sims=6, mistake="no-finalize"), tmp_path, timeout=120)
    assert run.returncode == 1, run.output
    assert ("all failed the same way before any simulation completed (launcher_config."
            "fail_fast): exited with status 0 but the server did not receive all its data "
            "(melissa.finalize() not called?)") in run.output


def test_the_summary_says_why_a_wrong_field_size_failed(tmp_path: Path) -> None:
    cfg = config(tmp_path, sims=5, mistake="size", job_limit=1)  # simulation 0 declares first
    run = run_launcher(cfg, tmp_path, timeout=180, columns=80)
    assert run.returncode == 0, run.output
    output = run.output
    log = tmp_path / "out" / "logs" / "simulation_000003.log"
    # At 80 columns nothing is cut: each line is whole, the terminal wraps it.
    assert ("  simulation 3: redrawn (3 runs): attempts 0-2: exited with status 1; the server "
            "refused it: HELLO to server rank 0: field 'f' has 7 values here but 5 in the "
            "simulations before: every simulation must send the same field size; failed 3 "
            "times, redrawn as simulation 5\n") in output, output
    assert "    last output: melissa.errors.ClientError: " in output
    assert f"    log: {log}\n" in output
    assert "…" not in output
    assert_exact_statistics(tmp_path / "out")


def test_a_killed_launcher_leaves_no_server_and_resume_says_so(tmp_path: Path) -> None:
    cfg = config(tmp_path, sims=30, step_s=0.2, launcher_timeout=3)
    launcher = start_launcher(tmp_path, cfg)
    out = tmp_path / "out"
    try:
        wait_for(lambda: (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir()))
        server = json.loads((out / "server.json").read_text())["pid"]
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait()
    finally:
        launcher.kill()
        launcher.communicate()
    wait_for(lambda: not _alive(server), timeout=30)  # launcher_timeout 3 s, then a checkpoint
    server_log = (out / "logs" / "server.log").read_text()
    assert "no word from the launcher for 3 s (launcher_config.launcher_timeout)" in server_log
    assert f"continue the study from its checkpoint in {out}/checkpoints with " \
           f"melissa-launcher --resume {out}" in server_log
    monitor = subprocess.run([sys.executable, "-m", "melissa.monitor", str(out), "--once"],
                             check=False, capture_output=True, text=True, timeout=60)
    assert monitor.returncode == 1
    assert f"continue it with melissa-launcher --resume {out}" in monitor.stderr

    resumed = run_launcher(cfg, tmp_path, "--resume", timeout=240)
    assert resumed.returncode == 0, resumed.output
    assert f"Took over the study lock of the launcher with pid {launcher.pid} on " in \
        resumed.output
    assert all(r["status"] == "completed" for r in resumed.parameters())
    assert_exact_statistics(out)


def test_overwrite_stops_the_server_a_killed_launcher_left(tmp_path: Path) -> None:
    cfg = config(tmp_path, sims=30, step_s=0.2)  # launcher_timeout: the default 120 s
    launcher = start_launcher(tmp_path, cfg)
    out = tmp_path / "out"
    try:
        wait_for(lambda: (out / "server.json").exists())
        server = json.loads((out / "server.json").read_text())["pid"]
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait()
    finally:
        launcher.kill()
        launcher.communicate()
    cfg["study_options"]["parameter_sweep_size"] = 4
    cfg["client_config"]["environment"]["STEP_S"] = "0"
    again = run_launcher(cfg, tmp_path, "--overwrite", timeout=240)
    assert again.returncode == 0, again.output
    assert not _alive(server)
    assert [r["status"] for r in again.parameters()] == ["completed"] * 4
    assert_exact_statistics(out)


def test_ctrl_c_names_resume(tmp_path: Path) -> None:
    launcher = start_launcher(tmp_path, config(tmp_path, sims=30, step_s=0.2))
    out = tmp_path / "out"
    try:
        wait_for(lambda: (out / "launcher.json").exists())
        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(timeout=60) == 130
    finally:
        launcher.kill()
        output = launcher.communicate()[0]
    assert ("melissa-launcher: error: interrupted; cancelling every job. Continue the study "
            f"with: melissa-launcher --resume {out}\n") in output


def test_quoted_numbers_and_booleans_are_refused(tmp_path: Path) -> None:
    cfg = config(tmp_path, sims=2)
    cfg["study_options"]["parameter_sweep_size"] = "6"
    cfg["sa_config"]["mean"] = "yes"
    run = run_launcher(cfg, tmp_path, timeout=60)
    assert run.returncode == 2
    source = f"{tmp_path}/config.json"
    quotes = "(write it without quotes)"
    assert run.output.strip().splitlines() == [
        (f"melissa-launcher: error: {source}: study_options.parameter_sweep_size: expected an "
         f'integer, got the string "6" {quotes}'),
        f'{source}: sa_config.mean: expected true or false, got the string "yes" {quotes}',
    ]
    assert not run.output_dir.exists()


def test_try_one_on_a_good_and_a_broken_client(tmp_path: Path) -> None:
    good = run_launcher(config(tmp_path, sims=6), tmp_path, "--try-one", timeout=120)
    assert good.returncode == 0, good.output
    assert "Trying one simulation (p=" in good.output and "the design's first parameters" in \
        good.output
    assert "command: python3 sim.py 0." in good.output
    assert "field f: 5 cells, float64, 4 of 4 time steps" in good.output
    assert "OK: this simulation sends what the study expects." in good.output
    assert not good.output_dir.exists()  # the study is not created

    broken = run_launcher(config(tmp_path, sims=6, mistake="no-finalize"), tmp_path,
                          "--try-one", "--parameters", "0.25", timeout=120)
    assert broken.returncode == 1, broken.output
    assert "Trying one simulation (p=0.25, from --parameters)" in broken.output
    assert "problem: it exited with status 0 but never said it was done: call " \
           "melissa.finalize() at its end" in broken.output

    cfg = config(tmp_path, sims=6)
    cfg["study_options"]["field_names"] = ["g"]
    refused = run_launcher(cfg, tmp_path, "--try-one", timeout=120)
    assert refused.returncode == 1, refused.output
    assert "problem: the server refused a message: unknown field 'f': " \
           "study_options.field_names is ['g']" in refused.output
    assert "| melissa.errors.ClientError: " in refused.output
    assert not refused.output_dir.exists()


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")
