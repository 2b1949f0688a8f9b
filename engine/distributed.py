"""Running under torchrun: the process group, ranks, and the few collectives gencbm needs.

gencbm has no launcher of its own. `torchrun --nproc-per-node N [--nnodes M ...] gencbm CMD ...` sets
RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `setup()` reads them and joins the process
group (nccl on CUDA, gloo on CPU). Without them every helper here degrades to a single process:
rank 0 of 1, no communication. Only rank 0 writes files and prints; every rank computes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from engine.errors import GencbmError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: not distributed

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_STATE: Dist | None = None


def launched() -> bool:
    """Whether torchrun (or another launcher with its environment) started this process."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def setup(device: str = "auto") -> Dist:
    """Join the process group torchrun describes (idempotent); a single process when not launched.

    The backend is nccl when this rank uses CUDA, else gloo. On CUDA each process takes the GPU of its
    LOCAL_RANK (an explicit --device cuda:N is overridden, one GPU per process)."""
    global _STATE
    if _STATE is not None:
        return _STATE
    if not launched() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        _STATE = Dist()
        return _STATE
    import torch.distributed as td

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want_cuda = (device or "auto").startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    backend = "nccl" if want_cuda else "gloo"
    if want_cuda:
        if local >= torch.cuda.device_count():
            raise GencbmError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA device(s): use --nproc-per-node <= the GPU count")
        torch.cuda.set_device(local)
    if not td.is_initialized():
        td.init_process_group(backend=backend)
    _STATE = Dist(rank=rank, world_size=world, local_rank=local, backend=backend)
    return _STATE


def current() -> Dist:
    return _STATE if _STATE is not None else Dist()


def rank_device(device: str, dist: Dist) -> str:
    """The device string this rank should use: cuda:LOCAL_RANK when distributed on CUDA."""
    if dist.enabled and dist.backend == "nccl":
        return f"cuda:{dist.local_rank}"
    if dist.enabled and dist.backend == "gloo" and (device or "auto") == "auto":
        return "cpu"
    return device


def all_reduce_sum(values: list[float] | torch.Tensor, dist: Dist | None = None) -> torch.Tensor:
    """Element-wise sum over ranks, in float64 (counts and sums stay exact); identity in one process."""
    dist = dist or current()
    t = torch.as_tensor(values, dtype=torch.float64).clone()
    if dist.enabled:
        import torch.distributed as td

        dev = torch.device("cuda", dist.local_rank) if dist.backend == "nccl" else torch.device("cpu")
        t = t.to(dev)
        td.all_reduce(t, op=td.ReduceOp.SUM)
        t = t.cpu()
    return t


def any_rank(flag: bool, dist: Dist | None = None) -> bool:
    """True on every rank when `flag` is true on any rank (e.g. a signal arrived somewhere)."""
    dist = dist or current()
    if not dist.enabled:
        return bool(flag)
    return bool(all_reduce_sum([1.0 if flag else 0.0], dist)[0] > 0)


def gather_objects(obj: Any, dist: Dist | None = None) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank ([obj] in one process)."""
    dist = dist or current()
    if not dist.enabled:
        return [obj]
    import torch.distributed as td

    out: list[Any] = [None] * dist.world_size
    td.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, dist: Dist | None = None) -> Any:
    """Rank 0's `obj` on every rank."""
    dist = dist or current()
    if not dist.enabled:
        return obj
    import torch.distributed as td

    box = [obj]
    td.broadcast_object_list(box, src=0)
    return box[0]


def barrier(dist: Dist | None = None) -> None:
    dist = dist or current()
    if dist.enabled:
        import torch.distributed as td

        td.barrier()


def shard(indices: range | list[int], dist: Dist | None = None) -> list[int]:
    """This rank's share of sample indices: every world_size-th, starting at its rank."""
    dist = dist or current()
    return list(indices)[dist.rank :: dist.world_size]
