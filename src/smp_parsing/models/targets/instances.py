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
        Boxes, barycenters and areas are exact (full resolution); the masks are the maps
        sampled at the centre pixel of every s x s block (``maps[:, s//2::s, s//2::s]``),
        the resolution of F_mask.

    Raises:
        ValueError: empty list, maps of different sizes, a size not divisible by
            ``mask_stride``, or a class id outside ``0..num_classes-1``.
    """
    maps, batch_idx = _stack_person_maps(parsing_list, num_classes, mask_stride)
    num_maps, height, width = maps.shape
    device = maps.device

    # Work on the foreground pixels only (one pass over the maps): every per (person,
    # class) statistic is a bincount / scatter over them with the key person * C + class,
    # no (N, C, H, W) one-hot and a cost that follows the number of labelled pixels.
    person_of, ys, xs = maps.nonzero(as_tuple=True)
    values = maps[person_of, ys, xs].long()
    _check_class_range(values, person_of, batch_idx, num_classes)
    key = person_of * num_classes + values
    table = num_maps * num_classes
    # index_add, not bincount: bincount's CUDA kernel reads the key range on the host.
    count = torch.zeros(table, dtype=torch.long, device=device).index_add_(
        0, key, torch.ones_like(key)
    )
    # float64 sums: a full image's coordinate sum exceeds the float32 mantissa. index_add, not
    # a weighted bincount: the latter has no deterministic CUDA kernel and raises under
    # trainer.deterministic=true; both are exact here (integer sums far below 2**53).
    zeros = torch.zeros(table, dtype=torch.float64, device=device)
    sum_x = zeros.index_add(0, key, xs.double())
    sum_y = zeros.index_add(0, key, ys.double())
    x1 = torch.full((table,), width, device=device).scatter_reduce_(0, key, xs, "amin")
    y1 = torch.full((table,), height, device=device).scatter_reduce_(0, key, ys, "amin")
    x2 = torch.full((table,), -1, device=device).scatter_reduce_(0, key, xs, "amax") + 1
    y2 = torch.full((table,), -1, device=device).scatter_reduce_(0, key, ys, "amax") + 1
    stats = [t.view(num_maps, num_classes) for t in (count, sum_x, sum_y, x1, y1, x2, y2)]

    # Persons = the union of their parts; an all-background map is no person.
    areas = count.view(num_maps, num_classes).sum(1)
    # one nonzero, then integer indexing (each boolean-mask index would be a sync)
    keep = (areas > 0).nonzero(as_tuple=True)[0]
    count, sum_x, sum_y, x1, y1, x2, y2 = (t[keep] for t in stats)
    areas, batch_idx = areas[keep], batch_idx[keep]
    offset = mask_stride // 2  # sample the centre pixel of each s x s block
    maps_s = maps[:, offset::mask_stride, offset::mask_stride][keep]

    has_part = count[:, 1:] > 0  # (N, C_P)
    person_idx, part_cls = has_part.nonzero(as_tuple=True)
    labels = part_cls + 1

    persons = PersonInstances(
        batch_idx=batch_idx,
        boxes=torch.stack([x1.amin(1), y1.amin(1), x2.amax(1), y2.amax(1)], 1).float(),
        centers=_barycenters(sum_x.sum(1), sum_y.sum(1), areas),
        areas=areas,
        masks=maps_s != 0,
        has_part=has_part,
    )
    at = (person_idx, labels)
    parts = PartInstances(
        batch_idx=batch_idx[person_idx],
        person_idx=person_idx,
        labels=labels,
        boxes=torch.stack([x1[at], y1[at], x2[at], y2[at]], 1).float(),
        centers=_barycenters(sum_x[at], sum_y[at], count[at]),
        areas=count[at],
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
    device = parsing_list[0].device
    maps = torch.cat([p.to(device) for p in parsing_list])
    # filled on the device (a loop over the images of the batch): no host-to-device copy
    batch_idx = torch.cat(
        [
            torch.full((p.shape[0],), b, dtype=torch.long, device=device)
            for b, p in enumerate(parsing_list)
        ]
    )
    return maps, batch_idx


def _check_class_range(
    values: Tensor, person_of: Tensor, batch_idx: Tensor, num_classes: int
) -> None:
    """Raise a ValueError naming the images whose class ids are outside ``0..C-1``.

    On an accelerator the check is asynchronous (``torch._assert_async``: a device-side
    assertion, no host-device sync every step); the data sets already reject a sample with
    an out-of-range class id when they load it (``BadSampleError`` naming the file).
    """
    if values.numel() == 0:
        return
    if values.device.type != "cpu":
        in_range = ((values >= 0) & (values < num_classes)).all()
        torch._assert_async(in_range, f"extract_instances: class ids outside 0..{num_classes - 1}")
        return
    lo, hi = (int(v) for v in torch.aminmax(values))
    if lo < 0 or hi >= num_classes:
        bad = (values < 0) | (values >= num_classes)
        images = sorted(set(batch_idx[person_of[bad]].tolist()))
        raise ValueError(
            f"extract_instances: class ids must be in 0..{num_classes - 1}, got range "
            f"[{lo}, {hi}] (images {images} of the batch)"
        )


def _barycenters(sum_x: Tensor, sum_y: Tensor, area: Tensor) -> Tensor:
    """Centre of mass ``(x, y)`` from coordinate sums (float64) and pixel counts."""
    area = area.double().clamp(min=1)
    # + 0.5: pixel i covers [i, i + 1)
    return torch.stack([sum_x / area + 0.5, sum_y / area + 0.5], 1).float()
