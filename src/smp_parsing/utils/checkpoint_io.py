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
Lightning's own SLURM ``hpc_ckpt_<n>.ckpt``. (``AtomicModelCheckpoint`` does the same for its own
files with an override of a private ``ModelCheckpoint`` method; with this plugin that override
is no longer needed for atomicity.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


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
