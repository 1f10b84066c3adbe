"""Convergence of a Sobol' study: the aggregated indices of every field (stats/sobol_aggregate.py)
and the study's convergence figure, the widest 95% interval among them.

Every rank's per-field `AggregatedSobol.summary()` travels in its status; rank 0 combines them
(`field_convergence`), logs a row per field to statistics/sobol_convergence.csv and adds the
figures to the "status" event (key "sobol_convergence"), which the launcher shows and
melissa-monitor displays. `study_convergence_figure` reads that event on the launcher's side;
this module imports the server's statistics (Numba) only where it computes.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

KINDS = ("first", "total")


def sobol_convergence_figure(summaries: Sequence[Mapping[str, Any]]) -> float:
    """The convergence figure of one field now: the widest 95% interval of its aggregated
    first-order and total indices, from every server rank's `AggregatedSobol.summary()` of the
    field (NaN until 4 groups are complete on every rank)."""
    from melissa.server.stats.sobol_aggregate import combine, widest_interval

    return widest_interval(combine(summaries))


def study_convergence_figure(convergence: Mapping[str, Mapping[str, Any]]) -> float:
    """The study's figure from a status event's "sobol_convergence" (field -> its
    `field_convergence`): the widest over the fields; NaN while a field has none."""
    widths = [f.get("widest_interval") for f in convergence.values()]
    if not widths or any(w is None for w in widths):
        return math.nan
    return max(float(w) for w in widths)  # type: ignore[arg-type]


def field_convergence(summaries: Sequence[Mapping[str, Any]], join_mb: float
                      ) -> dict[str, Any]:
    """JSON-able (NaN as null): "groups" (complete on every rank), "widest_interval", "join_mb",
    and per kind (first, total) the aggregated indices and their "_low"/"_high" bounds, one
    value per parameter."""
    from melissa.server.stats.sobol_aggregate import combine, widest_interval

    aggregated = combine(summaries)
    out: dict[str, Any] = {"groups": int(aggregated["groups"]),
                           "widest_interval": _json(widest_interval(aggregated)),
                           "join_mb": round(join_mb, 3)}
    for kind in KINDS:
        for suffix in ("", "_low", "_high"):
            out[f"{kind}{suffix}"] = [_json(v) for v in
                                      aggregated[f"sobol_{kind}_aggregated{suffix}"]]
    return out


def _json(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def log_rows(path: Path, elapsed_s: float, fields: Mapping[str, Mapping[str, Any]],
             parameters: Sequence[str]) -> None:
    """Append a row per field to statistics/sobol_convergence.csv (header on creation)."""
    columns = ["elapsed_s", "field", "groups", "widest_interval", "join_mb"] + [
        f"{kind}_{name}{suffix}" for kind in KINDS for name in parameters
        for suffix in ("", "_low", "_high")]
    path.parent.mkdir(parents=True, exist_ok=True)
    new_file = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new_file:
            writer.writerow(columns)
        for name, figures in fields.items():
            values = [figures[f"{kind}{suffix}"][k] for kind in KINDS
                      for k in range(len(parameters)) for suffix in ("", "_low", "_high")]
            writer.writerow([f"{elapsed_s:.1f}", name, figures["groups"],
                             _text(figures["widest_interval"]), f"{figures['join_mb']:.3f}",
                             *(_text(v) for v in values)])


def _text(value: float | None) -> str:
    return "nan" if value is None else f"{value:.6g}"

