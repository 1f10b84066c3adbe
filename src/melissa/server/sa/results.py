"""The results files of the sensitivity-analysis server: one NetCDF file per field gathered on
rank 0 for small fields, or one Zarr store that every rank writes its own cells into (no gather)
for large ones (sa_config.output_format)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from melissa import __version__
from melissa.protocol import cell_range, cell_ranges
from melissa.server.registry import FieldInfo
from melissa.server.sa.groups import GroupJoin
from melissa.server.sa.output import leading_dim, write_field_results
from melissa.server.sa.zarr_output import ZarrResults
from melissa.server.stats import FieldStatistics
from melissa.server.stats.sobol import SobolState
from melissa.server.stats.sobol_second import SecondOrderState

if TYPE_CHECKING:
    from melissa.server.sa.sensitivity import SensitivityServer

_NETCDF_MAX_BYTES = 256 << 20  # auto output: one NetCDF file per field up to this size


class ResultsWriter:
    """Writes the server's statistics, Sobol' indices and abandoned-data counts of each field."""

    def __init__(self, server: SensitivityServer) -> None:
        self.server = server
        self.config = server.config
        self.nb_parameters = len(server.config.parameters)

    def variables(self) -> dict[str, np.dtype]:
        """The result variables and their dtypes in the files."""
        specs = FieldStatistics(1, 1, self.config.sa).results()
        if self.server.sobol:
            specs.update(self.empty_sobol(1, 1))
        specs.update(self.server.abandoned_counts(-1, 1))
        floats = np.dtype(self.config.sa.output_dtype)
        return {k: floats if v.dtype.kind == "f" else v.dtype for k, v in specs.items()}

    def leading(self) -> dict[str, list[float] | list[str]]:
        sa = self.config.sa
        return {"threshold": list(sa.threshold_values) if sa.threshold_exceedance else [],
                "quantile_level": list(sa.quantiles),
                "parameter": [p.name for p in self.config.parameters] if self.server.sobol else [],
                "parameter_2": [p.name for p in self.config.parameters]
                if self.server.sobol and self.config.sa.second_order else []}

    def attrs(self) -> dict[str, str | int | float]:
        return {
            "melissa_version": __version__,
            "simulations_complete": self.server.simulations_complete,
            "simulations_seen": len(self.server.simulations_counted),
            "simulations_dropped": len(self.server.dropped),
            "simulations_abandoned_included": len(self.server.abandoned_included),
            "server_ranks": self.server.ranks,
        }

    def field_attrs(self, field_id: int, global_size: int) -> dict[str, str | int | float]:
        """_attrs and, with quantiles, the field's K (the state's: a restart keeps it)."""
        attrs = self.attrs()
        stats = self.server.statistics.get(field_id)
        exact = stats.exact_samples if stats is not None else self.server.exact_samples(global_size)[0]
        if self.config.sa.quantiles and exact is not None:
            attrs["quantile_exact_samples"] = exact
        return attrs

    def use_zarr(self, global_size: int) -> bool:
        """sa_config.output_format; auto: NetCDF up to _NETCDF_MAX_BYTES per field, uncompressed."""
        sa = self.config.sa
        if sa.output_format != "auto":
            return sa.output_format == "zarr"
        leading = self.leading()
        steps = self.config.study_options.nb_time_steps
        nbytes = sum(math.prod(len(leading[d]) for d in leading_dim(name)) * dtype.itemsize
                     for name, dtype in self.variables().items()) * steps * global_size
        return sa.output_compression != "none" or nbytes > _NETCDF_MAX_BYTES

    def write_zarr(self, name: str, field_id: int, global_size: int,
                    shape: tuple[int, ...] | None, aggregated: dict[str, np.ndarray],
                    scale: np.ndarray | None) -> Path:
        """Every rank writes its own cells: no gather."""
        start, stop = cell_range(global_size, self.server.ranks, self.server.rank)
        stats = self.server.statistics.get(field_id)
        if stats is None:  # this rank never heard of the field: empty statistics for its cells
            stats = FieldStatistics(self.config.study_options.nb_time_steps, stop - start,
                                    self.config.sa)
        join = self.server.sobol.get(field_id)
        sobol = self.sobol_results(join, scale) if join is not None else {}

        sobol.update(self.server.abandoned_counts(field_id, stop - start))

        def results(steps: slice) -> dict[str, np.ndarray]:
            out = stats.results(steps)
            out.update({k: v[..., steps, :] for k, v in sobol.items()})
            return out

        self.server.paths.statistics.mkdir(parents=True, exist_ok=True)
        writer = ZarrResults(
            self.server.paths.field_results(name, zarr=True), name,
            nb_time_steps=self.config.study_options.nb_time_steps, shape=shape,
            global_size=global_size, leading=self.leading(), variables=self.variables(),
            ranges=cell_ranges(global_size, self.server.ranks), rank=self.server.rank, comm=self.server.comm,
            compression=self.config.sa.output_compression, durable=True, per_parameter=aggregated,
        )
        return writer.write(results, self.field_attrs(field_id, global_size))

    def write_netcdf(self, name: str, field_id: int, shape: tuple[int, ...] | None,
                      aggregated: dict[str, np.ndarray], scale: np.ndarray | None
                      ) -> Path | None:
        """Small studies: one file, every rank's cells gathered on rank 0."""
        stats = self.server.statistics.get(field_id)
        local = (self.server.registry.fields[field_id], self.local_results(field_id, scale)) if stats else None
        parts = self.server.comm.gather(local, root=0) if self.server.comm is not None else [local]
        if self.server.rank != 0:
            return None
        info = next(p[0] for p in parts if p is not None)
        results = self.assemble(info, [p[1] if p else None for p in parts])
        path = self.server.paths.field_results(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_field_results(
            path, name, results, shape=shape, thresholds=[float(t) for t in self.leading()["threshold"]],
            parameters=[str(p) for p in self.leading()["parameter"]],
            quantile_levels=list(self.config.sa.quantiles),
            attrs=self.field_attrs(field_id, info.global_size),
            dtype=self.config.sa.output_dtype, per_parameter=aggregated,
        )
        return path

    def local_results(self, field_id: int, scale: np.ndarray | None) -> dict[str, np.ndarray]:
        out = self.server.statistics[field_id].results()
        if field_id in self.server.sobol:
            out.update(self.sobol_results(self.server.sobol[field_id], scale))
        out.update(self.server.abandoned_counts(field_id, self.server.registry.fields[field_id].local_size))
        return out

    @staticmethod
    def sobol_results(join: GroupJoin, scale: np.ndarray | None) -> dict[str, np.ndarray]:
        out = join.state.results(scale)
        if join.second is not None:
            out.update(join.second.results(join.state, scale))
        return out

    def empty_sobol(self, steps: int, cells: int) -> dict[str, np.ndarray]:
        """The Sobol' results of a field on `cells` cells without a group (NaN indices)."""
        second = (SecondOrderState(self.nb_parameters, steps, cells) if self.config.sa.second_order
                  else None)
        return self.sobol_results(GroupJoin(SobolState(self.nb_parameters, steps, cells), second), None)

    def assemble(
        self, info: FieldInfo, parts: list[dict[str, np.ndarray] | None]
    ) -> dict[str, np.ndarray]:
        """Concatenate the ranks' cell slices (cells are the last axis); a rank that never saw
        the field contributes empty statistics for its cells."""
        steps = self.config.study_options.nb_time_steps
        filled = []
        for rank, part in enumerate(parts):
            if part is None:
                start, stop = cell_range(info.global_size, self.server.ranks, rank)
                part = FieldStatistics(steps, stop - start, self.config.sa).results()
                if self.server.sobol:
                    part.update(self.empty_sobol(steps, stop - start))
                part.update(self.server.abandoned_counts(-1, stop - start))
            filled.append(part)
        return {name: np.concatenate([p[name] for p in filled], axis=-1) for name in filled[0]}
