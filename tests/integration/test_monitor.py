"""melissa-monitor on a running study: the right counts while simulations wait on a gate, and
the status API refuses requests without the study token."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.conftest import start_launcher

# Each simulation sends one step, then waits for the file "gate" before its last step.
GATED = """
import os, sys, time
import numpy as np
import melissa.client as melissa
melissa.init("f", 4)
melissa.send("f", np.full(4, float(sys.argv[1])))
while not os.path.exists("gate"):
    time.sleep(0.05)
melissa.send("f", np.full(4, float(sys.argv[1])))
melissa.finalize()
"""


def monitor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "melissa.monitor", *args], capture_output=True,
                          text=True, check=False, timeout=30)


def wait_for_line(out_dir: Path, pattern: str, timeout: float = 60) -> str:
    """The monitor's --once output once it shows `pattern` (snapshots are a second apart)."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        run = monitor(str(out_dir), "--once")
        text = run.stdout + run.stderr
        if re.search(pattern, text):
            return text
        time.sleep(0.3)
    raise AssertionError(f"the monitor never showed {pattern!r}; last output:\n{text}")


def test_monitor_once_shows_the_right_counts(tmp_path: Path) -> None:
    (tmp_path / "sim.py").write_text(GATED)
    config = {
        "output_dir": "out",
        "study_options": {"field_names": ["f"], "nb_time_steps": 2, "parameter_sweep_size": 5},
        "parameters": [{"name": "p", "distribution": "uniform", "low": 0, "high": 1}],
        "sa_config": {"plot_time_steps": []},
        "client_config": {"executable_command": f"{sys.executable} sim.py"},
        "launcher_config": {"job_limit": 2},
    }
    out_dir = tmp_path / "out"
    launcher = start_launcher(tmp_path, config)
    try:
        text = wait_for_line(out_dir, r"1/2 chunks .*\n.*1/2 chunks")  # both sent a step
        assert "simulations 5 total: 3 waiting (0 queued), 2 running, 0 completed, 0 failed" in text
        assert re.search(r"simulation 0 \(job \S+, running\): 1/2 chunks \(50%\)", text), text
        assert f"study       {out_dir} (local, running" in text

        address = json.loads((out_dir / "launcher.json").read_text())["address"]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{address}/status", timeout=5)
        assert refused.value.code == 401

        (tmp_path / "gate").touch()
        assert launcher.wait(timeout=120) == 0
    finally:
        launcher.kill()
        output = launcher.communicate()[0]
    assert f"Watch it with: melissa-monitor {out_dir}" in output
    assert not (out_dir / "launcher.json").exists()
    gone = monitor(str(out_dir), "--once")
    assert gone.returncode == 1
    assert f"the study in {out_dir} has finished: its outcome is in" in gone.stderr
