"""One place for the inference-only speed-ups of a trained network.

``predict``, ``evaluate`` and the benchmarks all call :func:`prepare_for_inference` with the
switches of the ``inference`` config group (``conf/inference/default.yaml``: none, the network
as trained, what ``evaluate`` scores; ``conf/inference/deploy.yaml``: ``fold_batchnorm``,
``winograd``, what ``predict`` runs), so the network that is timed is the network that is run.
Every switch keeps the outputs (up to float rounding) and makes the network unfit for
training: it must be in eval mode, and stays an inference network afterwards.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from smp_parsing.models.deploy.fold_bn import fold_frozen_batchnorm
from smp_parsing.models.deploy.winograd import convert_to_winograd


def prepare_for_inference(
    net: nn.Module,
    *,
    fold_batchnorm: bool = True,
    winograd: bool = True,
    winograd_tile: int = 4,
    winograd_min_channels: int = 128,
    channels_last: bool = False,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Apply the inference switches to ``net`` in place, in the order that keeps them valid.

    1. ``fold_batchnorm``: BatchNorm folded into the preceding convolutions
       (:func:`~smp_parsing.models.deploy.fold_bn.fold_frozen_batchnorm`).
    2. ``channels_last``: weights in ``torch.channels_last``; an SMP network also converts
       its input (its ``channels_last`` attribute, as ``model.net.channels_last=true``).
    3. ``winograd``: 3 x 3 stride-1 convolutions with at least ``winograd_min_channels``
       channels computed by Winograd F(m x m, 3 x 3) (:mod:`smp_parsing.models.deploy.winograd`),
       only when the network is on the CPU (cuDNN has its own Winograd kernels). It keeps
       a transformed copy of each converted weight, 4x its size for ``m = 4``.

    Args:
        net: the network, in eval mode, on its final device.
        fold_batchnorm: fold BatchNorm (``fold_batchnorm`` of the configs).
        winograd: swap eligible convolutions for Winograd (``winograd``).
        winograd_tile: output tile ``m`` (2 or 4; ``winograd_tile``).
        winograd_min_channels: only layers with ``min(C_in, C_out)`` at least this
            (``winograd_min_channels``).
        channels_last: channels-last memory format (``channels_last``).
        device: where the network will run (default: where its parameters are); Winograd
            is applied for the CPU only.

    Returns:
        What was done: ``{"folded_bn": n, "winograd_convs": n, "channels_last": bool}``.

    Raises:
        RuntimeError: ``net`` is in training mode.
    """
    if net.training:
        raise RuntimeError("prepare_for_inference needs the network in eval mode (net.eval())")
    report: dict[str, Any] = {"folded_bn": 0, "winograd_convs": 0, "channels_last": False}
    if fold_batchnorm:
        report["folded_bn"] = fold_frozen_batchnorm(net)
    if channels_last:
        net.to(memory_format=torch.channels_last)
        if hasattr(net, "channels_last"):
            net.channels_last = True  # SMP converts its input in forward
        report["channels_last"] = True
    if device is None:
        on_cpu = all(p.device.type == "cpu" for p in net.parameters())
    else:
        on_cpu = torch.device(device).type == "cpu"
    if winograd and on_cpu:
        report["winograd_convs"] = convert_to_winograd(
            net, tile=winograd_tile, min_channels=winograd_min_channels
        )
    return report


def inference_options(cfg: Any) -> dict[str, Any]:
    """The keyword arguments of :func:`prepare_for_inference` from a predict / eval config.

    Args:
        cfg: a job config with an ``inference`` node (the ``inference`` group), the node
            itself, or an older job config with the switches at its top level.

    Missing keys take the function's defaults (old job configs keep working).
    """
    node = cfg.get("inference")
    if node is not None:
        cfg = node
    keys = (
        "fold_batchnorm",
        "winograd",
        "winograd_tile",
        "winograd_min_channels",
        "channels_last",
    )
    return {k: cfg.get(k) for k in keys if cfg.get(k) is not None}


__all__ = ["inference_options", "prepare_for_inference"]
