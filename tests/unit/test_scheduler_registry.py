"""Scheduler backends by name, built-in and from another package's entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from melissa.config.models import LauncherConfig
from melissa.errors import ConfigError, SubmissionError
from melissa.launcher.schedulers import make_scheduler
from melissa.launcher.schedulers.registry import backend, backends
from melissa.paths import StudyPaths

PLUGIN = '''
from melissa.launcher.schedulers.local import LocalScheduler
from melissa.launcher.schedulers.registry import Backend

class PbsLike(LocalScheduler):
    name = "pbslike"

BACKEND = Backend("pbslike", lambda config, paths: PbsLike())
WRONG = "not a backend"
'''


def test_builtin_backends() -> None:
    assert {"local", "openmpi", "slurm", "slurm-steps", "oar"} <= set(backends())
    assert backend("local").local and not backend("slurm-steps").local
    with pytest.raises(ConfigError, match="unknown scheduler 'pbs'; known: local, oar"):
        backend("pbs")


def test_slurm_steps_needs_an_allocation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(SubmissionError, match="SLURM_JOB_ID is not set: start the launcher "
                                              "inside one"):
        make_scheduler(LauncherConfig(scheduler="slurm-steps"), StudyPaths(tmp_path))


def test_a_plugin_package_adds_a_backend(tmp_path: Path) -> None:
    """An installed distribution declaring the entry point (a dist-info on sys.path)."""
    (tmp_path / "melissa_pbslike.py").write_text(PLUGIN)
    info = tmp_path / "melissa_pbslike-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: melissa-pbslike\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[melissa.schedulers]\npbslike = melissa_pbslike:BACKEND\n"
        "wrong = melissa_pbslike:WRONG\nbroken = melissa_nosuchmodule:BACKEND\n")
    code = (
        "import json, logging; logging.basicConfig(level=logging.WARNING)\n"
        "from pathlib import Path\n"
        "from melissa.config.models import LauncherConfig\n"
        "from melissa.launcher.schedulers import make_scheduler\n"
        "s = make_scheduler(LauncherConfig(scheduler='pbslike'), None)\n"
        "print(json.dumps(s.name))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(tmp_path)}, check=False, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == "pbslike"
    assert "entry point wrong = melissa_pbslike:WRONG in group melissa.schedulers is not a " \
           "Backend named 'wrong': ignored" in run.stderr
    assert "scheduler backend broken (melissa_nosuchmodule:BACKEND) cannot be loaded" in run.stderr
