"""What one server rank knows about fields and simulations: the truth about received data.

Pure bookkeeping (no sockets) so that every rule of "nothing lost, nothing counted twice" is
checked in one place: a chunk is identified by (simulation, field, time step, client rank), since
each client rank sends each server rank exactly one piece per field and time step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from melissa.errors import CheckpointError, ProtocolError
from melissa.protocol import Piece, cell_range, cell_ranges, split


@dataclass(frozen=True)
class FieldInfo:
    field_id: int
    name: str
    global_size: int
    shape: tuple[int, ...] | None
    start: int  # this server rank's first cell
    stop: int

    @property
    def local_size(self) -> int:
        return self.stop - self.start


@dataclass
class _FieldProgress:
    """One simulation's progress on one field, as seen by this server rank."""

    declared: dict[int, tuple[int, int]] = field(default_factory=dict)  # client rank -> (offset, n)
    received: np.ndarray | None = None  # bool (time steps, client ranks)


@dataclass
class SimulationProgress:
    simulation_id: int
    client_ranks: int
    attempt: int
    fields: dict[int, _FieldProgress] = field(default_factory=dict)
    ended: set[int] = field(default_factory=set)
    complete: bool = False
    chunks_received: int = 0


class Registry:
    """`whole_fields`: every simulation's fields go whole to one server rank (simulation id
    modulo ranks), as training needs whole samples; otherwise (statistics) every rank owns a
    contiguous cell range of every field (partition.cell_range)."""

    def __init__(
        self,
        field_names: list[str],
        nb_time_steps: int,
        rank: int = 0,
        ranks: int = 1,
        whole_fields: bool = False,
    ) -> None:
        self.field_ids = {name: i for i, name in enumerate(field_names)}
        self.nb_time_steps = nb_time_steps
        self.rank, self.ranks = rank, ranks
        self.whole_fields = whole_fields
        self.fields: dict[int, FieldInfo] = {}
        self.simulations: dict[int, SimulationProgress] = {}
        self.abandoned: set[int] = set()  # the launcher gave up on these: refuse them for good

    # -- handshake ----------------------------------------------------------------------------
    def declare(
        self,
        simulation_id: int,
        attempt: int,
        client_rank: int,
        client_ranks: int,
        name: str,
        global_size: int,
        shape: tuple[int, ...] | None,
        offset: int,
        count: int,
    ) -> tuple[FieldInfo, bool]:
        """Register a client rank's HELLO; returns the field and whether it is new to the study."""
        self._refuse_abandoned(simulation_id)
        field_id = self.field_ids.get(name)
        if field_id is None:
            raise ProtocolError(
                f"unknown field {name!r}: study_options.field_names is {list(self.field_ids)}"
            )
        if global_size <= 0:
            raise ProtocolError(f"field {name!r}: global size must be positive, got {global_size}")
        if shape is not None and (any(s <= 0 for s in shape) or math.prod(shape) != global_size):
            raise ProtocolError(f"field {name!r}: shape {shape} does not hold {global_size} values")
        if client_ranks < 1 or not 0 <= client_rank < client_ranks:
            raise ProtocolError(f"client rank {client_rank} out of range for {client_ranks} ranks")
        if offset + count > global_size:
            raise ProtocolError(
                f"field {name!r}: cells [{offset}, {offset + count}) exceed its size {global_size}"
            )
        info = self.fields.get(field_id)
        new = info is None
        if info is None:
            start, stop = (
                (0, global_size) if self.whole_fields
                else cell_range(global_size, self.ranks, self.rank)
            )
            info = FieldInfo(field_id, name, global_size, shape, start, stop)
        elif info.global_size != global_size:
            raise ProtocolError(
                f"field {name!r} has {global_size} values here but {info.global_size} in the "
                "simulations before: every simulation must send the same field size"
            )
        elif shape is not None and info.shape is not None and shape != info.shape:
            raise ProtocolError(f"field {name!r}: shape {shape} differs from {info.shape} before")
        sim = self.simulations.get(simulation_id)
        if sim is None:
            sim = SimulationProgress(simulation_id, client_ranks, attempt)
            self.simulations[simulation_id] = sim
        elif sim.client_ranks != client_ranks:
            raise ProtocolError(
                f"simulation {simulation_id}: {client_ranks} client ranks declared, "
                f"{sim.client_ranks} before"
            )
        sim.attempt = max(sim.attempt, attempt)
        if sim.complete:
            # A rerun of a simulation this rank holds whole (it was incomplete on another rank,
            # or the server restarted): welcome it, its data will be dropped as duplicates.
            return info, new
        progress = sim.fields.setdefault(field_id, _FieldProgress())
        for other, (o_off, o_n) in progress.declared.items():
            if other != client_rank and offset < o_off + o_n and o_off < offset + count:
                raise ProtocolError(
                    f"field {name!r}: client rank {client_rank} cells [{offset}, {offset + count})"
                    f" overlap client rank {other}'s [{o_off}, {o_off + o_n})"
                )
        progress.declared[client_rank] = (offset, count)
        if progress.received is None:
            progress.received = np.zeros((self.nb_time_steps, client_ranks), dtype=bool)
        self.fields[field_id] = info
        return info, new

    # -- data ---------------------------------------------------------------------------------
    def accept_chunk(
        self,
        simulation_id: int,
        client_rank: int,
        field_id: int,
        time_step: int,
        offset: int,
        count: int,
    ) -> bool:
        """Validate a DATA header; True if the chunk is new, False if it is a duplicate."""
        self._refuse_abandoned(simulation_id)
        info = self.fields.get(field_id)
        if info is None:
            raise ProtocolError(f"unknown field id {field_id}")
        sim = self.simulations.get(simulation_id)
        progress = sim.fields.get(field_id) if sim else None
        if sim is None or progress is None or client_rank not in progress.declared:
            raise ProtocolError(
                f"simulation {simulation_id} rank {client_rank} sent field {info.name!r} "
                "without declaring it (init) first"
            )
        if not 0 <= time_step < self.nb_time_steps:
            raise ProtocolError(
                f"time step {time_step} out of range: study_options.nb_time_steps is "
                f"{self.nb_time_steps}"
            )
        expected = self.expected_piece(info, simulation_id, *progress.declared[client_rank])
        if expected is None or (offset, count) != (expected.global_offset, expected.count):
            raise ProtocolError(
                f"field {info.name!r}: chunk [{offset}, {offset + count}) is not the piece of "
                f"client rank {client_rank} owned by server rank {self.rank}"
            )
        assert progress.received is not None
        if progress.received[time_step, client_rank]:
            return False
        progress.received[time_step, client_rank] = True
        sim.chunks_received += 1
        return True

    def ranges(self, info: FieldInfo, simulation_id: int) -> list[tuple[int, int]]:
        """The cells of `info` each server rank owns, for this simulation."""
        if not self.whole_fields:
            return cell_ranges(info.global_size, self.ranks)
        owner = simulation_id % self.ranks
        return [(0, info.global_size) if r == owner else (0, 0) for r in range(self.ranks)]

    def expected_piece(
        self, info: FieldInfo, simulation_id: int, offset: int, count: int
    ) -> Piece | None:
        if self.whole_fields and simulation_id % self.ranks != self.rank:
            return None
        mine = split(offset, count, [(info.start, info.stop)])
        return mine[0] if mine else None

    # -- completion ---------------------------------------------------------------------------
    def end(self, simulation_id: int, client_rank: int) -> bool:
        """Record a client rank's END; True when the simulation just became complete here."""
        self._refuse_abandoned(simulation_id)
        sim = self.simulations.get(simulation_id)
        if sim is None:
            raise ProtocolError(f"simulation {simulation_id} ended without declaring any field")
        if not 0 <= client_rank < sim.client_ranks:
            raise ProtocolError(f"client rank {client_rank} out of range for {sim.client_ranks}")
        if sim.complete:
            return False
        missing = self._missing(sim, client_rank)
        if missing:
            raise ProtocolError(f"simulation {simulation_id} rank {client_rank} ended {missing}")
        sim.ended.add(client_rank)
        sim.complete = len(sim.ended) == sim.client_ranks
        return sim.complete

    def _missing(self, sim: SimulationProgress, client_rank: int) -> str:
        undeclared = [n for n, i in self.field_ids.items() if i not in sim.fields]
        if undeclared:
            return f"without sending field(s) {undeclared}"
        for field_id, progress in sim.fields.items():
            if client_rank not in progress.declared:
                continue
            info = self.fields[field_id]
            if self.expected_piece(info, sim.simulation_id, *progress.declared[client_rank]) is None:
                continue  # this rank owns none of that client rank's cells
            assert progress.received is not None
            got = int(progress.received[:, client_rank].sum())
            if got != self.nb_time_steps:
                return f"with {got} of {self.nb_time_steps} time steps of field {info.name!r}"
        return ""

    @property
    def completed(self) -> list[int]:
        return sorted(s.simulation_id for s in self.simulations.values() if s.complete)

    # -- abandoned simulations ----------------------------------------------------------------
    def abandon(self, simulation_ids: list[int]) -> list[int]:
        """Refuse these simulations from now on and forget their progress unless they are
        complete here (the server drops what it holds of the others: Server.on_abandon);
        returns the newly abandoned."""
        new = sorted(set(simulation_ids) - self.abandoned)
        self.abandoned.update(new)
        for simulation_id in new:
            sim = self.simulations.get(simulation_id)
            if sim is not None and not sim.complete:
                del self.simulations[simulation_id]
        return new

    def _refuse_abandoned(self, simulation_id: int) -> None:
        if simulation_id in self.abandoned:
            raise ProtocolError(
                f"simulation {simulation_id} was abandoned by the launcher (failed for good or "
                "redrawn): its messages are refused"
            )

    # -- checkpoints --------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Everything `restore` needs: JSON metadata (fields, each simulation's declared pieces,
        ended ranks, completion, attempt; abandoned ids) and one array, "received": the
        received-chunk bitmaps of every (simulation, field), in metadata order, bit-packed."""
        simulations, bitmaps = [], []
        for sim in self.simulations.values():
            fields = []
            for field_id, progress in sim.fields.items():
                declared = [[r, o, n] for r, (o, n) in progress.declared.items()]
                fields.append([field_id, declared])
                assert progress.received is not None
                bitmaps.append(progress.received.reshape(-1))
            simulations.append([sim.simulation_id, sim.client_ranks, sim.attempt, sim.complete,
                                sim.chunks_received, sorted(sim.ended), fields])
        meta = {
            "field_names": list(self.field_ids), "nb_time_steps": self.nb_time_steps,
            "rank": self.rank, "ranks": self.ranks, "whole_fields": self.whole_fields,
            "fields": [[f.field_id, f.name, f.global_size, f.shape, f.start, f.stop]
                       for f in self.fields.values()],
            "simulations": simulations,
            "abandoned": sorted(self.abandoned),
        }
        bits = np.concatenate(bitmaps) if bitmaps else np.zeros(0, bool)
        return meta, {"received": np.packbits(bits)}

    def restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Replace this registry's content with a `state()` of the same study layout."""
        layout = {"field_names": list(self.field_ids), "nb_time_steps": self.nb_time_steps,
                  "rank": self.rank, "ranks": self.ranks, "whole_fields": self.whole_fields}
        saved = {key: meta.get(key) for key in layout}
        if saved != layout:
            raise CheckpointError(
                f"the checkpoint's study layout {saved} differs from this server's {layout}: "
                "restart with the same config, or delete output_dir/checkpoints to start over"
            )
        try:
            self._restore(meta, arrays)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise CheckpointError(f"malformed registry state in the checkpoint: {exc!r}") from None

    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.fields = {
            int(i): FieldInfo(int(i), str(name), int(size),
                              tuple(shape) if shape is not None else None, int(start), int(stop))
            for i, name, size, shape, start, stop in meta["fields"]
        }
        bits = np.unpackbits(arrays["received"]).astype(bool)
        used = 0
        self.simulations = {}
        for sim_id, client_ranks, attempt, complete, chunks, ended, fields in meta["simulations"]:
            sim = SimulationProgress(int(sim_id), int(client_ranks), int(attempt),
                                     ended={int(r) for r in ended}, complete=bool(complete),
                                     chunks_received=int(chunks))
            n = self.nb_time_steps * sim.client_ranks
            for field_id, declared in fields:
                if used + n > bits.size:
                    raise ValueError("fewer received bits than declared pieces")
                sim.fields[int(field_id)] = _FieldProgress(
                    {int(r): (int(o), int(c)) for r, o, c in declared},
                    bits[used : used + n].reshape(self.nb_time_steps, sim.client_ranks).copy(),
                )
                used += n
            self.simulations[sim.simulation_id] = sim
        self.abandoned = {int(s) for s in meta["abandoned"]}
