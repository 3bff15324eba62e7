"""A ``ModelCheckpoint`` whose files appear atomically, whatever the temp-dir layout.

Lightning's own write (``lightning.fabric.utilities.cloud_io._atomic_save``) serialises to memory
and writes through an fsspec transaction. For local paths fsspec writes the bytes to a file made
by ``tempfile.mkstemp()`` in the *system* temp dir and then ``shutil.move``s it into place. That is
a rename (atomic) only when the temp dir and the checkpoint dir are on the same file system; on a
cluster where ``/tmp`` is a local disk or tmpfs, ``shutil.move`` falls back to copy-then-delete and
a job killed mid-copy leaves a truncated ``last.ckpt``. Here every checkpoint is first written to
a sibling ``<name>.tmp-<pid>`` in the destination directory and then ``os.replace``d over the
target, which POSIX guarantees to be atomic within one directory.

Lightning 2.6 also refreshes ``last.ckpt`` only when a top-k checkpoint was written in the same
step, so a run whose monitored metric stopped improving would resume from its best epoch, not its
latest. Here ``last.ckpt`` is refreshed at every checkpointing point, as ``ckpt_path=last.ckpt``
resuming requires.
"""

from __future__ import annotations

from weakref import proxy

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

from smp_parsing.utils.checkpoint_io import save_checkpoint_atomically


class AtomicModelCheckpoint(ModelCheckpoint):
    """Drop-in :class:`~lightning.pytorch.callbacks.ModelCheckpoint` with atomic file replacement
    and a ``last.ckpt`` that always holds the latest state."""

    def _refresh_last(self, trainer: pl.Trainer, on_train_epoch_end: bool) -> None:
        if (
            not self.save_last
            or self._should_skip_saving_checkpoint(trainer)
            or self._should_save_on_train_epoch_end(trainer) != on_train_epoch_end
            or self._last_global_step_saved == trainer.global_step
        ):
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._refresh_last(trainer, on_train_epoch_end=True)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._refresh_last(trainer, on_train_epoch_end=False)

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        save_checkpoint_atomically(trainer, filepath, self.save_weights_only)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))
