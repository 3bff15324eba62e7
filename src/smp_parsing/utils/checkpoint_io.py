"""Every checkpoint file of a run appears atomically, whoever writes it (Lightning's public
``CheckpointIO`` plugin interface).

Lightning's ``TorchCheckpointIO`` serialises to memory and writes through an fsspec transaction,
which for a local path goes through a temporary file of the *system* temp dir and ``shutil.move``:
a rename only when ``/tmp`` is on the checkpoint's file system; on a cluster node (``/tmp`` a
local disk or tmpfs) a copy, and a job killed mid-copy leaves a truncated file. Here a local
checkpoint is written to ``<name>.tmp-<pid>`` next to its target and ``os.replace``d over it
(atomic within one directory on POSIX); remote URLs keep Lightning's write.

Set as a trainer plugin (``conf/trainer/default.yaml``, repeated in ``ddp_slurm.yaml``, whose
plugin list replaces it; every trainer config inherits one of the two), it covers every save of
the trainer: ``ModelCheckpoint`` (top-k, ``last.ckpt``, step checkpoints), the pre-emption
checkpoint and Lightning's own SLURM ``hpc_ckpt_<n>.ckpt``: one temp file and one rename per save.
It is the only mechanism: the project's checkpointing callbacks (``AtomicModelCheckpoint``,
``PreemptionCheckpoint``) save through ``trainer.save_checkpoint`` and refuse a trainer without
it (:func:`require_atomic_checkpoint_io`) rather than write a checkpoint that can be truncated.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.plugins.io.wrapper import _WrappingCheckpointIO

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


def writes_atomically(trainer: pl.Trainer) -> bool:
    """True when ``trainer`` saves through :class:`AtomicCheckpointIO` (also when it is wrapped,
    e.g. by Lightning's ``AsyncCheckpointIO``)."""
    io = trainer.strategy.checkpoint_io
    while isinstance(io, _WrappingCheckpointIO):
        io = io.checkpoint_io
    return isinstance(io, AtomicCheckpointIO)


def require_atomic_checkpoint_io(trainer: pl.Trainer, owner: object) -> None:
    """Raise when ``trainer`` would write ``owner``'s checkpoints without :class:`AtomicCheckpointIO`.

    Raises:
        RuntimeError: naming the trainer's checkpoint writer and the fix.
    """
    if writes_atomically(trainer):
        return
    raise RuntimeError(
        f"{type(owner).__name__} needs the trainer to write checkpoints atomically, but its "
        f"checkpoint writer is {type(trainer.strategy.checkpoint_io).__name__}: give the Trainer "
        "plugins=[smp_parsing.utils.checkpoint_io.AtomicCheckpointIO()] (conf/trainer/default.yaml "
        "does; a `trainer.plugins=[...]` override must keep it)."
    )
