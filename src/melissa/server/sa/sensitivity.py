"""The sensitivity-analysis server: iterative statistics of every field (results.py writes them).

In a Sobol' study (sa_config.sobol_indices) each field also has a `GroupJoin` that assembles the
pick-freeze groups and updates the Martinez state; the other statistics then take only the A and
B members of each group, the independent draws. A simulation's data reaches the statistics only
once it is complete on this rank (its whole group, for the indices): until then it is held apart
(held.py), so that a simulation abandoned half-way leaves no trace in the results, up to a
budget per rank (sa_config.hold_memory_mb) beyond which simulations are committed early (early.py:
if one is abandoned after all, the results flag its steps). Every few
seconds the aggregated indices of each field and their widest 95% interval (convergence.py) go
to statistics/sobol_convergence.csv and to the launcher, so that a user sees them converge, and
sa_config.stop_when's figure (figures.py) to statistics/stop_when.csv.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from melissa.protocol.events import StopWhenReached
from melissa.server.base import Server
from melissa.server.registry import FieldInfo
from melissa.server.sa.convergence import field_convergence, log_rows
from melissa.server.sa.early import EarlyCommits
from melissa.server.sa.figures import FIGURES, FieldState
from melissa.server.sa.groups import GroupJoin
from melissa.server.sa.held import HeldChunks
from melissa.server.sa.results import ResultsWriter
from melissa.server.stats import FieldStatistics, compile_kernels, quantiles
from melissa.server.stats.sobol import SobolState
from melissa.server.stats.sobol_aggregate import combine
from melissa.server.stats.sobol_second import SecondOrderState

log = logging.getLogger("melissa.server")

_CONVERGENCE_PERIOD_S = 5.0


class SensitivityServer(Server):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.statistics: dict[int, FieldStatistics] = {}
        self.sobol: dict[int, GroupJoin] = {}  # field id -> its pick-freeze groups' join
        self.group_size = self.config.group_size
        self._p = len(self.config.parameters)
        self.writer = ResultsWriter(self)
        self.held = HeldChunks(self._hold_budget)  # running simulations' chunks, until complete
        self.early = EarlyCommits()  # simulations committed before completing (hold budget)
        self.abandoned_included: list[int] = []  # over every rank, known once finishing
        if self._hold_budget > 0:
            log.info("running simulations' data held up to %g MiB on this rank "
                     "(sa_config.hold_memory_mb)", self.config.sa.hold_memory_mb)
        else:
            log.info("sa_config.hold_memory_mb 0: every chunk goes to the statistics on arrival; "
                     "a simulation abandoned later leaves its data in, flagged")
        self.dropped: set[int] = set()  # simulations whose partial data was left out
        self._convergence: dict[str, dict[str, Any]] = {}  # this rank's, refreshed periodically
        self._figure_parts: dict[str, list[float]] = {}  # stop_when: this rank's partial sums
        self._counted = 0  # simulations in this rank's statistics, at the last refresh
        self._judged_version = 0  # the refresh rank 0 last judged stop_when on
        self._stop_told = False
        self._next_convergence = 0.0
        self._convergence_version = 0  # refreshes so far
        self._logged_version = 0  # the refresh rank 0 last wrote rows for
        self._started = time.monotonic()
        compile_kernels(self.config.sa)  # before clients can connect
        if self.group_size > 1:
            SobolState(1, 1, 1).update(0, np.zeros((3, 1)))  # compile the Sobol' kernel too
            if self.config.sa.second_order:
                SecondOrderState(2, 1, 1).update(0, np.zeros((6, 1)), 0)

    def on_field(self, info: FieldInfo) -> None:
        steps = self.config.study_options.nb_time_steps
        exact, why = self.exact_samples(info.global_size)
        if exact is not None and self.rank == 0:
            log.info("field %r: quantiles exact up to %d samples per cell (%s)", info.name,
                     exact, why)
        stats = FieldStatistics(steps, info.local_size, self.config.sa, exact)
        self.statistics[info.field_id] = stats
        size = stats.nbytes
        if self.group_size > 1:
            state = SobolState(self._p, steps, info.local_size)
            second = (SecondOrderState(self._p, steps, info.local_size)
                      if self.config.sa.second_order else None)
            self.sobol[info.field_id] = GroupJoin(state, second)
            size += state.nbytes + (second.nbytes if second is not None else 0)
        log.info("field %r: %.1f MB of statistics state, and %.1f MB (float64) per running "
                 "simulation held until it completes", info.name, size / 1e6,
                 steps * info.local_size * 8 / 1e6)

    @property
    def _hold_budget(self) -> int:
        return int(self.config.sa.hold_memory_mb * 2**20)

    def exact_samples(self, global_size: int) -> tuple[int | None, str]:
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
        if simulation_id not in self.early:
            for group in self.held.to_fold(simulation_id, data.nbytes, self.group_size):
                self._commit_early(group)
        if simulation_id in self.early:
            self._commit(simulation_id, info.field_id, time_step, local_start, data)
        else:
            self.held.add(simulation_id, info.field_id, time_step, local_start, data, frame=True)

    def _commit_early(self, group: int) -> None:
        """sa_config.hold_memory_mb reached: the group's (simulation's) held data goes to the
        statistics now, and its next chunks on arrival."""
        members = range(group * self.group_size, (group + 1) * self.group_size)
        freed = 0
        for member in members:
            self.early.start(member)
            for field_id, time_step, start, values in self.held.chunks(member):
                self._commit(member, field_id, time_step, start, values)
            freed += self.held.drop(member)
        if self._hold_budget > 0:  # 0: every simulation, said once in on_field's line
            log.info("hold_memory_mb (%g MiB) reached: committed simulations %s before they "
                     "complete (%.1f MB); should they be abandoned, their data stays in the "
                     "results", self.config.sa.hold_memory_mb, list(members), freed / 1e6)

    def _commit(self, simulation_id: int, field_id: int, time_step: int, start: int,
                values: np.ndarray) -> None:
        """A chunk of an early-committed simulation: to the statistics (unless its simulation
        is complete, so counted already) and the Sobol' join."""
        sim = self.registry.simulations.get(simulation_id)
        counted = sim is not None and sim.complete
        if not counted and (self.group_size == 1 or simulation_id % self.group_size < 2):
            self.statistics[field_id].update(time_step, start, values, simulation_id)
        if self.group_size > 1:
            self.sobol[field_id].add(simulation_id, time_step, start, values)
        self.early.record(simulation_id, field_id, time_step)

    def on_complete(self, simulation_id: int) -> None:
        """Its held chunks go to the statistics (A and B members only, in a Sobol' study); the
        group's go to the Sobol' join once every member is complete here."""
        if self.group_size == 1 or simulation_id % self.group_size < 2:
            for field_id, time_step, start, values in self.held.chunks(simulation_id):
                self.statistics[field_id].update(time_step, start, values, simulation_id)
        if self.group_size == 1:
            self.held.drop(simulation_id)
            self.early.settle(simulation_id)
            return
        group = simulation_id // self.group_size
        members = range(group * self.group_size, (group + 1) * self.group_size)
        sims = self.registry.simulations
        if not all(m in sims and sims[m].complete for m in members):
            return
        steps = self.config.study_options.nb_time_steps
        for field_id, join in self.sobol.items():
            for time_step in range(steps):  # step by step: the join holds one step at a time
                for member in members:
                    for start, values in self.held.step(member, field_id, time_step):
                        join.add(member, time_step, start, values)
        for member in members:
            self.held.drop(member)
            self.early.settle(member)

    @property
    def simulations_counted(self) -> list[int]:
        """The simulations whose data the statistics (count, moments, ...) hold."""
        return [s for s in self.registry.completed
                if self.group_size == 1 or s % self.group_size < 2]

    # -- convergence: the Sobol' indices, sa_config.stop_when ----------------------------------
    def on_status(self, now: float) -> dict[str, Any]:
        stop_when = self.config.sa.stop_when
        if not self.sobol and stop_when is None:
            return {}
        if now >= self._next_convergence:
            self._refresh_convergence()
            self._next_convergence = now + _CONVERGENCE_PERIOD_S
        out: dict[str, Any] = {"sobol_aggregate": self._convergence} if self.sobol else {}
        if stop_when is not None:
            out.update(stop_when=self._figure_parts, counted=self._counted)
        return out

    def on_report(self, event: dict[str, Any], statuses: list[dict[str, Any]]) -> None:
        if self.sobol and self._convergence:
            fields = self._combined(statuses)
            event["sobol_convergence"] = fields
            if self._logged_version != self._convergence_version:  # new figures since the last rows
                self._logged_version = self._convergence_version
                self._log_rows(fields)
        fresh = self._judged_version != self._convergence_version
        if self.config.sa.stop_when is not None and fresh:
            self._judged_version = self._convergence_version
            self._judge_stop(time.monotonic(), statuses)

    def _judge_stop(self, now: float, statuses: list[dict[str, Any]]) -> None:
        """Rank 0: the figure over every rank (the worst field's), logged to
        statistics/stop_when.csv; the launcher hears once it is below the target."""
        stop_when = self.config.sa.stop_when
        assert stop_when is not None
        figure = FIGURES[stop_when.figure]
        names = {name for s in statuses for name in s.get("stop_when", {})}
        values = [figure.combine([s["stop_when"][n] for s in statuses
                                  if n in s.get("stop_when", {})]) for n in sorted(names)]
        value = math.nan if not values or any(math.isnan(v) for v in values) else max(values)
        counted = min(int(s.get("counted", 0)) for s in statuses)
        path = self.paths.stop_when
        path.parent.mkdir(parents=True, exist_ok=True)
        new_file = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.writer(f)
            if new_file:
                writer.writerow(("elapsed_s", "simulations", "figure", "value", "below"))
            writer.writerow([f"{now - self._started:.1f}", counted, stop_when.figure,
                             f"{value:.6g}", f"{stop_when.below:.6g}"])
        if not (value < stop_when.below and counted >= stop_when.min_simulations):
            return
        if not self._stop_told:
            log.info("stop_when: %s %.4g < %.4g with %d simulations: no more simulations",
                     stop_when.figure, value, stop_when.below, counted)
            self._stop_told = True
        self.emit(StopWhenReached(stop_when.figure, value, stop_when.below, counted).to_json())

    def _log_rows(self, fields: dict[str, dict[str, Any]]) -> None:
        log_rows(self.paths.sobol_convergence, time.monotonic() - self._started, fields,
                 [p.name for p in self.config.parameters])
        for name, f in fields.items():
            log.info("Sobol' indices of %r: %d complete groups, widest 95%% interval of the "
                     "aggregated indices %s", name, f["groups"], f["widest_interval"])

    def _refresh_convergence(self) -> None:
        """This rank's figures: stop_when's partial sums per field, and per field name its
        aggregated-index summary and the MB its join holds."""
        self._convergence_version += 1
        stop_when = self.config.sa.stop_when
        if stop_when is not None:
            local = FIGURES[stop_when.figure].local
            fields = self.registry.fields
            self._figure_parts = {
                fields[i].name: local(FieldState(stats, self.sobol[i].aggregate if i in self.sobol
                                                 else None))
                for i, stats in self.statistics.items()}
            self._counted = len(self.simulations_counted)
        self._convergence = {
            self.registry.fields[field_id].name: {**join.aggregate.summary(),
                                                  "join_mb": join.nbytes / 1e6}
            for field_id, join in self.sobol.items()}

    @staticmethod
    def _combined(statuses: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Rank 0: every rank's summaries of each field, combined (convergence.py)."""
        per_field: dict[str, list[dict[str, Any]]] = {}
        for status in statuses:
            for name, summary in status.get("sobol_aggregate", {}).items():
                per_field.setdefault(name, []).append(summary)
        return {name: field_convergence(parts, sum(p["join_mb"] for p in parts))
                for name, parts in per_field.items()}

    # -- results -------------------------------------------------------------------------------
    def on_finish(self) -> list[Path]:
        written = []
        sims = self.registry.simulations
        unfinished = [s for s in self.held.simulations if s not in sims or not sims[s].complete]
        if unfinished:
            log.warning("simulations %s did not complete: their partial data is left out of the "
                        "results", unfinished)
        self._drop(self.held.simulations)
        self._abandon_early(sorted(self.early.running))  # committed early, never completed
        self._flag_abandoned()
        log.info("held at most %.1f MB of running simulations' data", self.held.peak_nbytes / 1e6)
        for join in self.sobol.values():
            if join.pending:
                log.warning("%d half-joined (group, time step) pairs left incomplete: their "
                            "members did not all arrive; not counted", len(join.pending))
        if self.sobol or self.config.sa.stop_when is not None:
            self._refresh_convergence()
            # The launcher's last figures; the log's last rows come from every rank's final
            # state below (the other ranks' statuses may be a few seconds old).
            self._logged_version = self._convergence_version
            self.emit_status(time.monotonic())
        final: dict[str, dict[str, Any]] = {}
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
            aggregated, scale, convergence = self._sobol_summary(field_id)
            if convergence is not None:
                final[name] = convergence
            started = time.monotonic()
            if self.writer.use_zarr(global_size):
                path = self.writer.write_zarr(name, field_id, global_size, shape, aggregated, scale)
            elif (gathered := self.writer.write_netcdf(name, field_id, shape, aggregated,
                                                 scale)) is not None:
                path = gathered
            else:
                continue
            if self.rank == 0:
                log.info("wrote %s in %.2f s", path, time.monotonic() - started)
                written.append(path)
        if final and self.rank == 0:
            self._log_rows(final)
        return written

    def _sobol_summary(self, field_id: int) -> tuple[
            dict[str, np.ndarray], np.ndarray | None, dict[str, Any] | None]:
        """Collective, over the ranks: the field's aggregated indices and bounds, (parameter,)
        each; its largest output variance per time step (the scale of negligible cells,
        SobolState.results); its `field_convergence`. ({}, None, None) without Sobol' indices."""
        if not self.sobol:
            return {}, None, None
        join = self.sobol.get(field_id)
        mine = ({**join.aggregate.summary(), "join_mb": join.nbytes / 1e6,
                 "scale": join.state.variance_scale()} if join is not None else None)
        parts = [s for s in (self.comm.allgather(mine) if self.comm else [mine]) if s]
        aggregated = {k: v for k, v in combine(parts).items() if k.startswith("sobol_")}
        scale = np.max([p["scale"] for p in parts], axis=0)
        return aggregated, scale, field_convergence(parts, sum(p["join_mb"] for p in parts))

    # -- checkpoints ---------------------------------------------------------------------------
    def on_abandon(self, simulation_ids: list[int]) -> None:
        """Drop what the abandoned simulations sent (for Sobol' indices: what their whole
        groups sent, as a redraw replaces the group; its members complete before stay in the
        other statistics)."""
        size = self.group_size
        groups = {s // size for s in simulation_ids}
        members = sorted({g * size + m for g in groups for m in range(size)})
        self._abandon_early(members)  # before the join forgets the groups' half-joined steps
        self._drop(members)
        freed = sum(join.abandon(groups) for join in self.sobol.values())
        if freed:
            log.info("freed %d half-joined (group, time step) buffers of abandoned groups %s",
                     freed, sorted(groups))

    def _abandon_early(self, simulation_ids: list[int]) -> None:
        """Of these simulations, those committed early and not complete never will: their data
        stays in the results (in the statistics for an A or B member; in the Sobol' indices at
        the steps its group completed in the join), to be flagged. A complete member of such a
        group is counted where it belongs; its group's steps in the indices are flagged by the
        members that did not complete."""
        kept = []
        for member in simulation_ids:
            sim = self.registry.simulations.get(member)
            if sim is not None and sim.complete:
                self.early.settle(member)
            if member not in self.early:
                continue
            group = member // self.group_size
            left_out = set() if self.group_size == 1 or member % self.group_size < 2 else {
                (field_id, t) for field_id, join in self.sobol.items()
                for g, t in join.pending if g == group}
            if self.early.abandon(member, left_out):
                kept.append(member)
        if kept:
            log.warning("simulations %s were committed early (sa_config.hold_memory_mb) and did "
                        "not complete: their data stays in the results, flagged by "
                        "abandoned_samples", kept)

    def _flag_abandoned(self) -> None:
        """Collective: every rank learns which abandoned simulations' data the results hold;
        rank 0 lists them with their time steps in statistics/abandoned_data.csv."""
        fields = self.registry.fields
        mine = {sim: {fields[f].name: self.early.steps_of(sim, f) for f in self.statistics}
                for sim in self.early.abandoned}
        parts = self.comm.allgather(mine) if self.comm is not None else [mine]
        self.abandoned_included = sorted({sim for part in parts for sim in part})
        if self.rank != 0 or not self.abandoned_included:
            return
        path = self.paths.abandoned_data
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(("simulation", "field", "server_rank", "time_steps"))
            for rank, part in enumerate(parts):
                for sim, steps in sorted(part.items()):
                    for name, listed in steps.items():
                        if listed:
                            writer.writerow((sim, name, rank, _ranges(listed)))
        log.warning("the results hold data of %d simulations that did not complete (committed "
                    "early under sa_config.hold_memory_mb): %s; steps in %s",
                    len(self.abandoned_included), self.abandoned_included, path)

    def abandoned_counts(self, field_id: int, cells: int) -> dict[str, np.ndarray]:
        """{"abandoned_samples": (time, cells)} once any rank holds abandoned data, else {}."""
        if not self.abandoned_included:
            return {}
        steps = self.config.study_options.nb_time_steps
        counts = self.early.counts(field_id, steps)
        return {"abandoned_samples": np.repeat(counts[:, None], cells, axis=1)}

    def _drop(self, simulation_ids: list[int]) -> None:
        """Forget the held chunks of these simulations: their data stays out of the results."""
        dropped = [s for s in simulation_ids if s in self.held]
        freed = sum(self.held.drop(s) for s in dropped)
        counted = set(self.simulations_counted)
        self.dropped.update(s for s in dropped if s not in counted)
        if dropped:
            log.info("left the data of simulations %s out of the results (%.1f MB)", dropped,
                     freed / 1e6)

    def checkpoint_state(self) -> dict[str, np.ndarray]:
        """Arrays named "field<i>/<part>/<name>" for field id i: part "stats" holds
        FieldStatistics.state_dict(); in a Sobol' study, "sobol" the Martinez state
        (SobolState.state_dict()) and "join" the half-joined groups (GroupJoin.state_dict())."""
        state = {f"held/{name}": a for name, a in self.held.state_dict().items()}
        state["held/dropped"] = np.array(sorted(self.dropped), np.int64)
        state.update({f"held/{name}": a for name, a in self.early.state_dict().items()})
        for field_id, stats in self.statistics.items():
            parts = {"stats": stats.state_dict()}
            join = self.sobol.get(field_id)
            if join is not None:
                parts.update(sobol=join.state.state_dict(), join=join.state_dict())
                if join.second is not None:
                    parts["sobol2"] = join.second.state_dict()
            for part, arrays in parts.items():
                state.update({f"field{field_id}/{part}/{name}": a for name, a in arrays.items()})
        return state

    def restore_state(self, state: dict[str, np.ndarray]) -> None:
        parts: dict[int, dict[str, dict[str, np.ndarray]]] = {}
        held = {k.removeprefix("held/"): a for k, a in state.items() if k.startswith("held/")}
        if held:
            self.dropped = {int(s) for s in held.pop("dropped")}
            self.early = EarlyCommits.from_state_dict(
                {k: held.pop(k) for k in list(held) if k.startswith("early_")})
            self.held = HeldChunks.from_state_dict(held)
            self.held.budget = self._hold_budget
        for key, array in state.items():
            if key.startswith("held/"):
                continue
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
            second = None
            if self.config.sa.second_order:
                if "sobol2" not in p:
                    raise ValueError(f"field id {field_id}: the checkpoint has no second-order "
                                     "Sobol' state, but sa_config.second_order is true")
                second = SecondOrderState(self._p, steps, cells)
                second.load_state_dict(p["sobol2"])
            join = GroupJoin(SobolState.from_state_dict(p["sobol"], self._p, steps, cells),
                             second)
            join.load_state_dict(p["join"])
            self.sobol[field_id] = join


def _ranges(steps: list[int]) -> str:
    """Sorted time steps as "0-4 7 9-10"."""
    runs: list[list[int]] = []
    for step in steps:
        if runs and step == runs[-1][1] + 1:
            runs[-1][1] = step
        else:
            runs.append([step, step])
    return " ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)

