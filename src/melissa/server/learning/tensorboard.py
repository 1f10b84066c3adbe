"""TensorBoard scalars without a training framework (the tensorboard package's own event writer):
the TensorFlow server's curves, written as torch's SummaryWriter writes them.

A restarted training passes `purge_step`: TensorBoard then hides what the crashed run logged from
that step on, so each tag stays one curve.
"""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path


def without_tensorflow() -> None:
    """Keep tensorboard from importing TensorFlow (installed with the tf extra) in a PyTorch
    server: its writer loads TensorFlow when it can, ~2 s and much memory for nothing, unless
    the module tensorboard.compat.notf (tensorboard's "no TensorFlow" marker) exists."""
    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))


from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter


class ScalarWriter:
    def __init__(self, log_dir: Path, purge_step: int | None = None) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self._writer = EventFileWriter(str(log_dir))
        if purge_step is not None:
            self._writer.add_event(event_pb2.Event(
                wall_time=time.time(), step=purge_step,
                session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag,
                                                                       simple_value=value)])
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=step,
                                               summary=summary))

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
