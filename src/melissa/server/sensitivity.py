"""The sensitivity-analysis server: iterative statistics of every field, written as NetCDF."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from melissa import __version__
from melissa.server.base import Server
from melissa.server.output import write_field_results
from melissa.server.registry import FieldInfo
from melissa.server.stats import FieldStatistics, compile_kernels

log = logging.getLogger("melissa.server")


class SensitivityServer(Server):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.statistics: dict[int, FieldStatistics] = {}
        compile_kernels(self.config.sa_config)  # before clients can connect

    def on_field(self, info: FieldInfo) -> None:
        stats = FieldStatistics(
            self.config.study_options.nb_time_steps, info.local_size, self.config.sa_config
        )
        self.statistics[info.field_id] = stats
        log.info("field %r: %.1f MB of statistics state", info.name, stats.nbytes / 1e6)

    def on_data(
        self, info: FieldInfo, simulation_id: int, time_step: int, local_start: int, data: np.ndarray
    ) -> None:
        self.statistics[info.field_id].update(time_step, local_start, data, simulation_id)

    def on_finish(self) -> list[Path]:
        written = []
        sa = self.config.sa_config
        for field_id, stats in sorted(self.statistics.items()):
            info = self.registry.fields[field_id]
            started = time.monotonic()
            path = self.paths.field_results(info.name)
            write_field_results(
                path,
                info.name,
                stats.results(),
                shape=info.shape,
                thresholds=list(sa.threshold_values) if sa.threshold_exceedance else [],
                attrs={
                    "melissa_version": __version__,
                    "simulations_complete": len(self.registry.completed),
                    "simulations_seen": len(self.registry.simulations),
                },
            )
            log.info("wrote %s in %.2f s", path, time.monotonic() - started)
            written.append(path)
        missing = set(self.registry.field_ids.values()) - set(self.statistics)
        for field_id in sorted(missing):
            name = next(n for n, i in self.registry.field_ids.items() if i == field_id)
            log.warning("field %r: no simulation sent it, no results written", name)
        return written
