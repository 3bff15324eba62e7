"""Images per second of evaluation: ``val/fps`` and ``test/fps``.

The timed window of a batch runs from this callback's ``on_{validation,test}_batch_start`` to its
``on_{validation,test}_batch_end``. In Lightning 2.6's evaluation loop
(``loops/evaluation_loop.py``, ``_evaluation_step``) a batch goes:

1. ``batch_to_device`` (the host-to-device copy): before the window;
2. the callbacks' ``on_*_batch_start`` in ``trainer.callbacks`` order, then the module's;
3. ``validation_step`` / ``test_step``: SMPLitModule's forward + decode of each image;
4. the callbacks' ``on_*_batch_end`` in order, THEN the module's, which updates the metric.

So the window holds the step (forward + decode), the batch-start hooks of the callbacks listed
after this one (the progress bar: a task added at the first batch) and the batch-end hooks of the
callbacks listed before it. Listed first (``conf/callbacks/default.yaml``, ``eval.yaml``), it
closes the window before the image logger re-runs the network and before the metric update.
On a GPU the window is CUDA-synchronised at both ends, so it counts the kernels, not their
launches (and not a copy still in flight from step 1).

Under DDP each rank times its own images; ``fps`` is the mean over ranks (``sync_dist``), at the
epoch end only (the ranks' step counts may differ by one: no collective in a step).
"""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.model_helpers import is_overridden

# the hooks whose work this callback would count if they ran inside its window
BATCH_END_HOOKS = ("on_validation_batch_end", "on_test_batch_end")


class InferenceTimer(Callback):
    """Logs ``<split>/fps``: images per second of the evaluation step (forward + decode).

    Attributes:
        seconds: time inside the window this epoch (this rank).
        images: images timed this epoch (this rank).
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self.images = 0
        self._start: float | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # A callback before this one whose batch-end hook does work would be counted in fps.
        before = (
            trainer.callbacks[: trainer.callbacks.index(self)] if self in trainer.callbacks else []
        )
        counted = [
            type(cb).__name__
            for cb in before
            if any(is_overridden(hook, cb, Callback) for hook in BATCH_END_HOOKS)
        ]
        if counted:
            rank_zero_warn(
                f"InferenceTimer comes after {counted} in the callbacks: their batch-end work is "
                "counted in <split>/fps. List the timer first."
            )

    # ----------------------------------------------------------------- window
    @staticmethod
    def _images(batch: Any) -> torch.Tensor | None:
        return None if batch is None else batch["images"]  # None: every sample skipped as bad

    def _open(self, batch: Any) -> None:
        images = self._images(batch)
        if images is None:
            self._start = None
            return
        if images.is_cuda:
            torch.cuda.synchronize(images.device)
        self._start = time.perf_counter()

    def _close(self, batch: Any) -> None:
        images = self._images(batch)
        if images is None or self._start is None:
            return
        if images.is_cuda:
            torch.cuda.synchronize(images.device)
        self.seconds += time.perf_counter() - self._start
        self.images += images.shape[0]
        self._start = None

    def _reset(self) -> None:
        self.seconds, self.images, self._start = 0.0, 0, None

    def _log(self, pl_module: pl.LightningModule, prefix: str) -> None:
        fps = self.images / self.seconds if self.seconds > 0 else 0.0
        # the collective at the epoch end only (see the module docstring)
        pl_module.log(f"{prefix}/fps", fps, sync_dist=True)

    # ------------------------------------------------------------------ hooks
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset()

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset()

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, *args: Any
    ) -> None:
        self._open(batch)

    def on_test_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, *args: Any
    ) -> None:
        self._open(batch)

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        *args: Any,
    ) -> None:  # fmt: skip
        self._close(batch)

    def on_test_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        *args: Any,
    ) -> None:  # fmt: skip
        self._close(batch)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(pl_module, "test")
