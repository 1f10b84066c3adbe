"""The sensitivity-analysis server: iterative statistics of every field, written as NetCDF.

In a Sobol' study (sa_config.sobol_indices) each field also has a `GroupJoin` that assembles the
pick-freeze groups and updates the Martinez state; the other statistics then take only the A and
B members of each group, the independent draws. Every few seconds the widest confidence interval
of the indices goes to statistics/sobol_convergence.csv, so that a user sees them converge.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from melissa import __version__
from melissa.protocol import cell_range, cell_ranges
from melissa.server.base import Server
from melissa.server.registry import FieldInfo
from melissa.server.sa.groups import GroupJoin
from melissa.server.sa.output import leading_dim, write_field_results
from melissa.server.sa.zarr_output import ZarrResults
from melissa.server.stats import FieldStatistics, compile_kernels, quantiles
from melissa.server.stats.sobol import SobolState

log = logging.getLogger("melissa.server")

_CONVERGENCE_PERIOD_S = 5.0
_NETCDF_MAX_BYTES = 256 << 20  # auto output: one NetCDF file per field up to this size
_CONVERGENCE_COLUMNS = ("elapsed_s", "field", "groups", "widest_first", "widest_total",
                        "join_mb")


class SensitivityServer(Server):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.statistics: dict[int, FieldStatistics] = {}
        self.sobol: dict[int, GroupJoin] = {}  # field id -> its pick-freeze groups' join
        self.group_size = self.config.group_size
        self._convergence: dict[str, list[float]] = {}  # this rank's, refreshed periodically
        self._next_convergence = 0.0
        self._convergence_version = 0  # refreshes so far
        self._logged_version = 0  # the refresh rank 0 last wrote rows for
        self._started = time.monotonic()
        compile_kernels(self.config.sa)  # before clients can connect
        if self.group_size > 1:
            SobolState(1, 1, 1).update(0, np.zeros((3, 1)))  # compile the Sobol' kernel too

    def on_field(self, info: FieldInfo) -> None:
        steps = self.config.study_options.nb_time_steps
        exact, why = self._exact_samples(info.global_size)
        if exact is not None and self.rank == 0:
            log.info("field %r: quantiles exact up to %d samples per cell (%s)", info.name,
                     exact, why)
        stats = FieldStatistics(steps, info.local_size, self.config.sa, exact)
        self.statistics[info.field_id] = stats
        size = stats.nbytes
        if self.group_size > 1:
            state = SobolState(self.group_size - 2, steps, info.local_size)
            self.sobol[info.field_id] = GroupJoin(state)
            size += state.nbytes
        log.info("field %r: %.1f MB of statistics state", info.name, size / 1e6)

    def _exact_samples(self, global_size: int) -> tuple[int | None, str]:
        """K of a field's quantiles (sa_config.quantile_exact_samples) and why; the same on
        every rank: "auto" sizes it for the largest rank's share of the cells."""
        sa, options = self.config.sa, self.config.study_options
        if not sa.quantiles:
            return None, "no quantiles"
        if sa.quantile_exact_samples != "auto":
            return sa.quantile_exact_samples, "sa_config.quantile_exact_samples"
        # A Sobol' study's statistics take the A and B members of each group.
        planned = options.parameter_sweep_size * min(self.group_size, 2)
        return quantiles.auto_exact_samples(
            planned, options.nb_time_steps, -(-global_size // self.ranks), len(sa.quantiles),
            sa.quantile_memory_mb * 2**20 / len(options.field_names))

    def on_data(
        self, info: FieldInfo, simulation_id: int, time_step: int, local_start: int, data: np.ndarray
    ) -> None:
        join = self.sobol.get(info.field_id)
        if join is not None:
            join.add(simulation_id, time_step, local_start, data)
            if simulation_id % self.group_size >= 2:
                return  # C_k members: their values only serve the indices
        self.statistics[info.field_id].update(time_step, local_start, data, simulation_id)

    # -- convergence of the Sobol' indices -----------------------------------------------------
    def on_status(self, now: float) -> dict[str, Any]:
        if not self.sobol:
            return {}
        if now >= self._next_convergence:
            self._refresh_convergence()
            self._next_convergence = now + _CONVERGENCE_PERIOD_S
        return {"sobol_convergence": self._convergence}

    def on_report(self, event: dict[str, Any], statuses: list[dict[str, Any]]) -> None:
        if self.sobol and self._convergence:
            self._log_convergence(time.monotonic(), statuses)

    def _refresh_convergence(self) -> None:
        """Per field name: [complete groups (fewest over time steps), widest first-order
        interval, widest total interval, MB held by the join]."""
        out = {}
        for field_id, join in self.sobol.items():
            first, total = join.state.widest_interval()
            name = self.registry.fields[field_id].name
            out[name] = [float(join.state.groups.min()), first, total, join.nbytes / 1e6]
        self._convergence = out
        self._convergence_version += 1

    def _log_convergence(self, now: float, statuses: list[dict[str, Any]]) -> None:
        """Rank 0: every rank's widest interval, combined (max), as one CSV row per field."""
        if self._logged_version == self._convergence_version:
            return  # nothing new since the last rows
        self._logged_version = self._convergence_version
        combined: dict[str, list[float]] = {}
        parts = [s.get("sobol_convergence", {}) for s in statuses]
        for part in parts:
            for name, (groups, first, total, mb) in part.items():
                seen = combined.setdefault(name, [groups, first, total, 0.0])
                seen[0] = min(seen[0], groups)
                seen[1] = _nanmax(seen[1], first)
                seen[2] = _nanmax(seen[2], total)
                seen[3] += mb
        path = self.paths.sobol_convergence
        path.parent.mkdir(parents=True, exist_ok=True)
        new_file = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.writer(f)
            if new_file:
                writer.writerow(_CONVERGENCE_COLUMNS)
            for name, (groups, first, total, mb) in combined.items():
                writer.writerow([f"{now - self._started:.1f}", name, int(groups),
                                 f"{first:.6g}", f"{total:.6g}", f"{mb:.3f}"])
                log.info("Sobol' indices of %r: %d groups, widest 95%% interval %.3g (first "
                         "order), %.3g (total)", name, groups, first, total)

    # -- results -------------------------------------------------------------------------------
    def on_finish(self) -> list[Path]:
        written = []
        for join in self.sobol.values():
            if join.pending:
                log.warning("%d half-joined (group, time step) pairs left incomplete: their "
                            "members did not all arrive; not counted", len(join.pending))
        if self.sobol:
            self._refresh_convergence()
            self.emit_status(time.monotonic())  # the convergence log's last row
        for name, field_id in self.registry.field_ids.items():
            # Collective over ranks, in config order: every rank takes part for every field,
            # even one it never heard of (a client may have died between two HELLOs).
            info = self.registry.fields[field_id] if field_id in self.statistics else None
            mine = (info.global_size, info.shape) if info is not None else None
            known = [k for k in (self.comm.allgather(mine) if self.comm else [mine]) if k]
            if not known:
                if self.rank == 0:
                    log.warning("field %r: no simulation sent it, no results written", name)
                continue
            global_size = known[0][0]
            shape = next((k[1] for k in known if k[1] is not None), None)
            started = time.monotonic()
            if self._zarr(global_size):
                path = self._write_zarr(name, field_id, global_size, shape)
            elif (gathered := self._write_netcdf(name, field_id, shape)) is not None:
                path = gathered
            else:
                continue
            if self.rank == 0:
                log.info("wrote %s in %.2f s", path, time.monotonic() - started)
                written.append(path)
        return written

    def _variables(self) -> dict[str, np.dtype]:
        """The result variables and their dtypes in the files."""
        specs = FieldStatistics(1, 1, self.config.sa).results()
        if self.sobol:
            specs.update(SobolState(self.group_size - 2, 1, 1).results())
        floats = np.dtype(self.config.sa.output_dtype)
        return {k: floats if v.dtype.kind == "f" else v.dtype for k, v in specs.items()}

    def _leading(self) -> dict[str, list[float] | list[str]]:
        sa = self.config.sa
        return {"threshold": list(sa.threshold_values) if sa.threshold_exceedance else [],
                "quantile_level": list(sa.quantiles),
                "parameter": [p.name for p in self.config.parameters] if self.sobol else []}

    def _attrs(self) -> dict[str, str | int | float]:
        return {
            "melissa_version": __version__,
            "simulations_complete": self.simulations_complete,
            "simulations_seen": len(self.registry.simulations),
            "server_ranks": self.ranks,
        }

    def _field_attrs(self, field_id: int, global_size: int) -> dict[str, str | int | float]:
        """_attrs and, with quantiles, the field's K (the state's: a restart keeps it)."""
        attrs = self._attrs()
        stats = self.statistics.get(field_id)
        exact = stats.exact_samples if stats is not None else self._exact_samples(global_size)[0]
        if self.config.sa.quantiles and exact is not None:
            attrs["quantile_exact_samples"] = exact
        return attrs

    def _zarr(self, global_size: int) -> bool:
        """sa_config.output_format; auto: NetCDF up to _NETCDF_MAX_BYTES per field, uncompressed."""
        sa = self.config.sa
        if sa.output_format != "auto":
            return sa.output_format == "zarr"
        leading = self._leading()
        steps = self.config.study_options.nb_time_steps
        nbytes = sum(math.prod(len(leading[d]) for d in leading_dim(name)) * dtype.itemsize
                     for name, dtype in self._variables().items()) * steps * global_size
        return sa.output_compression != "none" or nbytes > _NETCDF_MAX_BYTES

    def _write_zarr(self, name: str, field_id: int, global_size: int,
                    shape: tuple[int, ...] | None) -> Path:
        """Every rank writes its own cells: no gather."""
        start, stop = cell_range(global_size, self.ranks, self.rank)
        stats = self.statistics.get(field_id)
        if stats is None:  # this rank never heard of the field: empty statistics for its cells
            stats = FieldStatistics(self.config.study_options.nb_time_steps, stop - start,
                                    self.config.sa)
        join = self.sobol.get(field_id)
        sobol = join.state.results() if join is not None else {}

        def results(steps: slice) -> dict[str, np.ndarray]:
            out = stats.results(steps)
            out.update({k: v[..., steps, :] for k, v in sobol.items()})
            return out

        self.paths.statistics.mkdir(parents=True, exist_ok=True)
        writer = ZarrResults(
            self.paths.field_results(name, zarr=True), name,
            nb_time_steps=self.config.study_options.nb_time_steps, shape=shape,
            global_size=global_size, leading=self._leading(), variables=self._variables(),
            ranges=cell_ranges(global_size, self.ranks), rank=self.rank, comm=self.comm,
            compression=self.config.sa.output_compression, durable=True,
        )
        return writer.write(results, self._field_attrs(field_id, global_size))

    def _write_netcdf(self, name: str, field_id: int, shape: tuple[int, ...] | None
                      ) -> Path | None:
        """Small studies: one file, every rank's cells gathered on rank 0."""
        stats = self.statistics.get(field_id)
        local = (self.registry.fields[field_id], self._results(field_id)) if stats else None
        parts = self.comm.gather(local, root=0) if self.comm is not None else [local]
        if self.rank != 0:
            return None
        info = next(p[0] for p in parts if p is not None)
        results = self._assemble(info, [p[1] if p else None for p in parts])
        path = self.paths.field_results(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_field_results(
            path, name, results, shape=shape, thresholds=[float(t) for t in self._leading()["threshold"]],
            parameters=[str(p) for p in self._leading()["parameter"]],
            quantile_levels=list(self.config.sa.quantiles),
            attrs=self._field_attrs(field_id, info.global_size),
            dtype=self.config.sa.output_dtype,
        )
        return path

    def _results(self, field_id: int) -> dict[str, np.ndarray]:
        out = self.statistics[field_id].results()
        if field_id in self.sobol:
            out.update(self.sobol[field_id].state.results())
        return out

    def _assemble(
        self, info: FieldInfo, parts: list[dict[str, np.ndarray] | None]
    ) -> dict[str, np.ndarray]:
        """Concatenate the ranks' cell slices (cells are the last axis); a rank that never saw
        the field contributes empty statistics for its cells."""
        steps = self.config.study_options.nb_time_steps
        filled = []
        for rank, part in enumerate(parts):
            if part is None:
                start, stop = cell_range(info.global_size, self.ranks, rank)
                part = FieldStatistics(steps, stop - start, self.config.sa).results()
                if self.sobol:
                    part.update(SobolState(self.group_size - 2, steps, stop - start).results())
            filled.append(part)
        return {name: np.concatenate([p[name] for p in filled], axis=-1) for name in filled[0]}

    # -- checkpoints ---------------------------------------------------------------------------
    def on_abandon(self, simulation_ids: list[int]) -> None:
        """Free the half-joined steps of the abandoned simulations' groups (a redraw abandons a
        whole group). What they sent before stays counted, once, as for any failed simulation."""
        if not self.sobol:
            return
        groups = {s // self.group_size for s in simulation_ids}
        freed = sum(join.abandon(groups) for join in self.sobol.values())
        if freed:
            log.info("freed %d half-joined (group, time step) buffers of abandoned groups %s",
                     freed, sorted(groups))

    def checkpoint_state(self) -> dict[str, np.ndarray]:
        """Arrays named "field<i>/<part>/<name>" for field id i: part "stats" holds
        FieldStatistics.state_dict(); in a Sobol' study, "sobol" the Martinez state
        (SobolState.state_dict()) and "join" the half-joined groups (GroupJoin.state_dict())."""
        state = {}
        for field_id, stats in self.statistics.items():
            parts = {"stats": stats.state_dict()}
            join = self.sobol.get(field_id)
            if join is not None:
                parts.update(sobol=join.state.state_dict(), join=join.state_dict())
            for part, arrays in parts.items():
                state.update({f"field{field_id}/{part}/{name}": a for name, a in arrays.items()})
        return state

    def restore_state(self, state: dict[str, np.ndarray]) -> None:
        parts: dict[int, dict[str, dict[str, np.ndarray]]] = {}
        for key, array in state.items():
            field, part, name = key.split("/", 2)
            parts.setdefault(int(field.removeprefix("field")), {}).setdefault(part, {})[name] = array
        if set(parts) != set(self.registry.fields):
            raise ValueError(f"statistics of field ids {sorted(parts)}, but the registry knows "
                             f"field ids {sorted(self.registry.fields)}")
        self.statistics = {field_id: FieldStatistics.from_state_dict(p["stats"], self.config.sa)
                           for field_id, p in parts.items()}
        self.sobol = {}
        if self.group_size == 1:
            return
        steps = self.config.study_options.nb_time_steps
        for field_id, p in parts.items():
            if "sobol" not in p or "join" not in p:
                raise ValueError(f"field id {field_id}: the checkpoint has no Sobol' state, but "
                                 "sa_config.sobol_indices is true")
            cells = self.registry.fields[field_id].local_size
            join = GroupJoin(SobolState.from_state_dict(p["sobol"], self.group_size - 2, steps,
                                                        cells))
            join.load_state_dict(p["join"])
            self.sobol[field_id] = join


def _nanmax(a: float, b: float) -> float:
    return b if math.isnan(a) else a if math.isnan(b) else max(a, b)
