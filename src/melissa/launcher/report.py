"""Study reports written by the launcher: parameters.csv."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from melissa.atomic import atomic_write
from melissa.launcher.state import SimulationRecord
from melissa.sampling import member_label


def write_parameters_csv(
    path: Path, names: Sequence[str], records: Sequence[SimulationRecord], group_size: int = 1,
    extra: tuple[Sequence[str], Mapping[int, Sequence[str]]] | None = None,
) -> None:
    """One row per simulation: simulation_id, each parameter, status, attempts, exit_code, message.
    With Sobol' groups (group_size > 1: simulation id = group * group_size + member), the columns
    sobol_group and sobol_member (A, B, C_<parameter>) follow simulation_id. `extra` (column
    names, simulation id -> their cells) adds columns after the parameters (active sampling's
    generation, parent, fitness), empty for simulations it does not name.

    Parameter values are written with repr, so float(cell) gives back the exact value. The file
    is replaced atomically: a reader sees the old or the new table, never half of one.
    """
    extra_names, cells = extra if extra is not None else ((), {})
    blank = [""] * len(extra_names)
    rows = []
    for record in records:
        row = _row(names, record, group_size)
        at = len(row) - 4  # before status, attempts, exit_code, message
        rows.append(row[:at] + list(cells.get(record.simulation_id, blank)) + row[at:])
    with atomic_write(path, durable=True, mode=0o644) as tmp, \
            open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        group_columns = ["sobol_group", "sobol_member"] if group_size > 1 else []
        writer.writerow(["simulation_id", *group_columns, *names, *extra_names, "status",
                         "attempts", "exit_code", "message"])
        writer.writerows(rows)


def _row(names: Sequence[str], record: SimulationRecord, group_size: int) -> list[str]:
    if len(record.parameters) != len(names):
        raise ValueError(
            f"simulation {record.simulation_id} has {len(record.parameters)} parameter values "
            f"for {len(names)} names"
        )
    exit_code = "" if record.exit_code is None else str(record.exit_code)
    group = []
    if group_size > 1:
        g, member = divmod(record.simulation_id, group_size)
        group = [str(g), member_label(member, names)]
    return [
        str(record.simulation_id),
        *group,
        *(repr(float(value)) for value in record.parameters),
        record.status.value,
        str(record.attempts),
        exit_code,
        record.report,
    ]
