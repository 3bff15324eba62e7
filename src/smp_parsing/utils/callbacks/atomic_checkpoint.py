"""A ``ModelCheckpoint`` whose files appear atomically, whatever the temp-dir layout.

Lightning's own write (``lightning.fabric.utilities.cloud_io._atomic_save``) serialises to memory
and writes through an fsspec transaction. For local paths fsspec writes the bytes to a file made
by ``tempfile.mkstemp()`` in the *system* temp dir and then ``shutil.move``s it into place. That is
a rename (atomic) only when the temp dir and the checkpoint dir are on the same file system; on a
cluster where ``/tmp`` is a local disk or tmpfs, ``shutil.move`` falls back to copy-then-delete and
a job killed mid-copy leaves a truncated ``last.ckpt``. The trainer's checkpoint writer,
:class:`~smp_parsing.utils.checkpoint_io.AtomicCheckpointIO` (a ``CheckpointIO`` plugin, set in
``conf/trainer/``), writes a sibling ``<name>.tmp-<pid>`` and ``os.replace``s it over the target
(atomic within one directory on POSIX); this callback saves through it like any
``ModelCheckpoint`` and refuses a trainer without it (``setup``).

Lightning 2.6 also refreshes ``last.ckpt`` only when a top-k checkpoint was written in the same
step, so a run whose monitored metric stopped improving would resume from its best epoch, not its
latest. Here ``last.ckpt`` is refreshed at every checkpointing point, as ``ckpt_path=last.ckpt``
resuming requires.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

from smp_parsing.utils.checkpoint_io import require_atomic_checkpoint_io


class AtomicModelCheckpoint(ModelCheckpoint):
    """Drop-in :class:`~lightning.pytorch.callbacks.ModelCheckpoint` that checks the files are
    replaced atomically and keeps a ``last.ckpt`` that always holds the latest state."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        require_atomic_checkpoint_io(trainer, self)
        super().setup(trainer, pl_module, stage)

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
