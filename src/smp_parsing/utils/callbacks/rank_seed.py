"""Give each DDP rank its own random stream (Python, NumPy, torch).

``seed_everything`` runs before the processes split, so every rank would draw the same random
numbers. Re-seeding with ``seed + global_rank`` once the strategy is set up keeps runs
reproducible and the ranks decorrelated. (The train augmentation does not depend on these
streams: it is seeded per sample from the run seed, the epoch and the sample index, and each
rank transforms other samples; see ``data/sampler.py``.) Model initialisation is unaffected: it
happened before, and DDP broadcasts rank 0's weights anyway.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch import Callback, seed_everything


class PerRankSeed(Callback):
    """Re-seed Python, NumPy and torch with ``seed + global_rank`` at fit start.

    Args:
        seed: the run's base seed (``${seed}``); ``None`` disables the callback.
    """

    def __init__(self, seed: int | None) -> None:
        self.seed = seed

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.seed is None or trainer.world_size == 1:
            return
        seed_everything(self.seed + trainer.global_rank, workers=True, verbose=False)
