"""Between server ranks: rank r > 0 reports to rank 0 (RANK_EVENT: its completions and its
status), rank 0 keeps what every rank said and forwards the launcher's ABANDON and FINISH to all.

Rank 0 sends to a rank only once every rank's channel has said hello (its first status): a
ROUTER silently drops messages to a peer it has not seen yet, so earlier ones are held.
"""

from __future__ import annotations

from typing import Any

from melissa.errors import ProtocolError
from melissa.protocol import Header, Kind, encode_json
from melissa.server.transport import Transport, rank_identity


class RankRelay:
    def __init__(self, transport: Transport, token: bytes, rank: int, ranks: int) -> None:
        self.transport = transport
        self.token = token
        self.rank, self.ranks = rank, ranks
        self.complete_on: dict[int, set[int]] = {}  # rank 0: simulation -> ranks done with it
        self.rank_status: dict[int, dict[str, Any]] = {}  # rank 0: latest status of each rank
        self._held: list[list[bytes]] = []  # rank 0: until every rank's channel is up

    # -- rank r > 0 ------------------------------------------------------------------------------
    def to_rank0(self, body: dict[str, Any]) -> None:
        body["rank"] = self.rank
        self.transport.send_up([Header(Kind.RANK_EVENT, self.token).encode(), encode_json(body)])

    # -- rank 0 ----------------------------------------------------------------------------------
    @property
    def all_connected(self) -> bool:
        """Every other rank's channel has said hello."""
        return len(self.rank_status) >= self.ranks - 1

    def to_ranks(self, frames: list[bytes]) -> None:
        """Rank 0 -> every other rank, in order (held until all are connected)."""
        self._held.append(frames)
        self.flush()

    def flush(self) -> None:
        if not self._held or not self.all_connected:
            return
        for held in self._held:
            for rank in range(1, self.ranks):
                self.transport.send([rank_identity(rank), *held])
        self._held.clear()

    def rank_event(self, body: dict[str, Any]) -> int | None:
        """Record a RANK_EVENT; returns the simulation it reports complete, if any."""
        try:
            rank = int(body["rank"])
            if not 0 < rank < self.ranks:
                raise ValueError(f"rank {rank}")
            complete = int(body["simulation_complete"]) if "simulation_complete" in body else None
            if "status" in body:
                status = dict(body["status"])
                status["silent_s"] = {str(int(s)): float(age)
                                      for s, age in dict(status.get("silent_s", {})).items()}
                self.rank_status[rank] = status
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"RANK_EVENT payload lacks or garbles {exc}") from None
        if complete is not None and self.rank_complete(complete, rank):
            return complete
        return None

    def rank_complete(self, simulation_id: int, rank: int) -> bool:
        """Rank `rank` holds all of the simulation's data; True once every rank does."""
        done = self.complete_on.setdefault(simulation_id, set())
        done.add(rank)
        return len(done) == self.ranks

    def complete_everywhere(self) -> set[int]:
        """The simulations whose data every rank holds."""
        return {s for s, done in self.complete_on.items() if len(done) == self.ranks}
