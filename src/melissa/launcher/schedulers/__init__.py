"""Scheduler backends behind one small protocol (base.Scheduler), found by name in a registry
(registry.py): local processes, OpenMPI, Slurm batch jobs, Slurm job steps, OAR, and plugins."""

from __future__ import annotations

from melissa.config.models import LauncherConfig
from melissa.launcher.schedulers.base import Scheduler
from melissa.launcher.schedulers.registry import backend
from melissa.paths import StudyPaths


def make_scheduler(config: LauncherConfig, paths: StudyPaths) -> Scheduler:
    """The backend `launcher_config.scheduler` names."""
    return backend(config.scheduler).make(config, paths)
