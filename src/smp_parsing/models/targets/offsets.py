"""Human-center -> part-barycenter offset targets (paper eq. 1).

Shapes convention: B batch size, C_P part classes, S the center/offset grid (40 at 1x).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from smp_parsing.models.targets.center import (
    assign_cells,
    center_region_cells,
    drop_regions,
    grid_cells,
)
from smp_parsing.models.targets.instances import BatchInstances


@dataclass
class OffsetTargets:
    """Targets of the offset head.

    Attributes:
        offsets: ``(B, C_P, 2, S, S)`` float ``(x - p_x, y - p_y)`` in grid cells, with
            ``(x, y)`` a cell of a person's center region and ``(p_x, p_y)`` the grid cell of
            that person's part p barycenter; 0 elsewhere.
        weights: ``(B, C_P, S, S)`` float, ``1 / sqrt(w_g^2 + h_g^2)`` of the owning person
            where the entry is supervised, 0 elsewhere.
    """

    offsets: Tensor
    weights: Tensor


def grid_box_size(boxes: Tensor, grid: int, image_size: tuple[int, int]) -> Tensor:
    """Size of boxes in grid cells: the number of cell boundaries they cross.

    ``w_g = cell(x2 - 1) - cell(x1)`` with ``cell(x) = floor(x * S / W)`` (x2 exclusive),
    same for ``h_g``: a person inside one cell has size 0.

    Args:
        boxes: ``(N, 4)`` float ``(x1, y1, x2, y2)`` in pixels.
        grid: S.
        image_size: ``(H, W)``.

    Returns:
        ``(N, 2)`` float ``(w_g, h_g)``.
    """
    height, width = image_size

    def cells(x: Tensor, y: Tensor) -> Tensor:  # scalar sizes: no host-to-device copy
        return torch.floor(torch.stack([x * grid / width, y * grid / height], 1)).clamp(0, grid - 1)

    first = cells(boxes[:, 0], boxes[:, 1])
    last = cells(boxes[:, 2] - 1, boxes[:, 3] - 1)
    return (last - first).clamp(min=0)


@torch.no_grad()
def build_offset_targets(instances: BatchInstances, *, grid: int, epsilon: float) -> OffsetTargets:
    """Offset targets and weights on the S x S grid.

    Every cell of a person's center region (owner by the same tie-break as the center
    targets: smaller person wins) gets, for each part class p the person has, the target
    ``(x - p_x, y - p_y)`` and the weight ``1 / sqrt(w_g^2 + h_g^2)``; persons with
    ``w_g = h_g = 0`` are skipped.

    Args:
        instances: the batch instances.
        grid: S_c (40 at 1x).
        epsilon: center-region scale (0.2).

    Returns:
        The :class:`OffsetTargets`.
    """
    persons, parts = instances.persons, instances.parts
    num_persons = len(persons)
    num_part_classes = instances.num_classes - 1
    device = persons.centers.device
    batch = instances.batch_size

    grid_wh = grid_box_size(persons.boxes, grid, instances.image_size)
    diag = grid_wh.norm(dim=1)
    supervised = diag > 0  # persons of zero grid size give no offset supervision
    weight = torch.where(supervised, 1.0 / diag.clamp(min=1e-6), torch.zeros_like(diag))

    _, regions = center_region_cells(
        persons.centers, persons.boxes, grid, instances.image_size, epsilon
    )
    regions = drop_regions(regions, supervised)
    owner = assign_cells(regions, persons.batch_idx, persons.areas, batch, grid)  # (B, S, S)

    # Grid cell of every (person, part class) barycenter: (N + 1, C_P, 2), row 0 a dummy
    # "no person" row so that owner + 1 indexes it without a branch.
    part_cells = grid_cells(parts.centers, grid, instances.image_size).float()
    person_part_cell = torch.zeros(num_persons + 1, num_part_classes, 2, device=device)
    person_part_cell[parts.person_idx + 1, parts.labels - 1] = part_cells
    has_part = torch.cat([persons.has_part.new_zeros(1, num_part_classes), persons.has_part])
    weight = torch.cat([weight.new_zeros(1), weight])

    ys, xs = torch.meshgrid(
        torch.arange(grid, device=device, dtype=torch.float32),
        torch.arange(grid, device=device, dtype=torch.float32),
        indexing="ij",
    )
    cell_xy = torch.stack([xs, ys], -1)  # (S, S, 2)
    slot = owner + 1  # (B, S, S), 0 = no owner
    entry = has_part[slot]  # (B, S, S, C_P)
    offsets = cell_xy[None, :, :, None, :] - person_part_cell[slot]  # (B, S, S, C_P, 2)
    offsets = torch.where(entry[..., None], offsets, 0.0)
    weights = torch.where(entry, weight[slot][..., None], 0.0)
    return OffsetTargets(
        offsets=offsets.permute(0, 3, 4, 1, 2).contiguous(),
        weights=weights.permute(0, 3, 1, 2).contiguous(),
    )
