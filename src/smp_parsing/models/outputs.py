"""Typed container for the raw head outputs of :class:`~smp_parsing.models.smp.SMP`.

Shapes convention (used everywhere in ``smp_parsing.models``):
    B  batch size,  C_P number of part classes (background excluded),
    S_c center/offset grid (40 at 1x), S_l part grid of FPN level l,
    C_K dynamic kernel length (256 in the paper), H/4 x W/4 mask-feature size.
All tensors are logits / raw regressions: sigmoid and decoding happen in the
pure functions of ``smp_parsing.models.decode``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from torch import Tensor


@dataclass
class SMPOutputs:
    """Raw outputs of one SMP forward pass.

    Attributes:
        center: ``(B, 1, S_c, S_c)`` human-center logits.
        offsets: ``(B, C_P, 2, S_c, S_c)`` offsets ``(dx, dy)`` in grid cells from a
            human-center cell to the barycenter cell of each part class; the part
            centre is ``cell - offset`` (targets are ``cell - part_cell``).
        cate: per level ``(B, C_P, S_l, S_l)`` part-category logits.
        kernels: per level ``(B, C_K, S_l, S_l)`` dynamic 1x1 mask kernels.
        mask_feat: ``(B, C_K, H/4, W/4)`` mask features F_mask.
        mir_feat: ``(B, C_mir, H/4, W/4)`` MIR feature map, or ``None`` when MIR is off.
        mir_semantic: ``(B, C_P + 1, H/4, W/4)`` MIR semantic logits, or ``None``.
        extra: the outputs of the heads added under ``extra_heads`` (see
            :mod:`smp_parsing.models.heads.base`), by name.
    """

    center: Tensor
    offsets: Tensor
    cate: list[Tensor]
    kernels: list[Tensor]
    mask_feat: Tensor
    mir_feat: Tensor | None = None
    mir_semantic: Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def apply(self, fn: Callable[[Tensor], Tensor]) -> SMPOutputs:
        """A copy with ``fn`` applied to every tensor (casts, ``detach``, device moves).

        Per-level lists and the ``extra`` dict are mapped element-wise and absent outputs
        (``None``) stay absent, so a head added as a new field is covered without listing it.

        Args:
            fn: tensor -> tensor, e.g. ``Tensor.float`` or ``lambda t: t.to(device)``.

        Returns:
            A new :class:`SMPOutputs` of the same type; ``self`` is unchanged.
        """

        def one(value: Any) -> Any:
            if value is None:
                return None
            if isinstance(value, dict):
                return {k: one(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [fn(t) for t in value]
            return fn(value)

        return type(self)(**{f.name: one(getattr(self, f.name)) for f in fields(self)})
