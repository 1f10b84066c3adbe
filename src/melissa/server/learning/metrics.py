"""The training metrics table (output_dir/metrics.csv), rewritten atomically at each row so a
reader never sees half a file and a new metric (a validation key seen late) gets its column."""

from __future__ import annotations

import csv
from pathlib import Path

from melissa.atomic import atomic_write
from melissa.server.learning.buffers import BufferStats


def metrics_row(
    batches: int, samples: int, wall_s: float, loss_sum: float, window_samples: float,
    window_s: float, buffer: BufferStats, validation_samples: int,
    validation: dict[str, float],
) -> dict[str, float]:
    """One row of metrics.csv (and of the TensorBoard scalars): docs/deep-learning.md#outputs."""
    return {
        "batch": batches,
        "samples": samples,
        "wall_s": round(wall_s, 3),
        "loss": loss_sum / window_samples if window_samples else float("nan"),
        "samples_per_s": window_samples / max(window_s, 1e-9),
        "buffer_fill": buffer.fill,
        "buffer_received": buffer.received,
        "buffer_evicted": buffer.evicted,
        "buffer_evicted_unused": buffer.evicted_unused,
        "buffer_reuse": buffer.reuse,
        "validation_samples": validation_samples,
        **{f"validation_{k}": v for k, v in validation.items()},
    }


def tag(key: str) -> str:
    """TensorBoard tag of a metrics column: grouped as train/, validation/, buffer/."""
    if key.startswith("validation_"):
        return "validation/" + key.removeprefix("validation_")
    if key.startswith("buffer_"):
        return "buffer/" + key.removeprefix("buffer_")
    return "train/" + key


class MetricsLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, float]] = []
        self.columns: list[str] = []

    def resume(self, last_batch: int) -> None:
        """Continue the table of a restarted training: rows up to `last_batch` (those of the
        checkpoint it restarts from) are kept, later ones are trained again."""
        if not self.path.exists():
            return
        with open(self.path, newline="") as f:
            reader = csv.DictReader(f)
            self.columns = list(reader.fieldnames or [])
            self.rows = [{k: float(v) for k, v in row.items() if v != ""} for row in reader]
        self.rows = [r for r in self.rows if r.get("batch", 0) <= last_batch]

    def append(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        self.columns += [k for k in row if k not in self.columns]
        self._write()

    def _write(self) -> None:
        with atomic_write(self.path, durable=False) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, restval="")
            writer.writeheader()
            writer.writerows(self.rows)
