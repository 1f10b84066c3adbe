"""The receive side of a training server as checkpoint arrays, and back (framework-agnostic).

A training server's checkpoint (one file per rank, server/checkpoint.py) holds, beside the
registry that the base server adds: the buffer's items with their use flags, counters and random
state; the validation set; the time steps still partly received; every simulation's parameters;
and the training side's own state as opaque bytes (network, optimizer, step counters), which the
training thread hands over while it waits at a batch boundary, so that all of it is of one moment.

Items are tuples of NumPy arrays of one shape each (what `encode_sample` returns, e.g. (x, y)):
stored stacked, `<part>/item<k>`, no pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from melissa.server.learning.buffers import BufferState
from melissa.server.learning.samples import SampleAssembler, ValidationSet

_META = "learning/meta"
_TRAINING = "learning/training"


@dataclass
class Restored:
    """What `decode` gives back."""

    buffer: BufferState[Any]
    validation: list[tuple[tuple[int, int] | None, Any]]  # (key if paired, item)
    partials: dict[tuple[int, int], dict[str, tuple[np.ndarray, int]]]
    parameters: dict[int, np.ndarray]
    training: bytes | None


def _stack(prefix: str, items: list[tuple[np.ndarray, ...]], out: dict[str, np.ndarray]) -> int:
    """Stack the items' k-th arrays into out[prefix/item<k>]; returns the tuple length."""
    if not items:
        return 0
    width = len(items[0])
    for k in range(width):
        out[f"{prefix}/item{k}"] = np.stack([np.asarray(item[k]) for item in items])
    return width


def _unstack(prefix: str, arrays: dict[str, np.ndarray], width: int, n: int) -> list[Any]:
    columns = [np.array(arrays[f"{prefix}/item{k}"]) for k in range(width)]  # writable copies
    return [tuple(column[i] for column in columns) for i in range(n)]


def encode(
    buffer: BufferState[Any], paired: bool, validation: ValidationSet[Any],
    assembler: SampleAssembler, parameters: dict[int, np.ndarray], training: bytes | None,
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    items = buffer.items
    if paired:  # (key, item) entries
        out["buffer/keys"] = np.array([k for k, _ in items], dtype=np.int64).reshape(-1, 2)
        items = [item for _, item in items]
    buffer_width = _stack("buffer", items, out)
    out["buffer/used"] = np.array(buffer.used, dtype=bool)

    keyed = validation.keyed_items()
    if keyed is not None:
        val_keys, val_items = keyed
        out["validation/keys"] = np.array(val_keys, dtype=np.int64).reshape(-1, 2)
    else:
        val_items = validation.all_items()
    validation_width = _stack("validation", val_items, out)

    partial = assembler.partials()
    partial_keys = list(partial)
    out["partial/keys"] = np.array(partial_keys, dtype=np.int64).reshape(-1, 2)
    for name, info in assembler.fields.items():
        data = np.zeros((len(partial_keys), info.local_size), dtype=np.float32)
        missing = np.full(len(partial_keys), -1, dtype=np.int64)  # -1: none of it arrived
        for i, key in enumerate(partial_keys):
            got = partial[key].get(name)
            if got is not None:
                data[i], missing[i] = got
        out[f"partial/{name}/data"], out[f"partial/{name}/missing"] = data, missing

    ids = sorted(parameters)
    out["parameters/ids"] = np.array(ids, dtype=np.int64)
    out["parameters/values"] = np.array([parameters[i] for i in ids], dtype=np.float64)
    if training:
        out[_TRAINING] = np.frombuffer(training, dtype=np.uint8)
    meta = {"buffer_counters": buffer.counters, "buffer_rng": buffer.rng, "paired": paired,
            "buffer_width": buffer_width, "buffer_items": len(items),
            "validation_width": validation_width, "validation_items": len(val_items),
            "fields": list(assembler.fields)}
    out[_META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    return out


def decode(arrays: dict[str, np.ndarray], paired: bool) -> Restored:
    """Raises KeyError or ValueError if the arrays are not those of `encode` for this study."""
    meta = json.loads(arrays[_META].tobytes())
    if bool(meta["paired"]) != paired:
        raise ValueError("the checkpoint's buffer is not of this study's dl_config.buffer")
    items = _unstack("buffer", arrays, meta["buffer_width"], meta["buffer_items"])
    if paired:
        keys = [(int(s), int(t)) for s, t in arrays["buffer/keys"]]
        items = list(zip(keys, items, strict=True))
    buffer = BufferState(items, [bool(u) for u in arrays["buffer/used"]],
                         dict(meta["buffer_counters"]), meta["buffer_rng"])
    val_items = _unstack("validation", arrays, meta["validation_width"], meta["validation_items"])
    if "validation/keys" in arrays:
        val_keys: list[tuple[int, int] | None] = [
            (int(s), int(t)) for s, t in arrays["validation/keys"]]
    else:
        val_keys = [None] * len(val_items)
    partials: dict[tuple[int, int], dict[str, tuple[np.ndarray, int]]] = {}
    for i, (sim, step) in enumerate(arrays["partial/keys"]):
        fields = {}
        for name in meta["fields"]:
            missing = int(arrays[f"partial/{name}/missing"][i])
            if missing >= 0:
                fields[name] = (np.array(arrays[f"partial/{name}/data"][i]), missing)
        partials[(int(sim), int(step))] = fields
    parameters = {int(i): np.array(v) for i, v in
                  zip(arrays["parameters/ids"], arrays["parameters/values"], strict=True)}
    training = arrays[_TRAINING].tobytes() if _TRAINING in arrays else None
    return Restored(buffer, list(zip(val_keys, val_items, strict=True)), partials, parameters,
                    training)
