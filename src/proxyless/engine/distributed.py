"""PyTorch DDP under `torchrun`: process-group set-up and the few collectives the loops need.

Run any training or search command with `torchrun --nproc_per_node N -m proxyless.cli ...`
(or the `proxyless` script): each rank takes a disjoint share of every batch order, gradients
are averaged by DDP, and only rank 0 writes files.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str) -> DistInfo:
    """Join the process group when launched by torchrun; a no-op for a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        # rank 0 alone profiles the latency table and measures networks while the others
        # wait in a collective: minutes on a GPU, beyond NCCL's 10-minute default
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=1))
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    if device.startswith("cuda"):
        torch.cuda.set_device(info.local_rank)
    return info


def is_main() -> bool:
    """Rank 0, or a single process (before the process group is joined: as torchrun says)."""
    if dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def finish() -> None:
    """Wait for every rank before leaving: a rank that tears the group down while rank 0
    still writes its report can abort in gloo's threads ("terminate called without an active
    exception"), seen ~1 run in 8 on 2 CPU ranks."""
    if dist.is_initialized():
        dist.barrier()


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few scalars over all ranks (identity without a process group)."""
    if not dist.is_initialized():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_reduce_max(values: list[float], device: torch.device) -> list[float]:
    """The largest of each of a few scalars over all ranks (identity without a group)."""
    if not dist.is_initialized():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()


def any_rank(flags: torch.Tensor) -> torch.Tensor:
    """Elementwise: is a flag (0 or 1) set on any rank? The ranks must take the same decisions
    (stop on a NaN, skip a step), or the ones that go on wait in a collective forever."""
    if not dist.is_initialized():
        return flags
    flags = flags.float().clone()
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return flags


def average_grads(params) -> None:
    """Average the gradients that exist over all ranks (one flat all-reduce).

    Sampled paths differ per step but not per rank (all ranks draw gates from identically
    seeded generators), so every rank holds gradients for the same parameters.
    """
    if not dist.is_initialized():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_object(obj, src: int = 0):
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]


def barrier() -> None:
    """Wait until every rank arrives (nothing without a process group)."""
    if dist.is_initialized():
        dist.barrier()
