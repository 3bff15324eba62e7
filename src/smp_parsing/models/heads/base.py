"""What a head added to SMP brings: its module, its targets and its loss term (+ a decode hook).

A head listed under ``extra_heads`` in ``conf/model/net/smp.yaml`` is built by
:class:`~smp_parsing.models.smp.SMP` with ``in_channels`` (the FPN width) and wired without
touching any other file: ``forward`` stores its output in ``SMPOutputs.extra[name]``, ``loss``
calls its :meth:`~SMPHead.build_targets` and :meth:`~SMPHead.loss` and adds the returned terms to
the loss dict (they are logged as ``train/<term>`` and summed into ``loss``), and ``predict``
calls its :meth:`~DecodingHead.decode` when it has one. SMP's own heads (center, part, offset,
MIR) are on the same protocol.

Two optional extensions, both generic:

* ``build_targets(parsing_list, instances, built)``: a head whose ``build_targets`` has a third
  parameter named ``built`` receives the targets already built by the heads before it (a
  read-only ``{head name: targets}``, in :meth:`SMP.loss_heads` order: ``center``, ``part``,
  ``offset``, ``mir``, then the extra heads). MIR reads the part head's positive cells so.
* ``decode(output, preds, metas) -> preds``: called by ``SMP.predict`` after the built-in decode
  (and after the heads before it), in :meth:`SMP.loss_heads` order, with the same output its
  ``loss`` reads; it returns the per-image prediction dicts, typically with keys of its own
  added (``{**pred, "<key>": value}``). MIR relabels the decoded parts so.
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from smp_parsing.models.targets.instances import BatchInstances


@runtime_checkable
class SMPHead(Protocol):
    """The protocol of a head (an ``nn.Module``).

    Shapes: ``feats`` are the FPN levels P2..P6, each ``(B, in_channels, H / s_l, W / s_l)``.
    """

    def __call__(self, feats: list[Tensor]) -> Any:
        """The head's raw output for the batch (a tensor or a list of tensors)."""

    def build_targets(self, parsing_list: list[Tensor], instances: BatchInstances) -> Any:
        """The head's targets (no gradient).

        Args:
            parsing_list: per image ``(N_i, H, W)`` integer person maps at the padded input size.
            instances: the persons and parts of the batch (shared by every head's targets).

        A third parameter named ``built`` is optional (see the module docstring).
        """

    def loss(self, output: Any, targets: Any) -> dict[str, Tensor]:
        """Weighted loss terms, named ``loss_<what>``, each a 0-dim float32 tensor connected to
        every parameter of the head (``x.sum() * 0`` when there is no positive: DDP)."""


@runtime_checkable
class DecodingHead(Protocol):
    """A head with the optional decode hook (``SMP.predict`` calls it)."""

    def decode(self, output: Any, preds: list[dict], metas: list[dict]) -> list[dict]:
        """The per-image predictions with what this head adds.

        Args:
            output: the head's output for the batch (float32), as its ``loss`` reads it.
            preds: per image the prediction dict so far (``parsing`` ``(P, H0, W0)`` uint8,
                ``scores`` ``(P,)``, ...).
            metas: per image ``img_size``, ``ori_size``, ...

        Returns:
            One dict per image (new dicts; the built-in keys keep their meaning).
        """


def wants_built_targets(head: SMPHead) -> bool:
    """Whether ``head.build_targets`` takes the targets built by the heads before it."""
    return "built" in inspect.signature(head.build_targets).parameters
