"""What a head added to SMP brings: its module, its targets and its loss term.

A head listed under ``extra_heads`` in ``conf/model/net/smp.yaml`` is built by
:class:`~smp_parsing.models.smp.SMP` with ``in_channels`` (the FPN width) and wired without
touching any other file: ``forward`` stores its output in ``SMPOutputs.extra[name]``, ``loss``
calls its :meth:`~SMPHead.build_targets` and :meth:`~SMPHead.loss` and adds the returned terms to
the loss dict (they are logged as ``train/<term>`` and summed into ``loss``).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from smp_parsing.models.targets.instances import BatchInstances


@runtime_checkable
class SMPHead(Protocol):
    """The protocol of an extra head (an ``nn.Module``).

    Shapes: ``feats`` are the FPN levels P2..P6, each ``(B, in_channels, H / s_l, W / s_l)``.
    """

    def __call__(self, feats: list[Tensor]) -> Any:
        """The head's raw output for the batch (a tensor or a list of tensors)."""

    def build_targets(self, parsing_list: list[Tensor], instances: BatchInstances) -> Any:
        """The head's targets (no gradient).

        Args:
            parsing_list: per image ``(N_i, H, W)`` integer person maps at the padded input size.
            instances: the persons and parts of the batch (shared by every head's targets).
        """

    def loss(self, output: Any, targets: Any) -> dict[str, Tensor]:
        """Weighted loss terms, named ``loss_<what>``, each a 0-dim float32 tensor connected to
        every parameter of the head (``x.sum() * 0`` when there is no positive: DDP)."""
