"""The backends that come with Melissa, registered by name (see registry.py)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from melissa.config.models import LauncherConfig
from melissa.errors import SubmissionError
from melissa.launcher.schedulers.base import Scheduler
from melissa.launcher.schedulers.local import LocalScheduler
from melissa.launcher.schedulers.oar import OarScheduler
from melissa.launcher.schedulers.registry import Backend, register
from melissa.launcher.schedulers.slurm import SlurmScheduler
from melissa.launcher.schedulers.slurm_steps import SlurmStepsScheduler
from melissa.paths import StudyPaths


def _local(config: LauncherConfig, paths: StudyPaths) -> Scheduler:
    return LocalScheduler(mpi_launcher=["mpiexec", "-n", "{ranks}", *config.mpi_launcher_args])


def _openmpi(config: LauncherConfig, paths: StudyPaths) -> Scheduler:
    return LocalScheduler(
        mpi_launcher=[_system_mpirun(), "--oversubscribe", "-np", "{ranks}",
                      *config.mpi_launcher_args],
        # OpenMPI refuses to start as root without these (containers, CI, single-user VMs).
        mpi_env={"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
        if os.geteuid() == 0 else {},
    )


def _slurm(config: LauncherConfig, paths: StudyPaths) -> Scheduler:
    return SlurmScheduler(paths.jobs, mpi_launcher_args=config.mpi_launcher_args)


def _slurm_steps(config: LauncherConfig, paths: StudyPaths) -> Scheduler:
    return SlurmStepsScheduler(mpi_launcher_args=config.mpi_launcher_args)


def _oar(config: LauncherConfig, paths: StudyPaths) -> Scheduler:
    return OarScheduler(paths.jobs, mpi_launcher_args=config.mpi_launcher_args)


def _system_mpirun() -> str:
    """OpenMPI's mpirun: the first on PATH outside Melissa's own environment (whose bin/ may
    hold the MPICH wheel's mpirun)."""
    own = Path(sys.executable).parent.resolve()
    path = os.pathsep.join(
        d for d in os.environ.get("PATH", "").split(os.pathsep) if d and Path(d).resolve() != own
    )
    found = shutil.which("mpirun", path=path)
    if found is None:
        raise SubmissionError(
            "launcher_config.scheduler is openmpi but no mpirun is on PATH (outside "
            f"{own}): install OpenMPI (Debian: openmpi-bin)"
        )
    return found


register(Backend("local", _local, local=True))
register(Backend("openmpi", _openmpi, local=True))
register(Backend("slurm", _slurm))
register(Backend("slurm-steps", _slurm_steps))
register(Backend("oar", _oar))
