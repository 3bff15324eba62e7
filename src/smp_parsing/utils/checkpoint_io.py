"""Every checkpoint file of a run appears atomically, whoever writes it (Lightning's public
``CheckpointIO`` plugin interface).

Lightning's ``TorchCheckpointIO`` serialises to memory and writes through an fsspec transaction,
which for a local path goes through a temporary file of the *system* temp dir and ``shutil.move``:
a rename only when ``/tmp`` is on the checkpoint's file system; on a cluster node (``/tmp`` a
local disk or tmpfs) a copy, and a job killed mid-copy leaves a truncated file. Here a local
checkpoint is written to ``<name>.tmp-<pid>`` next to its target and ``os.replace``d over it
(atomic within one directory on POSIX); remote URLs keep Lightning's write.

Set as a trainer plugin (``conf/trainer/default.yaml``), it covers every save of the trainer:
``ModelCheckpoint`` (top-k, ``last.ckpt``, step checkpoints), the pre-emption checkpoint and
Lightning's own SLURM ``hpc_ckpt_<n>.ckpt``. ``save_checkpoint_atomically`` does the same one
level up, around ``trainer.save_checkpoint``, for the callbacks that save their own files
(``AtomicModelCheckpoint`` through an override of a private ``ModelCheckpoint`` method, and the
pre-emption checkpoint), so they stay atomic under a trainer configured without this plugin.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

if TYPE_CHECKING:
    import lightning.pytorch as pl


def is_local(path: str | os.PathLike) -> bool:
    """True for a path of the local file system (not ``s3://``, ``gs://``, ...)."""
    text = str(path)
    return "://" not in text or text.startswith("file://")


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local writes are a sibling temp file + ``os.replace``."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None or not is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(str(path).removeprefix("file://"))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        try:
            torch.save(checkpoint, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)  # only left behind when the save failed


def save_checkpoint_atomically(
    trainer: pl.Trainer, path: str | os.PathLike, weights_only: bool = False
) -> str:
    """``trainer.save_checkpoint`` to ``<path>.tmp-<pid>``, then ``os.replace`` it over ``path``.

    Every rank must call it, as ``trainer.save_checkpoint`` itself (it may gather sharded state);
    rank 0 writes. A failed save (disk full, an error while serialising, Ctrl-C) removes its
    checkpoint-sized temp file and re-raises; the previous file at ``path`` stays intact.

    Returns:
        ``path`` as a string.
    """
    path = str(path)
    tmp_path = f"{path}.tmp-{os.getpid()}"
    if trainer.is_global_zero:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        trainer.save_checkpoint(tmp_path, weights_only)
        if trainer.is_global_zero:
            os.replace(tmp_path, path)
    except BaseException:
        if trainer.is_global_zero:
            with contextlib.suppress(OSError):
                os.remove(tmp_path)
        raise
    trainer.strategy.barrier("save_checkpoint_atomically")
    return path
