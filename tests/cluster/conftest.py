"""Tests on a live Slurm cluster (scripts/slurm-cluster.sh start --accounting [--nodes 3]).

Tests marked `slurm` are skipped when no cluster answers, unless MELISSA_REQUIRE_SLURM=1 (as in
.ci/run), which makes that a failure: CI must never pass by skipping them.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

import pytest

START = "scripts/slurm-cluster.sh start --accounting --nodes 3"
NODES = ("n1", "n2", "n3")  # the test cluster's nodes that multi-node tests place jobs on


@functools.cache
def slurm_unavailable() -> str | None:
    """Why no Slurm cluster can run jobs here, or None."""
    if shutil.which("sbatch") is None:
        return f"no sbatch: apt-get install slurm-wlm munge, then {START}"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20,
                              check=False)
        nodes = subprocess.run(["sinfo", "--noheader", "--format=%t"], capture_output=True,
                               text=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return "scontrol ping or sinfo hung"
    if "is UP" not in ping.stdout:
        said = (ping.stdout.strip() or ping.stderr.strip() or "no answer").splitlines()[0]
        return f"slurmctld is not up ({said}): {START}"
    if not any(state.startswith(("idle", "mix", "alloc")) for state in nodes.stdout.split()):
        return f"no Slurm node accepts jobs (sinfo: {nodes.stdout.strip()}): {START}"
    return None


@functools.cache
def accounting_unavailable() -> str | None:
    sacct = subprocess.run(["sacct", "--noheader", "--jobs=1"], capture_output=True, text=True,
                           timeout=20, check=False)
    return None if sacct.returncode == 0 else (
        f"Slurm accounting is off ({sacct.stderr.strip()}): {START}")


@functools.cache
def multinode_unavailable() -> str | None:
    """Why the cluster is not the multi-node test cluster (nodes n1, n2, n3), or None."""
    sinfo = subprocess.run(["sinfo", "--noheader", "--Node", "--format=%N"], capture_output=True,
                           text=True, timeout=20, check=False)
    missing = set(NODES) - set(sinfo.stdout.split())
    return None if not missing else (
        f"the Slurm cluster lacks nodes {', '.join(sorted(missing))}: {START}")


def require(reason: str | None) -> None:
    if reason is None:
        return
    if os.environ.get("MELISSA_REQUIRE_SLURM") == "1":
        pytest.fail(f"MELISSA_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("slurm") is not None:
        require(slurm_unavailable())


@pytest.fixture
def multinode() -> None:
    """The multi-node test cluster with accounting (sacct's node lists)."""
    require(multinode_unavailable())
    require(accounting_unavailable())
