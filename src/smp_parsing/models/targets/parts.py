"""Part category and mask targets over the FPN levels (SOLOv2-style, paper Table 1).

Shapes convention: B batch size, M part instances of the batch, L levels, S_l grid of
level l, C_P part classes, P positive cells over all levels, H x W padded input,
s the mask stride (4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from smp_parsing.models.targets.center import assign_cells, center_region_cells, drop_regions
from smp_parsing.models.targets.instances import BatchInstances


@dataclass
class PartTargets:
    """Targets of the part category and kernel sub-heads.

    Attributes:
        labels: per level ``(B, S_l, S_l)`` long, 0 = background, else the part class
            ``1..C_P`` of the cell's owner (channel ``label - 1`` of the category logits).
        pos_batch: ``(P,)`` long image of each positive cell (all levels, level-major).
        pos_level: ``(P,)`` long level of each positive cell.
        pos_cell: ``(P,)`` long flat cell index ``y * S_l + x`` in its level.
        pos_instance: ``(P,)`` long part instance owning the cell (index into
            ``instances.parts``).
        num_pos: P as a 0-dim long tensor.
        instance_masks: ``(M, H / s, W / s)`` bool masks of the part instances (shared
            with ``instances.parts.masks``, not copied).
    """

    labels: list[Tensor]
    pos_batch: Tensor
    pos_level: Tensor
    pos_cell: Tensor
    pos_instance: Tensor
    num_pos: Tensor
    instance_masks: Tensor

    @property
    def mask_targets(self) -> Tensor:
        """``(P, H / s, W / s)`` bool: the owner's mask of every positive cell (Dice
        targets), gathered on access so that P copies of a mask are not kept around."""
        return self.instance_masks[self.pos_instance]


def level_assignment(boxes: Tensor, scale_ranges: Sequence[Sequence[float]]) -> Tensor:
    """Which levels each instance belongs to, by ``sqrt(w * h)`` of its box.

    A level takes the instance when ``lo <= sqrt(w * h) <= hi``; ranges overlap, so an
    instance can go to two levels.

    Args:
        boxes: ``(M, 4)`` float ``(x1, y1, x2, y2)``.
        scale_ranges: L pairs ``(lo, hi)``.

    Returns:
        ``(L, M)`` bool.
    """
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0)
    scale = torch.sqrt(wh[:, 0] * wh[:, 1])
    # compared with Python scalars: no host-to-device copy of the ranges per step
    return torch.stack([(scale >= float(lo)) & (scale <= float(hi)) for lo, hi in scale_ranges])


@torch.no_grad()
def build_part_targets(
    instances: BatchInstances,
    *,
    grids: Sequence[int],
    scale_ranges: Sequence[Sequence[float]],
    epsilon: float,
) -> PartTargets:
    """Per-level part category targets and the positive cells with their mask targets.

    Each part instance goes to every level whose scale range holds ``sqrt(w * h)`` of its
    box; its center region cells on that level's grid get its class. Overlapping
    instances on one cell: the smaller area wins, ties -> lower index
    (:func:`~smp_parsing.models.targets.center.assign_cells`).

    Args:
        instances: the batch instances.
        grids: L grid sizes S_l (40, 36, 24, 16, 12 at 1x).
        scale_ranges: L ``(lo, hi)`` pairs on ``sqrt(w * h)`` in input pixels.
        epsilon: center-region scale (0.2).

    Returns:
        The :class:`PartTargets`.
    """
    if len(grids) != len(scale_ranges):
        raise ValueError(
            f"build_part_targets: {len(grids)} grids but {len(scale_ranges)} scale ranges"
        )
    parts = instances.parts
    batch = instances.batch_size
    on_level = level_assignment(parts.boxes, scale_ranges)  # (L, M)
    labels, owners = [], []
    # A Python loop over the (five) FPN levels only; all instances and cells of a level
    # are handled at once.
    for level, grid in enumerate(grids):
        _, regions = center_region_cells(
            parts.centers, parts.boxes, grid, instances.image_size, epsilon
        )
        # Instances off this level get an empty region (x0 > x1) and cover no cell.
        regions = drop_regions(regions, on_level[level])
        owner = assign_cells(regions, parts.batch_idx, parts.areas, batch, grid)
        # Index with owner + 1 into the labels prefixed by a background 0: no branch for
        # cells without owner or batches without parts.
        labels.append(torch.cat([parts.labels.new_zeros(1), parts.labels])[owner + 1])
        owners.append(owner.flatten())
    # The positives of all levels with one nonzero (one host-device sync, not one per
    # level), in (level, image, cell) order; level, image and cell are recovered from the
    # flat index with the levels' Python-int offsets (no constant tensor to copy).
    owner_all = torch.cat(owners)
    flat = (owner_all >= 0).nonzero(as_tuple=True)[0]
    pos_level = torch.zeros_like(flat)
    start = torch.zeros_like(flat)
    cells = torch.full_like(flat, grids[0] ** 2)
    offset = 0
    for level, grid in enumerate(grids):
        if level:
            above = flat >= offset
            pos_level = torch.where(above, level, pos_level)
            start = torch.where(above, offset, start)
            cells = torch.where(above, grid**2, cells)
        offset += batch * grid**2
    in_level = flat - start
    pos_instance = owner_all[flat]
    return PartTargets(
        labels=labels,
        pos_batch=torch.div(in_level, cells, rounding_mode="floor"),
        pos_level=pos_level,
        pos_cell=in_level % cells,
        pos_instance=pos_instance,
        num_pos=pos_instance.new_full((), pos_instance.numel()),
        instance_masks=parts.masks,
    )
