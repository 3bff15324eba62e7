"""A ``ModelCheckpoint`` whose files appear atomically, whatever the temp-dir layout.

Lightning's own write (``lightning.fabric.utilities.cloud_io._atomic_save``) serialises to memory
and writes through an fsspec transaction. For local paths fsspec writes the bytes to a file made
by ``tempfile.mkstemp()`` in the *system* temp dir and then ``shutil.move``s it into place. That is
a rename (atomic) only when the temp dir and the checkpoint dir are on the same file system; on a
cluster where ``/tmp`` is a local disk or tmpfs, ``shutil.move`` falls back to copy-then-delete and
a job killed mid-copy leaves a truncated ``last.ckpt``. Here every checkpoint is first written to
a sibling ``<name>.tmp-<pid>`` in the destination directory and then ``os.replace``d over the
target, which POSIX guarantees to be atomic within one directory.
"""

from __future__ import annotations

import os
from weakref import proxy

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint


class AtomicModelCheckpoint(ModelCheckpoint):
    """Drop-in :class:`~lightning.pytorch.callbacks.ModelCheckpoint` with atomic file replacement."""

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        tmp_path = f"{filepath}.tmp-{os.getpid()}"
        # Every rank must call save_checkpoint (it may gather sharded state); rank 0 writes.
        trainer.save_checkpoint(tmp_path, self.save_weights_only)
        if trainer.is_global_zero:
            os.replace(tmp_path, filepath)
        trainer.strategy.barrier("AtomicModelCheckpoint.replace")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))
