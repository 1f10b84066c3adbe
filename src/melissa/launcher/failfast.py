"""Fail fast: a mistake that fails every simulation the same way (a misspelt script, a missing
melissa.finalize()) stops the study after launcher_config.fail_fast simulations, instead of
retrying and redrawing the whole ensemble.

Pure decisions: the study reports each failed attempt; this says when to stop. It counts distinct
simulations (an attempt of a simulation already counted adds nothing), only until the first
simulation completes (from then on the set-up works: failures depend on the parameters or are
accidents), and only failures that happened before the simulation sent data, or that say it sent
incomplete data (no finalize). They stop the study when `limit` of them share one signature: the
same reason and the same last line of output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Reasons that say the simulation ran, sent data, and still missed something every time.
_INCOMPLETE = "did not receive all its data"


@dataclass(frozen=True)
class Failure:
    simulation_id: int
    reason: str  # in words: "exited with status 2", "killed by signal SIGSEGV", ...
    last_lines: tuple[str, ...]  # the attempt's last lines of output (its error)
    sent_data: bool  # the server had heard from this attempt

    @property
    def signature(self) -> tuple[str, str]:
        # Durations vary between simulations failing the same way ("sent nothing for 61 s").
        reason = re.sub(r"\d+(\.\d+)? s\b", "N s", self.reason)
        return reason, self.last_lines[-1] if self.last_lines else ""


@dataclass
class FailFast:
    limit: int  # launcher_config.fail_fast; 0: never stop
    armed: bool = True  # until a simulation completes
    _by_signature: dict[tuple[str, str], list[Failure]] = field(default_factory=dict)

    def completed(self) -> None:
        """A simulation completed: the set-up works, failures from now on are not its fault."""
        self.armed = False

    def failed(self, failure: Failure) -> list[Failure] | None:
        """Record a failed attempt; the failures that stop the study, or None to go on."""
        if not self.armed or self.limit == 0:
            return None
        if failure.sent_data and _INCOMPLETE not in failure.reason:
            return None  # it got somewhere: maybe these parameters, maybe an accident
        same = self._by_signature.setdefault(failure.signature, [])
        if all(f.simulation_id != failure.simulation_id for f in same):
            same.append(failure)
        return list(same) if len(same) >= self.limit else None


def stop_message(failures: list[Failure], command: str, log: str, config_path: str) -> str:
    """What the terminal shows when fail-fast stops the study: a few lines."""
    first = failures[0]
    ids = ", ".join(str(f.simulation_id) for f in failures)
    head = (f"stopped early: simulations {ids} all failed the same way before any simulation "
            f"completed (launcher_config.fail_fast): {first.reason}")
    output = [f"  | {line}" for line in first.last_lines] or ["  (the simulation wrote nothing)"]
    lines = [head, *output]
    lines.append(f"  command: {command}")
    lines.append(f"  log: {log}")
    lines.append(f"Fix it (try one simulation with: melissa-launcher --try-one -c {config_path}), "
                 "then start again with --overwrite. If these failures depend on the parameters, "
                 "set launcher_config.fail_fast to 0.")
    return "\n".join(lines)
