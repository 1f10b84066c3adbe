"""A statistics server rank's checkpoints: its whole state (the registry, and the named arrays
its subclass returns from `checkpoint_state`) written to a new file (checkpoint.py), and the
newest valid one restored on start, collectively over the ranks.

Cost: by default (sa_config.checkpoint_interval null) the interval between two periodic
checkpoints is 30 s, or 20 times what the last one took if that is longer (before the first of a
study: 20 times the state's growth in memory written at 300 MB/s), so that writing them takes at
most 5% of the study's time whatever the state's size. An interval the user sets is kept as set. None is written once every simulation of the study is
complete on this rank (the results come next, and a server lost then is rerun as before), and a
study that wrote its results removes them (unless sa_config.keep_checkpoints)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from melissa.errors import CheckpointError
from melissa.paths import StudyPaths
from melissa.server.checkpoint import Checkpoint, latest_checkpoint, next_sequence, write_checkpoint
from melissa.server.registry import Registry

log = logging.getLogger("melissa.server")

_REGISTRY = "registry/"  # prefix of the registry's arrays in a checkpoint
_MAX_SHARE = 0.05  # of the wall time spent writing periodic checkpoints
DEFAULT_INTERVAL_S = 30.0  # the shortest adaptive interval
_GUESSED_BYTES_PER_S = 300e6  # a checkpoint's write speed until one was measured

State = dict[str, np.ndarray]


class Recovery:
    def __init__(
        self,
        paths: StudyPaths,
        registry: Registry,
        rank: int,
        ranks: int,
        comm: Any,
        server_name: str,
    ) -> None:
        self.paths = paths
        self.registry = registry
        self.rank, self.ranks = rank, ranks
        self.comm = comm
        self.server_name = server_name
        self.sequence = 0
        self.last_seconds = 0.0  # what the last checkpoint took to write
        self.sequence_written = False  # this process wrote one (last_seconds is measured)

    def interval(self, configured: float | None, nbytes: int) -> float:
        """Seconds from the end of a checkpoint to the next periodic one, for a state of about
        `nbytes` (before the first checkpoint, its cost is guessed at _GUESSED_BYTES_PER_S):
        `configured` as it is, or adaptive when None."""
        if configured is not None:
            return configured
        if self.sequence_written:
            cost = self.last_seconds
        elif self.sequence > 0:  # restarted from a checkpoint: it already lost work once
            cost = 0.0
        else:
            cost = max(nbytes, 0) / _GUESSED_BYTES_PER_S
        return max(DEFAULT_INTERVAL_S, cost / _MAX_SHARE)

    def remove(self) -> None:
        """Delete this rank's checkpoints (the study's results are written)."""
        removed = self.paths.server_checkpoints(self.rank)
        for path in removed:
            path.unlink(missing_ok=True)
        if removed:
            log.info("removed %d checkpoints of rank %d: the results are written "
                     "(sa_config.keep_checkpoints keeps them)", len(removed), self.rank)

    def checkpoint(self, state: State) -> Path:
        """Write this rank's registry and `state` to a new checkpoint."""
        clash = sorted(name for name in state if name.startswith(_REGISTRY))
        if clash:
            raise CheckpointError(f"checkpoint_state() names {clash}: {_REGISTRY!r} is reserved")
        meta, registry_arrays = self.registry.state()
        arrays = {**{_REGISTRY + k: v for k, v in registry_arrays.items()}, **state}
        written = write_checkpoint(self.paths, self.rank, self.ranks, self.sequence,
                                   arrays, {"registry": meta, "server": self.server_name})
        self.sequence += 1
        self.last_seconds = written.seconds
        self.sequence_written = True
        log.info("checkpoint %s: %.1f MB in %.3f s (%.0f MB/s)", written.path,
                 written.nbytes / 1e6, written.seconds,
                 written.nbytes / 1e6 / max(written.seconds, 1e-9))
        return written.path

    def restore(self, enabled: bool, restore_state: Callable[[State], None]
                ) -> tuple[Checkpoint | None, list[tuple[str | None, str | None, list[int]]]]:
        """Collective over the ranks: restore this rank's newest valid checkpoint if it has one
        (and `enabled`). Returns it, and every rank's (error, checkpoint path, simulations
        complete on it). Raises CheckpointError (on every rank) if any rank's checkpoint cannot
        be used."""
        found, error = None, None
        if enabled:
            try:
                found = latest_checkpoint(self.paths, self.rank)
                if found is not None:
                    self._restore(found, restore_state)
            except CheckpointError as exc:
                error = f"server rank {self.rank}: {exc}"
            self.sequence = next_sequence(self.paths, self.rank)
        mine = (error, str(found.path) if found else None, self.registry.completed)
        everyone = self.comm.allgather(mine) if self.comm is not None else [mine]
        errors = [e for e, _, _ in everyone if e is not None]
        if errors:
            raise CheckpointError("; ".join(errors))
        return found, everyone

    def _restore(self, checkpoint: Checkpoint, restore_state: Callable[[State], None]) -> None:
        if checkpoint.ranks != self.ranks:
            raise CheckpointError(
                f"{checkpoint.path} was written by a server of {checkpoint.ranks} ranks, this one "
                f"has {self.ranks} (server_config.ranks): restart with {checkpoint.ranks} ranks, "
                f"or delete {self.paths.checkpoints} to start the study over"
            )
        registry = {k[len(_REGISTRY):]: v for k, v in checkpoint.arrays.items()
                    if k.startswith(_REGISTRY)}
        self.registry.restore(checkpoint.meta.get("registry", {}), registry)
        try:
            restore_state({k: v for k, v in checkpoint.arrays.items()
                           if not k.startswith(_REGISTRY)})
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{checkpoint.path} does not fit this study's config: {exc}"
                                  ) from None
        log.info("restored %s (written %s): %d simulations known, %d complete on this rank",
                 checkpoint.path, time.strftime("%Y-%m-%d %H:%M:%S",
                                                time.localtime(checkpoint.wall_time)),
                 len(self.registry.simulations), len(self.registry.completed))
