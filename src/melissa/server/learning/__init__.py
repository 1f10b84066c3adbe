"""Online training of deep surrogates (docs/deep-learning.md).

Framework-agnostic modules: buffers (FIFO, FIRO, Reservoir, BatchReservoir, SimPairedReservoir),
samples (assembling samples from the stream, parameter scaling), receiver (the receive side of the
server), metrics, training_loop (the training loop without its framework), learning_server (the
hooks and training thread both frameworks share). PyTorch lives in the torch_* modules only,
TensorFlow in tf_server and keras_training; `DeepLearningServer`,
`TensorFlowServer` and `load_surrogate` are imported (with their framework) on first use:

    from melissa.server.learning import DeepLearningServer
"""

from __future__ import annotations

from typing import Any

from melissa.server.learning.buffers import FIFOBuffer, FIROBuffer, ReservoirBuffer, make_buffer
from melissa.server.learning.samples import ParameterScaler, Sample, time_input

__all__ = [
    "DeepLearningServer",
    "FIFOBuffer",
    "FIROBuffer",
    "ParameterScaler",
    "ReservoirBuffer",
    "Sample",
    "TensorFlowServer",
    "load_surrogate",
    "make_buffer",
    "time_input",
]


def __getattr__(name: str) -> Any:
    if name == "DeepLearningServer":
        from melissa.server.learning.torch_server import DeepLearningServer

        return DeepLearningServer
    if name == "TensorFlowServer":
        from melissa.server.learning.tf_server import TensorFlowServer

        return TensorFlowServer
    if name == "load_surrogate":
        from melissa.server.learning.torch_models import load_surrogate

        return load_surrogate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
