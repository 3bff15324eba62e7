"""Human-center -> part-barycenter offset targets (paper eq. 1).

Shapes convention: B batch size, C_P part classes, S the center/offset grid (40 at 1x).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

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
    raise NotImplementedError


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
    raise NotImplementedError
