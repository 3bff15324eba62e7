"""Settings that depend on the accelerator the job runs on: precision, deterministic mode.

``default_precision`` (resolver ``${default_precision:<accelerator>}``):

The paper trains in fp32. On a GPU with bfloat16 tensor cores (Ampere and newer) ``bf16-mixed``
has fp32's range, so no loss scaling and no overflow; older GPUs (V100, T4) keep ``32-true``.
fp16 (``16-mixed``) is never the default: its GradScaler skips steps whose gradients overflow,
which must be asked for explicitly (``trainer.precision=16-mixed``).

``deterministic_mode``: ``trainer.deterministic=true`` calls
``torch.use_deterministic_algorithms(True)``, which raises on CUDA at the first op without a
deterministic CUDA kernel. SMP's training has one that cannot be replaced: the backward of
bilinear ``F.interpolate`` (FPN, part and center heads, mask features). The ops that have a
deterministic form use it (the weighted ``bincount`` of the target statistics is an
``index_add``, deterministic on CUDA in this mode). On CUDA ``true`` therefore becomes
``"warn"``: every op that has a deterministic kernel uses it, the others run as usual with a
warning. (torchvision's ``deform_conv2d`` backward accumulates with atomic adds on CUDA without
raising: DCN runs are not bitwise reproducible on a GPU either way.) A CPU run stays bitwise
reproducible with ``true``.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

# accelerator values under which Lightning would pick a CUDA device when one is present
CUDA_ACCELERATORS = ("auto", "gpu", "cuda")


def default_precision(accelerator: object = "auto") -> str:
    """``"bf16-mixed"`` when the run trains on a CUDA GPU that supports bfloat16, else ``"32-true"``.

    Args:
        accelerator: the trainer's ``accelerator`` setting; ``cpu`` (or any non-CUDA one) always
            gets ``32-true`` (CPU autocast is slower than fp32 on most CPUs).
    """
    if not uses_cuda(accelerator):
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"


def uses_cuda(accelerator: object) -> bool:
    """True when a trainer with this ``accelerator`` setting would run on a CUDA GPU here."""
    return str(accelerator) in CUDA_ACCELERATORS and torch.cuda.is_available()


def deterministic_mode(deterministic: object, accelerator: object = "auto") -> object:
    """The ``Trainer(deterministic=...)`` value to use: ``True`` on CUDA becomes ``"warn"``.

    Args:
        deterministic: the configured value (``True``, ``False``, ``"warn"``, ``None``).
        accelerator: the trainer's ``accelerator`` setting.
    """
    if deterministic is True and uses_cuda(accelerator):
        log.warning(
            "trainer.deterministic=true on CUDA: using deterministic='warn' (bilinear interpolation "
            "has no deterministic CUDA backward; every other op runs its deterministic kernel). "
            "See smp_parsing.utils.accelerator."
        )
        return "warn"
    return deterministic
