"""Small helpers for running under torch.distributed (DDP) without a GPU-only feature."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def broadcast_buffers(module: nn.Module, src: int = 0) -> int:
    """Copy the buffers of rank ``src`` (e.g. BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each *training* forward only, and without
    SyncBatchNorm (refused on the CPU) every rank's last training step updates its own
    running statistics. Evaluating right after would run a slightly different network on each
    rank than the one rank 0 checkpoints; calling this first makes them all rank 0's.

    Args:
        module: the network (its floating-point and integer buffers are broadcast in place).
        src: the rank whose buffers win.

    Returns:
        The number of buffers broadcast (0 outside an initialised process group of 2+ ranks).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return 0
    buffers = [b for b in module.buffers() if b.numel() > 0]
    with torch.no_grad():
        for buffer in buffers:
            dist.broadcast(buffer, src=src)
    return len(buffers)
