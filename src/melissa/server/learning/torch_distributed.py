"""Data-parallel training over the server's ranks: the few collective operations the training
loop needs, on one process (no-ops) or over torch.distributed (gloo on CPU, NCCL on GPU).

The framework, not the user, keeps the ranks in step: every step starts with a sum of the ranks'
batch sizes (and of those still receiving), which each rank joins within half a second whether
or not it has a batch; so all ranks see the same number of steps, none waits for another's data,
and all stop together once every buffer is exhausted, even if their data ends at different times
(a rank without a batch in a step contributes zero gradients). Gradients are averaged weighted by batch size, which is exactly the gradient of the
mean loss over the union of the ranks' batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn

from melissa.protocol.address import advertised_address, listen_address

_TIMEOUT = timedelta(hours=2)  # a rank may wait that long for data while the others train


class Group(Protocol):
    rank: int
    size: int

    def all_sum(self, values: Sequence[float]) -> list[float]: ...

    def all_min(self, value: int) -> int: ...

    def broadcast_object(self, obj: Any, src: int) -> Any: ...

    def gather_objects(self, obj: Any) -> list[Any]: ...

    def broadcast_module(self, module: nn.Module, src: int) -> None: ...

    def all_reduce_gradients(self, parameters: Sequence[torch.Tensor]) -> None: ...

    def close(self) -> None: ...


class LocalGroup:
    """One rank: every collective is the identity."""

    rank = 0
    size = 1

    def all_sum(self, values: Sequence[float]) -> list[float]:
        return list(values)

    def all_min(self, value: int) -> int:
        return value

    def broadcast_object(self, obj: Any, src: int) -> Any:
        return obj

    def gather_objects(self, obj: Any) -> list[Any]:
        return [obj]

    def broadcast_module(self, module: nn.Module, src: int) -> None:
        pass

    def all_reduce_gradients(self, parameters: Sequence[torch.Tensor]) -> None:
        pass

    def close(self) -> None:
        pass


class TorchGroup:
    """Ranks joined by torch.distributed through a TCPStore (rank 0 hosts it)."""

    def __init__(self, store: dist.Store, rank: int, size: int, device: torch.device) -> None:
        self.rank, self.size = rank, size
        self.device = device
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, store=store, rank=rank, world_size=size, timeout=_TIMEOUT)
        # NCCL reduces tensors on the GPU; gloo on the CPU.
        self._reduce_device = device if backend == "nccl" else torch.device("cpu")

    @classmethod
    def connect(
        cls, host: str, port: int, rank: int, size: int, device: torch.device
    ) -> TorchGroup:
        """Rank 0 listens on `port` (0: a free one, see `host_store`); the others connect."""
        store = dist.TCPStore(host, port, size, is_master=rank == 0, timeout=_TIMEOUT)
        return cls(store, rank, size, device)

    def all_sum(self, values: Sequence[float]) -> list[float]:
        t = torch.tensor(list(values), dtype=torch.float64, device=self._reduce_device)
        dist.all_reduce(t)
        return [float(v) for v in t.tolist()]

    def all_min(self, value: int) -> int:
        t = torch.tensor([value], dtype=torch.int64, device=self._reduce_device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return int(t.item())

    def broadcast_object(self, obj: Any, src: int) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=src, device=self._reduce_device)
        return box[0]

    def gather_objects(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_module(self, module: nn.Module, src: int) -> None:
        for tensor in module.state_dict().values():
            moved = tensor.to(self._reduce_device)
            dist.broadcast(moved, src=src)
            tensor.copy_(moved)

    def all_reduce_gradients(self, parameters: Sequence[torch.Tensor]) -> None:
        """Sum the gradients of every rank (each already weighted by its share of the batch)."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        flat = torch.cat([g.reshape(-1) for g in grads]).to(self._reduce_device)
        dist.all_reduce(flat)
        offset = 0
        for p in parameters:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).to(p.device)
            offset += n

    def close(self) -> None:
        dist.destroy_process_group()


def group_from_comm(comm: Any, host: str, device: torch.device) -> Group:
    """The group of the server's MPI ranks (comm: mpi4py communicator, or None for one rank).
    Collective over `comm`: call it from the thread that does the server's other MPI calls."""
    if comm is None or comm.Get_size() == 1:
        return LocalGroup()
    rank, size = comm.Get_rank(), comm.Get_size()
    if rank == 0:
        store = dist.TCPStore(host, 0, size, is_master=True, wait_for_workers=False,
                              timeout=_TIMEOUT)
        comm.bcast(store.port, root=0)
    else:
        port = comm.bcast(None, root=0)
        store = dist.TCPStore(host, port, size, is_master=False, timeout=_TIMEOUT)
    return TorchGroup(store, rank, size, device)


def store_host(bind_address: str, interface: str | None = None) -> str:
    """The address the other ranks reach rank 0's store at (the one the server advertises)."""
    return advertised_address(listen_address(bind_address, interface), interface)
