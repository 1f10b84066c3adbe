"""Find a study's status API and read its snapshot (GET /status with the study token)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from melissa.errors import MelissaError, StudyError
from melissa.launcher.lock import read_owner
from melissa.launcher.state import read_status, read_token
from melissa.paths import StudyPaths


class MonitorError(MelissaError):
    """The monitor cannot reach or read a study's status API."""


def not_running(paths: StudyPaths) -> str:
    """Why no launcher answers for the study in `paths`, and what to do."""
    try:
        finished = read_status(paths.state_db) == "finished"
    except StudyError as exc:
        return str(exc)
    if finished:
        return f"the study in {paths.root} has finished: its outcome is in {paths.parameters_csv}"
    owner, alive = read_owner(paths.root)
    if alive and owner is not None:
        return (f"the study in {paths.root} is still starting or stopping ({owner.describe()}); "
                "try again in a moment")
    return (f"the launcher of the study in {paths.root} is gone before the study finished "
            f"(stopped or killed): continue it with melissa-launcher --resume {paths.root}")


@dataclass(frozen=True)
class StatusSource:
    address: str  # http://host:port
    token: str
    paths: StudyPaths | None = None  # when given an output directory

    @classmethod
    def resolve(cls, target: str, token: str | None) -> StatusSource:
        """From an output directory (launcher.json + study.db) or an http:// address."""
        if target.startswith(("http://", "https://")):
            if not token:
                raise MonitorError(
                    f"give the study token for {target} with --token (or monitor the output "
                    "directory instead: the token is read from its study.db)"
                )
            return cls(target.rstrip("/"), token)
        paths = StudyPaths(Path(target))
        if not paths.root.is_dir():
            raise MonitorError(f"{target} is neither a study's output directory nor an http:// "
                               "address")
        try:
            info = json.loads(paths.launcher_info.read_text())
            address = str(info["address"])
        except FileNotFoundError:
            if paths.state_db.exists():
                raise MonitorError(not_running(paths)) from None
            raise MonitorError(f"no Melissa study in {paths.root} (no study.db)") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise MonitorError(f"cannot read {paths.launcher_info}: {exc}") from None
        if token is None:
            try:
                token = read_token(paths.state_db)
            except StudyError as exc:
                raise MonitorError(str(exc)) from None
        return cls(address, token, paths)

    def fetch(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """The latest snapshot; MonitorError if the launcher does not answer or refuses."""
        request = urllib.request.Request(
            f"{self.address}/status", headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                data = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                raise MonitorError(f"the launcher at {self.address} refused the token (a "
                                   "wrong --token, or another study now uses this address)"
                                   ) from None
            raise MonitorError(f"the launcher at {self.address} answered {exc.code} "
                               f"{exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            why = ("the study has finished or its launcher stopped" if self.paths is None
                   else not_running(self.paths))
            raise MonitorError(f"no launcher answers at {self.address} ({reason}): {why}"
                               ) from None
        except ValueError as exc:
            raise MonitorError(f"the launcher at {self.address} sent no JSON: {exc}") from None
        if not isinstance(data, dict):
            raise MonitorError(f"the launcher at {self.address} sent {type(data).__name__}, "
                               "expected a JSON object")
        return data
