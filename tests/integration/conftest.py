"""Helpers for end-to-end tests: write a config, run melissa-launcher as a user would."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAT = REPO / "examples" / "heat_equation" / "heat.py"


@dataclass
class LauncherRun:
    returncode: int
    output: str
    output_dir: Path

    def parameters(self) -> list[dict[str, str]]:
        with open(self.output_dir / "parameters.csv", newline="") as f:
            return list(csv.DictReader(f))


def run_launcher(config: dict[str, Any], workdir: Path, *extra: str, timeout: float = 240,
                 columns: int = 200) -> LauncherRun:
    path = workdir / "config.json"
    path.write_text(json.dumps(config, indent=2))
    proc = subprocess.run(
        [sys.executable, "-m", "melissa.launcher", "-c", str(path), *extra],
        capture_output=True, text=True, check=False, timeout=timeout, cwd=workdir,
        # A bare PATH: the launcher must put its own interpreter first for "python3 sim.py".
        env={**os.environ, "COLUMNS": str(columns), "PATH": "/usr/bin:/bin"},
    )
    out_dir = (workdir / config.get("output_dir", "melissa_output")).resolve()
    return LauncherRun(proc.returncode, proc.stdout + proc.stderr, out_dir)


def start_launcher(workdir: Path, config: dict[str, Any]) -> subprocess.Popen[str]:
    """melissa-launcher in the background on workdir/config.json (for tests that watch a study
    while it runs); stdout and stderr together in .stdout."""
    (workdir / "config.json").write_text(json.dumps(config))
    return subprocess.Popen(
        [sys.executable, "-m", "melissa.launcher", "-c", "config.json"], cwd=workdir,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "COLUMNS": "200"})


@pytest.fixture
def launcher(tmp_path: Path):  # type: ignore[no-untyped-def]
    def run(config: dict[str, Any], *extra: str, timeout: float = 240) -> LauncherRun:
        return run_launcher(config, tmp_path, *extra, timeout=timeout)

    return run
