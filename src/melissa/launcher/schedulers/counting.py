"""A scheduler wrapper that counts the calls the launcher makes to its backend.

bench/launcher_scale.py reports them per simulation (what a site's scheduler sees of a study),
and the launcher's scale test checks that they stay flat as a study grows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from melissa.launcher.schedulers.base import JobSpec, JobStatus, Scheduler


class CountingScheduler:
    """`inner`, with every call counted in `calls`: submit, poll, cancel, adopt, and
    ids_polled (one per job id in a poll)."""

    def __init__(self, inner: Scheduler) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: Counter[str] = Counter()

    def submit(self, spec: JobSpec) -> str:
        self.calls["submit"] += 1
        return self.inner.submit(spec)

    def poll(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        self.calls["poll"] += 1
        self.calls["ids_polled"] += len(job_ids)
        return self.inner.poll(job_ids)

    def cancel(self, job_ids: Sequence[str]) -> None:
        self.calls["cancel"] += 1
        self.inner.cancel(job_ids)

    def close(self) -> None:
        self.inner.close()

    def adopt(self, job_ids: Sequence[str], token: str) -> list[str]:
        self.calls["adopt"] += 1
        return self.inner.adopt(job_ids, token)

    def per_simulation(self, simulations: int) -> float:
        """Submit, poll and cancel calls per simulation."""
        return (self.calls["submit"] + self.calls["poll"] + self.calls["cancel"]) / simulations
