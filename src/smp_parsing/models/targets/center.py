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
    raise NotImplementedError


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
    raise NotImplementedError


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
    raise NotImplementedError
