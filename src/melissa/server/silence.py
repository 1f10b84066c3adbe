"""Hung clients: how long each simulation has sent nothing, and when to tell the launcher.

Every rank records when it last heard from each simulation it knows and has not completed; rank
r > 0 sends these ages to rank 0 with its status every second. Rank 0 takes, per simulation, the
smallest age over the ranks that still wait for it (a simulation is silent only when it is silent
on every such rank) and reports it when that reaches `simulation_timeout`, then again after each
further `simulation_timeout` of silence: a resubmitted simulation that hangs before its first
message (so the server still counts the silence of its earlier attempt) is reported too, and the
launcher ignores a report older than the job it has running.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class SilenceWatch:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._heard: dict[int, float] = {}  # simulation -> monotonic time of its last message
        # rank 0: simulation -> (attempt, silence in seconds) of its latest report
        self._reported: dict[int, tuple[int, float]] = {}

    def heard(self, simulation_id: int, now: float) -> None:
        self._heard[simulation_id] = now

    def forget(self, simulation_id: int) -> None:
        """Stop watching (complete or abandoned here)."""
        self._heard.pop(simulation_id, None)

    def ages(self, now: float, waiting: Iterable[int]) -> dict[str, float]:
        """Seconds since each simulation of `waiting` (known, incomplete here) was last heard,
        keyed by the id as a string (JSON). One never heard (restored from a checkpoint) counts
        from now."""
        return {str(s): round(now - self._heard.setdefault(s, now), 3) for s in waiting}

    def newly_silent(
        self, ages_of_ranks: Iterable[Mapping[str, float]], attempts: Mapping[int, int]
    ) -> list[tuple[int, float]]:
        """Rank 0: (simulation, seconds) for each simulation silent on every rank that waits
        for it for simulation_timeout, unless already reported for this silence less than
        simulation_timeout ago at the same attempt (`attempts`; unknown ids are ignored)."""
        silent: dict[int, float] = {}
        for ages in ages_of_ranks:
            for key, age in ages.items():
                sim = int(key)
                silent[sim] = min(float(age), silent.get(sim, float("inf")))
        found = []
        for sim, age in sorted(silent.items()):
            attempt = attempts.get(sim)
            if attempt is None or age < self.timeout_s:
                continue
            last = self._reported.get(sim)
            # Same attempt, same silence (still growing), reported less than a timeout ago.
            if last is not None and last[0] >= attempt and last[1] <= age < last[1] + self.timeout_s:
                continue
            self._reported[sim] = (attempt, age)
            found.append((sim, age))
        return found
