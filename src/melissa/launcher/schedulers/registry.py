"""Scheduler backends by name: the built-in ones, and those other packages declare in the
`melissa.schedulers` entry-point group (a site's PBS or Flux backend, shipped on its own).

A package adds one to its pyproject.toml:

    [project.entry-points."melissa.schedulers"]
    pbs = "melissa_pbs:BACKEND"

where `BACKEND = Backend("pbs", make_pbs_scheduler)`: `make` builds the backend's Scheduler
(melissa.launcher.schedulers.base) from the launcher config and the study's paths.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

from melissa.config.models import LauncherConfig
from melissa.errors import ConfigError
from melissa.launcher.schedulers.base import Scheduler
from melissa.paths import StudyPaths

log = logging.getLogger("melissa.launcher")

ENTRY_POINT_GROUP = "melissa.schedulers"


@dataclass(frozen=True)
class Backend:
    name: str  # launcher_config.scheduler
    make: Callable[[LauncherConfig, StudyPaths], Scheduler]
    local: bool = False  # every job runs on the launcher's own host


_builtin: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    """Add a built-in backend (plugins use the entry-point group instead)."""
    _builtin[backend.name] = backend
    return backend


@functools.cache
def _plugins() -> dict[str, Backend]:
    found = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            backend = entry.load()
        except Exception as exc:  # noqa: BLE001  (a broken plugin must not hide the others)
            log.warning("scheduler backend %s (%s) cannot be loaded: %s", entry.name,
                        entry.value, exc)
            continue
        if not isinstance(backend, Backend) or backend.name != entry.name:
            log.warning("entry point %s = %s in group %s is not a Backend named %r: ignored",
                        entry.name, entry.value, ENTRY_POINT_GROUP, entry.name)
            continue
        found[entry.name] = backend
    return found


def backends() -> dict[str, Backend]:
    """Every backend by name; a built-in name cannot be taken over by a plugin."""
    from melissa.launcher.schedulers import builtin  # noqa: F401  (registers them)

    return {**_plugins(), **_builtin}


def backend(name: str) -> Backend:
    """The backend named `name`; ConfigError listing the known ones if there is none."""
    known = backends()
    if name not in known:
        raise ConfigError(
            f"launcher_config.scheduler: unknown scheduler {name!r}; known: "
            f"{', '.join(sorted(known))} (more come from packages declaring entry points in "
            f"group {ENTRY_POINT_GROUP})"
        )
    return known[name]
