"""The sensitivity-analysis server: iterative statistics of every field, written as NetCDF."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from melissa import __version__
from melissa.protocol import cell_range
from melissa.server.base import Server
from melissa.server.output import write_field_results
from melissa.server.registry import FieldInfo
from melissa.server.stats import FieldStatistics, compile_kernels

log = logging.getLogger("melissa.server")


class SensitivityServer(Server):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.statistics: dict[int, FieldStatistics] = {}
        compile_kernels(self.config.sa)  # before clients can connect

    def on_field(self, info: FieldInfo) -> None:
        stats = FieldStatistics(
            self.config.study_options.nb_time_steps, info.local_size, self.config.sa
        )
        self.statistics[info.field_id] = stats
        log.info("field %r: %.1f MB of statistics state", info.name, stats.nbytes / 1e6)

    def on_data(
        self, info: FieldInfo, simulation_id: int, time_step: int, local_start: int, data: np.ndarray
    ) -> None:
        self.statistics[info.field_id].update(time_step, local_start, data, simulation_id)

    def on_finish(self) -> list[Path]:
        written = []
        for name, field_id in self.registry.field_ids.items():
            # Collective over ranks, in config order: every rank takes part for every field,
            # even one it never heard of (a client may have died between two HELLOs).
            stats = self.statistics.get(field_id)
            local = (self.registry.fields[field_id], stats.results()) if stats else None
            parts = self.comm.gather(local, root=0) if self.comm is not None else [local]
            if self.rank != 0:
                continue
            known = [p for p in parts if p is not None]
            if not known:
                log.warning("field %r: no simulation sent it, no results written", name)
                continue
            info = known[0][0]
            started = time.monotonic()
            results = self._assemble(info, [p[1] if p else None for p in parts])
            path = self.paths.field_results(name)
            write_field_results(
                path,
                name,
                results,
                shape=info.shape,
                thresholds=self._thresholds(),
                attrs={
                    "melissa_version": __version__,
                    "simulations_complete": self.simulations_complete,
                    "simulations_seen": len(self.registry.simulations),
                    "server_ranks": self.ranks,
                },
            )
            log.info("wrote %s in %.2f s", path, time.monotonic() - started)
            written.append(path)
        return written

    def _thresholds(self) -> list[float]:
        sa = self.config.sa
        return list(sa.threshold_values) if sa.threshold_exceedance else []

    def _assemble(
        self, info: FieldInfo, parts: list[dict[str, np.ndarray] | None]
    ) -> dict[str, np.ndarray]:
        """Concatenate the ranks' cell slices (cells are the last axis); a rank that never saw
        the field contributes empty statistics for its cells."""
        filled = []
        for rank, part in enumerate(parts):
            if part is None:
                start, stop = cell_range(info.global_size, self.ranks, rank)
                part = FieldStatistics(
                    self.config.study_options.nb_time_steps, stop - start, self.config.sa
                ).results()
            filled.append(part)
        return {name: np.concatenate([p[name] for p in filled], axis=-1) for name in filled[0]}
