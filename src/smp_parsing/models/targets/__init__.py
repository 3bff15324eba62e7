"""SMP training targets: instances, center heatmap, part categories/masks, offsets.

:func:`build_smp_targets` runs the whole chain; the pieces live in their own modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from smp_parsing.models.layers.precision import full_precision
from smp_parsing.models.targets.center import CenterTargets, build_center_targets
from smp_parsing.models.targets.instances import (
    BatchInstances,
    PartInstances,
    PersonInstances,
    extract_instances,
)
from smp_parsing.models.targets.offsets import OffsetTargets, build_offset_targets
from smp_parsing.models.targets.parts import PartTargets, build_part_targets

__all__ = [
    "BatchInstances",
    "CenterTargets",
    "OffsetTargets",
    "PartInstances",
    "PartTargets",
    "PersonInstances",
    "SMPTargets",
    "build_center_targets",
    "build_offset_targets",
    "build_part_targets",
    "build_smp_targets",
    "extract_instances",
]


@dataclass
class SMPTargets:
    """Every target of one batch.

    Attributes:
        instances: the persons and parts the targets come from.
        center: human-center heatmap targets on the S_c grid.
        parts: per-level part category targets, positive cells, mask targets.
        offsets: offset targets and weights on the S_c grid.
    """

    instances: BatchInstances
    center: CenterTargets
    parts: PartTargets
    offsets: OffsetTargets


@full_precision
@torch.no_grad()
def build_smp_targets(
    parsing_list: list[Tensor],
    *,
    num_classes: int,
    center_grid: int,
    part_grids: Sequence[int],
    scale_ranges: Sequence[Sequence[float]],
    epsilon: float,
    mask_stride: int = 4,
) -> SMPTargets:
    """Build all SMP targets of a batch.

    Args:
        parsing_list: per image a ``(N_i, H, W)`` integer tensor of per-person class maps at
            the padded input size (the batch's ``"parsing"`` in training).
        num_classes: C, background included.
        center_grid: S_c of the center and offset heads.
        part_grids: L grid sizes of the part levels.
        scale_ranges: L ``(lo, hi)`` ranges on ``sqrt(w * h)`` of a part box.
        epsilon: center-region scale (paper: 0.2).
        mask_stride: stride of F_mask (4).

    Returns:
        The :class:`SMPTargets`.
    """
    instances = extract_instances(parsing_list, num_classes, mask_stride=mask_stride)
    return SMPTargets(
        instances=instances,
        center=build_center_targets(instances, grid=center_grid, epsilon=epsilon),
        parts=build_part_targets(
            instances, grids=part_grids, scale_ranges=scale_ranges, epsilon=epsilon
        ),
        offsets=build_offset_targets(instances, grid=center_grid, epsilon=epsilon),
    )
