"""Give every DDP rank rank 0's buffers (BatchNorm statistics) before validation and test.

Without SyncBatchNorm (the CPU) each rank's training steps move its own running statistics;
evaluating right after would score a slightly different network on each rank than the one rank 0
checkpoints (utils/distributed.broadcast_buffers). A no-op in a single process.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch import Callback

from smp_parsing.utils.distributed import broadcast_buffers


class BroadcastBuffers(Callback):
    """Broadcast ``pl_module.net``'s (else the module's) buffers from rank 0 at eval start."""

    @staticmethod
    def _broadcast(pl_module: pl.LightningModule) -> int:
        return broadcast_buffers(getattr(pl_module, "net", pl_module))

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._broadcast(pl_module)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._broadcast(pl_module)
