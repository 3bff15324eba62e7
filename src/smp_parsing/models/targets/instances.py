"""Person and part instances of a batch, extracted from per-person parsing maps.

Shapes convention:
    B batch size, H x W padded input size, C number of classes incl. background,
    C_P = C - 1 part classes, N persons in the batch, M part instances in the batch,
    s the mask stride (4: the resolution of F_mask).

A *part instance* is one non-empty (person, part class) pair (paper section 3: a human
is the sum of its C_P part masks). Geometry follows one convention everywhere:
pixel ``i`` covers ``[i, i + 1)``, so a barycenter is the mean pixel index + 0.5 and a
box is ``(x_min, y_min, x_max + 1, y_max + 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class PersonInstances:
    """All persons of a batch, flat.

    Attributes:
        batch_idx: ``(N,)`` long, image of each person.
        boxes: ``(N, 4)`` float ``(x1, y1, x2, y2)`` in pixels, x2/y2 exclusive.
        centers: ``(N, 2)`` float barycenter ``(x, y)`` of the person mask (union of parts).
        areas: ``(N,)`` long pixel count of the person mask.
        masks: ``(N, H / s, W / s)`` bool person masks sampled at the mask stride.
        has_part: ``(N, C_P)`` bool, whether the person has a pixel of part class p + 1.
    """

    batch_idx: Tensor
    boxes: Tensor
    centers: Tensor
    areas: Tensor
    masks: Tensor
    has_part: Tensor

    def __len__(self) -> int:
        return int(self.batch_idx.numel())


@dataclass
class PartInstances:
    """All part instances (non-empty person x part class pairs) of a batch, flat.

    Attributes:
        batch_idx: ``(M,)`` long, image of each part.
        person_idx: ``(M,)`` long, index into :class:`PersonInstances` (flat over the batch).
        labels: ``(M,)`` long part class in ``1..C-1``.
        boxes: ``(M, 4)`` float ``(x1, y1, x2, y2)`` in pixels, x2/y2 exclusive.
        centers: ``(M, 2)`` float barycenter ``(x, y)`` of the part mask.
        areas: ``(M,)`` long pixel count.
        masks: ``(M, H / s, W / s)`` bool part masks at the mask stride (the Dice targets).
    """

    batch_idx: Tensor
    person_idx: Tensor
    labels: Tensor
    boxes: Tensor
    centers: Tensor
    areas: Tensor
    masks: Tensor

    def __len__(self) -> int:
        return int(self.batch_idx.numel())


@dataclass
class BatchInstances:
    """Persons and parts of one batch plus the geometry they live in.

    Attributes:
        persons: the persons, flat over the batch.
        parts: the part instances, flat over the batch.
        batch_size: B.
        image_size: ``(H, W)`` padded input size (all maps of the batch share it).
        num_classes: C, background included.
        mask_stride: s, the stride of the stored masks.
    """

    persons: PersonInstances
    parts: PartInstances
    batch_size: int
    image_size: tuple[int, int]
    num_classes: int
    mask_stride: int


@torch.no_grad()
def extract_instances(
    parsing_list: list[Tensor], num_classes: int, *, mask_stride: int = 4
) -> BatchInstances:
    """Extract persons and part instances of a whole batch with tensor reductions.

    Args:
        parsing_list: per image a ``(N_i, H, W)`` integer tensor, one map of class ids per
            person (0 = background), all at the same padded size ``H x W`` (``N_i`` may be 0).
        num_classes: C, background included (59 for MHP v2, 15 for DensePose).
        mask_stride: stride s of the stored masks; ``H`` and ``W`` must be multiples of it.

    Returns:
        The :class:`BatchInstances`; persons whose map is all background are dropped.

    Raises:
        ValueError: empty list, maps of different sizes, a size not divisible by
            ``mask_stride``, or a class id outside ``0..num_classes-1``.
    """
    raise NotImplementedError
