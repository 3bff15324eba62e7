"""Save the random streams in each checkpoint and continue them when a run resumes.

A resumed run then draws what the interrupted run would have drawn next (data order, dropout,
anything seeded from the global generators). With several processes each rank re-derives its own
stream instead: the checkpoint holds rank 0's only.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch import Callback, seed_everything

from smp_parsing.utils.rng_state import collect_rng_state, restore_rng_state

RNG_STATE_KEY = "rng_state"


class RNGStateCheckpoint(Callback):
    """``checkpoint["rng_state"]`` (plain tensors and ints: ``weights_only`` loadable)."""

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[RNG_STATE_KEY] = collect_rng_state()

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        state = checkpoint.get(RNG_STATE_KEY)
        if state is None or trainer.state.fn != "fit":
            return
        if trainer.world_size == 1:
            restore_rng_state(state)
        else:
            seed = int(state["torch"][:8].sum()) + trainer.global_rank
            seed_everything(seed % 2**31, workers=True, verbose=False)
