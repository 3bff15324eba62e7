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
    maps, batch_idx = _stack_person_maps(parsing_list, num_classes, mask_stride)
    num_maps, height, width = maps.shape
    device = maps.device

    # Per (person, class) row and column histograms via one bincount each: (N*C) x H
    # and (N*C) x W. Everything (area, barycenter, box) follows from these two
    # projections without a (N, C, H, W) one-hot.
    key = torch.arange(num_maps, device=device).view(-1, 1, 1) * num_classes + maps.long()
    rows = torch.arange(height, device=device).view(1, -1, 1)
    cols = torch.arange(width, device=device).view(1, 1, -1)
    row_hist = torch.bincount(
        (key * height + rows).flatten(), minlength=num_maps * num_classes * height
    )
    row_hist = row_hist.view(num_maps, num_classes, height)
    col_hist = torch.bincount(
        (key * width + cols).flatten(), minlength=num_maps * num_classes * width
    )
    col_hist = col_hist.view(num_maps, num_classes, width)
    del key

    # Persons: the union of their parts = all classes except background.
    person_rows = row_hist[:, 1:].sum(1)
    person_cols = col_hist[:, 1:].sum(1)
    areas = person_rows.sum(1)
    keep = areas > 0  # an all-background map is no person
    person_rows, person_cols, areas = person_rows[keep], person_cols[keep], areas[keep]
    row_hist, col_hist = row_hist[keep], col_hist[keep]
    maps, batch_idx = maps[keep], batch_idx[keep]

    offset = mask_stride // 2  # sample the centre pixel of each s x s block
    maps_s = maps[:, offset::mask_stride, offset::mask_stride]

    part_areas = row_hist[:, 1:].sum(2)  # (N, C_P)
    has_part = part_areas > 0
    person_idx, part_cls = has_part.nonzero(as_tuple=True)
    labels = part_cls + 1

    persons = PersonInstances(
        batch_idx=batch_idx,
        boxes=_boxes(person_rows, person_cols),
        centers=_barycenters(person_rows, person_cols),
        areas=areas,
        masks=maps_s != 0,
        has_part=has_part,
    )
    part_rows = row_hist[person_idx, labels]
    part_cols = col_hist[person_idx, labels]
    parts = PartInstances(
        batch_idx=batch_idx[person_idx],
        person_idx=person_idx,
        labels=labels,
        boxes=_boxes(part_rows, part_cols),
        centers=_barycenters(part_rows, part_cols),
        areas=part_areas[person_idx, part_cls],
        masks=maps_s[person_idx] == labels.view(-1, 1, 1).to(maps_s.dtype),
    )
    return BatchInstances(
        persons=persons,
        parts=parts,
        batch_size=len(parsing_list),
        image_size=(height, width),
        num_classes=num_classes,
        mask_stride=mask_stride,
    )


def _stack_person_maps(
    parsing_list: list[Tensor], num_classes: int, mask_stride: int
) -> tuple[Tensor, Tensor]:
    """Validate and concatenate the per-image maps.

    Returns:
        ``maps`` ``(N, H, W)`` (input dtype) and ``batch_idx`` ``(N,)`` long.
    """
    if len(parsing_list) == 0:
        raise ValueError("extract_instances: empty batch (parsing_list has no image)")
    sizes = {tuple(p.shape[-2:]) for p in parsing_list}
    if len(sizes) != 1:
        raise ValueError(f"extract_instances: person maps of different sizes {sorted(sizes)}")
    height, width = sizes.pop()
    for i, p in enumerate(parsing_list):
        if p.dim() != 3:
            raise ValueError(
                f"extract_instances: image {i}: expected (N, H, W), got {tuple(p.shape)}"
            )
        if p.is_floating_point() or p.dtype == torch.bool:
            raise ValueError(
                f"extract_instances: image {i}: integer class ids needed, got {p.dtype}"
            )
    if height % mask_stride or width % mask_stride:
        raise ValueError(
            f"extract_instances: size {height}x{width} is not a multiple of mask_stride {mask_stride}"
        )
    counts = torch.tensor([p.shape[0] for p in parsing_list])
    device = parsing_list[0].device
    maps = torch.cat([p.to(device) for p in parsing_list])
    if maps.numel() > 0:
        lo, hi = int(maps.min()), int(maps.max())
        if lo < 0 or hi >= num_classes:
            bad = [
                i
                for i, p in enumerate(parsing_list)
                if p.numel() and (p.min() < 0 or p.max() >= num_classes)
            ]
            raise ValueError(
                f"extract_instances: class ids must be in 0..{num_classes - 1}, got range "
                f"[{lo}, {hi}] (images {bad})"
            )
    batch_idx = torch.repeat_interleave(torch.arange(len(parsing_list)), counts).to(device)
    return maps, batch_idx


def _barycenters(row_hist: Tensor, col_hist: Tensor) -> Tensor:
    """Centre of mass ``(x, y)`` from row/column histograms ``(K, H)``, ``(K, W)``."""
    # float64: pixel sums of a full image exceed the 24-bit float32 mantissa.
    area = row_hist.sum(1).double().clamp(min=1)
    ys = torch.arange(row_hist.shape[1], device=row_hist.device, dtype=torch.float64) + 0.5
    xs = torch.arange(col_hist.shape[1], device=col_hist.device, dtype=torch.float64) + 0.5
    cy = (row_hist.double() * ys).sum(1) / area
    cx = (col_hist.double() * xs).sum(1) / area
    return torch.stack([cx, cy], 1).float()


def _boxes(row_hist: Tensor, col_hist: Tensor) -> Tensor:
    """Boxes ``(x1, y1, x2, y2)`` (x2/y2 exclusive) from row/column histograms."""
    x1, x2 = _extent(col_hist > 0)
    y1, y2 = _extent(row_hist > 0)
    return torch.stack([x1, y1, x2, y2], 1).float()


def _extent(present: Tensor) -> tuple[Tensor, Tensor]:
    """First index and last index + 1 of the True entries of each row of ``(K, L)``."""
    length = present.shape[1]
    # argmax returns the first maximal index, on the flipped rows the last one.
    first = present.to(torch.uint8).argmax(1)
    last = length - present.flip(1).to(torch.uint8).argmax(1)
    return first, last
