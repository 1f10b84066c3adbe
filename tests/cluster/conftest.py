"""Tests on a live Slurm cluster (scripts/slurm-cluster.sh start --accounting [--nodes 3]) and a
live OAR cluster (scripts/oar-cluster.sh start).

Tests marked `slurm` (`oar`) are skipped when no cluster answers, unless MELISSA_REQUIRE_SLURM=1
(MELISSA_REQUIRE_OAR=1), as in .ci/run, which makes that a failure: CI must never pass by skipping
them.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

import pytest

START = "scripts/slurm-cluster.sh start --accounting --nodes 3"
NODES = ("n1", "n2", "n3")  # the test cluster's nodes that multi-node tests place jobs on
OAR_START = "scripts/oar-cluster.sh start"
OAR_NODES = ("127.1.1.11", "127.1.1.12", "127.1.1.13")  # hosts o1, o2, o3


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


@functools.cache
def oar_unavailable() -> str | None:
    """Why the OAR test cluster (nodes o1, o2, o3 Alive) cannot run jobs here, or None."""
    if shutil.which("oarsub") is None:
        return f"no oarsub: apt-get install oar-server oar-node oar-user ..., then {OAR_START}"
    try:
        nodes = subprocess.run(["oarnodes", "-s"], capture_output=True, text=True, timeout=20,
                               check=False)
    except subprocess.TimeoutExpired:
        return "oarnodes -s hung"
    alive = set()  # `oarnodes -s`: a host's address, then "    <resource> : <state>" lines
    host = ""
    for line in nodes.stdout.splitlines():
        if not line.startswith(" "):
            host = line.strip()
        elif line.strip().endswith(": Alive"):
            alive.add(host)
    if nodes.returncode != 0 or not alive.issuperset(OAR_NODES):
        said = (nodes.stderr.strip() or nodes.stdout.strip() or "no answer").splitlines()[0]
        return f"the OAR test cluster is not up (oarnodes -s: {said}): {OAR_START}"
    return None


def require(reason: str | None, variable: str = "MELISSA_REQUIRE_SLURM") -> None:
    if reason is None:
        return
    if os.environ.get(variable) == "1":
        pytest.fail(f"{variable}=1 but {reason}")
    pytest.skip(reason)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("slurm") is not None:
        require(slurm_unavailable())
    if item.get_closest_marker("oar") is not None:
        require(oar_unavailable(), "MELISSA_REQUIRE_OAR")


@pytest.fixture
def multinode() -> None:
    """The multi-node test cluster with accounting (sacct's node lists)."""
    require(multinode_unavailable())
    require(accounting_unavailable())
