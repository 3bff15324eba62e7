"""Center regions and human-center heatmap targets (paper section 3.4).

Shapes convention: B batch size, N persons (or instances) of the batch, S grid size
(S x S cells over the whole padded input, whatever its aspect ratio), H x W padded input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from smp_parsing.models.targets.instances import BatchInstances


@dataclass
class CenterTargets:
    """Targets of the center head.

    Attributes:
        heatmap: ``(B, S, S)`` float, 1 in the center region of any person, else 0.
        owner: ``(B, S, S)`` long, the person (index into ``instances.persons``) that owns
            the cell after the tie-break (smaller area wins), -1 where no person.
        num_pos: number of positive cells in the batch (0-dim long tensor).
    """

    heatmap: Tensor
    owner: Tensor
    num_pos: Tensor


def center_region_cells(
    centers: Tensor, boxes: Tensor, grid: int, image_size: tuple[int, int], epsilon: float
) -> tuple[Tensor, Tensor]:
    """Grid cells of the barycenter and of the center region of each instance.

    The region is the box of half-size ``0.5 * epsilon * (w, h)`` around the barycenter,
    converted to grid cells and clipped to at most +-1 cell around the barycenter cell
    (so at most 3 x 3 cells).

    Args:
        centers: ``(N, 2)`` float barycenters ``(x, y)`` in pixels.
        boxes: ``(N, 4)`` float boxes ``(x1, y1, x2, y2)`` in pixels.
        grid: S.
        image_size: ``(H, W)`` padded input size.
        epsilon: region scale (0.2 in the paper).

    Returns:
        ``center_cells`` ``(N, 2)`` long ``(x, y)`` and ``regions`` ``(N, 4)`` long
        inclusive cell ranges ``(x0, y0, x1, y1)``.
    """
    half = 0.5 * epsilon * (boxes[:, 2:] - boxes[:, :2])
    cell = grid_cells(centers, grid, image_size)
    lo = torch.maximum(grid_cells(centers - half, grid, image_size), cell - 1)
    hi = torch.minimum(grid_cells(centers + half, grid, image_size), cell + 1)
    return cell, torch.cat([lo, hi], 1)


def drop_regions(regions: Tensor, keep: Tensor) -> Tensor:
    """The regions of the instances not kept made empty (x0 > x1: they cover no cell).

    Args:
        regions: ``(N, 4)`` long inclusive cell ranges ``(x0, y0, x1, y1)``.
        keep: ``(N,)`` bool.

    Returns:
        ``(N, 4)`` regions, ``(1, 1, 0, 0)`` where ``keep`` is False.
    """
    empty = regions.new_zeros(4)  # built on the device: no host-to-device copy
    empty[:2] = 1
    return torch.where(keep[:, None], regions, empty)


def grid_cells(points: Tensor, grid: int, image_size: tuple[int, int]) -> Tensor:
    """Grid cell ``floor(p * S / size)`` of pixel points, clamped to the grid.

    The S x S grid spans the whole padded input, so cells are ``W / S`` wide and ``H / S``
    high (not square for a non-square input), as in SOLO.

    Args:
        points: ``(N, 2)`` float ``(x, y)`` in pixels.
        grid: S.
        image_size: ``(H, W)``.

    Returns:
        ``(N, 2)`` long cells ``(x, y)``.
    """
    height, width = image_size
    # Python scalars, not a (2,) tensor of the sizes: no host-to-device copy per call.
    scaled = torch.stack([points[:, 0] * grid / width, points[:, 1] * grid / height], 1)
    return torch.floor(scaled).long().clamp(0, grid - 1)


def assign_cells(
    regions: Tensor, batch_idx: Tensor, areas: Tensor, batch_size: int, grid: int
) -> Tensor:
    """Owner of every grid cell: among the instances whose region covers it, the smallest.

    Tie-break: smaller ``areas`` wins, equal areas -> lower instance index wins.

    Args:
        regions: ``(N, 4)`` long inclusive ranges ``(x0, y0, x1, y1)``.
        batch_idx: ``(N,)`` long image of each instance.
        areas: ``(N,)`` areas used by the tie-break.
        batch_size: B.
        grid: S.

    Returns:
        ``(B, S, S)`` long instance index, -1 where no instance covers the cell.
    """
    num = regions.shape[0]
    device = regions.device
    idx = torch.arange(grid, device=device)
    in_x = (idx >= regions[:, 0:1]) & (idx <= regions[:, 2:3])  # (N, S)
    in_y = (idx >= regions[:, 1:2]) & (idx <= regions[:, 3:4])  # (N, S)
    covers = in_y[:, :, None] & in_x[:, None, :]  # (N, S, S)
    # One sortable key per instance: area first, index second, so the minimum over
    # the covering instances is the smallest one (and the first on equal areas).
    rank = areas.long() * max(num, 1) + torch.arange(num, device=device)
    never = torch.iinfo(torch.long).max
    keyed = torch.where(covers, rank.view(-1, 1, 1), torch.full_like(rank[:1, None, None], never))
    best = torch.full((batch_size, grid * grid), never, dtype=torch.long, device=device)
    image_of = batch_idx.view(-1, 1).expand(num, grid * grid)
    best.scatter_reduce_(0, image_of, keyed.view(num, grid * grid), "amin")
    best = best.view(batch_size, grid, grid)
    return torch.where(best < never, best % max(num, 1), torch.full_like(best, -1))


@torch.no_grad()
def build_center_targets(instances: BatchInstances, *, grid: int, epsilon: float) -> CenterTargets:
    """Human-center heatmap targets on the S x S center grid.

    Args:
        instances: persons of the batch (from :func:`extract_instances`).
        grid: S_c (40 at 1x).
        epsilon: center-region scale (0.2).

    Returns:
        The :class:`CenterTargets`.
    """
    persons = instances.persons
    _, regions = center_region_cells(
        persons.centers, persons.boxes, grid, instances.image_size, epsilon
    )
    owner = assign_cells(regions, persons.batch_idx, persons.areas, instances.batch_size, grid)
    heatmap = (owner >= 0).float()
    return CenterTargets(heatmap=heatmap, owner=owner, num_pos=(owner >= 0).sum())
