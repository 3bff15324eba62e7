"""SMP losses (paper eq. 2): focal for centers and part categories, Dice for part
masks, scale-weighted Smooth L1 for offsets.

Shapes convention: B batch size, C_P part classes, S_c center grid, S_l part grid of level
l, C_K kernel length, P positive part cells (all levels), h x w = H/4 x W/4 mask size.
Every term stays finite and connected to the graph when there is no positive
(``x.sum() * 0``), so every parameter gets a (zero) gradient.
"""

from __future__ import annotations

from torch import Tensor

from smp_parsing.models.outputs import SMPOutputs
from smp_parsing.models.targets import SMPTargets


def focal_loss(
    logits: Tensor, targets: Tensor, num_pos: Tensor, *, alpha: float = 0.25, gamma: float = 2.0
) -> Tensor:
    """Sigmoid focal loss summed over all entries and divided by ``num_pos + 1``.

    Args:
        logits: any shape.
        targets: same shape, 0/1 floats.
        num_pos: number of positive cells (0-dim tensor or int).
        alpha: positive-class weight (0.25).
        gamma: focusing exponent (2).

    Returns:
        0-dim loss.
    """
    raise NotImplementedError


def center_loss(
    center_logits: Tensor, heatmap: Tensor, num_pos: Tensor, *, alpha: float, gamma: float
) -> Tensor:
    """Focal loss of the human-center heatmap.

    Args:
        center_logits: ``(B, 1, S_c, S_c)``.
        heatmap: ``(B, S_c, S_c)`` 0/1 targets.
        num_pos: number of positive cells.
        alpha: focal alpha.
        gamma: focal gamma.

    Returns:
        0-dim loss, normalised by ``num_pos + 1``.
    """
    raise NotImplementedError


def part_category_loss(
    cate_logits: list[Tensor], labels: list[Tensor], *, alpha: float, gamma: float
) -> Tensor:
    """Focal loss over the part category maps of all levels.

    Args:
        cate_logits: per level ``(B, C_P, S_l, S_l)``.
        labels: per level ``(B, S_l, S_l)`` long, 0 = background, ``1..C_P`` class.
        alpha: focal alpha.
        gamma: focal gamma.

    Returns:
        0-dim loss, normalised by the number of positive cells of all levels + 1.
    """
    raise NotImplementedError


def positive_mask_logits(
    kernels: list[Tensor], mask_feat: Tensor, pos_batch: Tensor, pos_level: Tensor, pos_cell: Tensor
) -> Tensor:
    """Mask logits of the positive cells: dynamic 1x1 conv of their kernels with F_mask.

    All positives of all images at once: kernels are padded per image into
    ``(B, P_max, C_K)`` and multiplied with ``(B, C_K, h * w)`` in one ``bmm``.

    Args:
        kernels: per level ``(B, C_K, S_l, S_l)``.
        mask_feat: ``(B, C_K, h, w)``.
        pos_batch: ``(P,)`` image of each positive.
        pos_level: ``(P,)`` level of each positive.
        pos_cell: ``(P,)`` flat cell ``y * S_l + x``.

    Returns:
        ``(P, h, w)`` mask logits.
    """
    raise NotImplementedError


def dice_loss(mask_logits: Tensor, mask_targets: Tensor, *, eps: float = 0.002) -> Tensor:
    """Dice loss ``1 - 2 sum(p t) / (sum p^2 + sum t^2 + eps)`` averaged over masks.

    Args:
        mask_logits: ``(P, h, w)`` logits.
        mask_targets: ``(P, h, w)`` 0/1 (bool or float).
        eps: smoothing term of the denominator (0.002 as in the release, split 0.001 + 0.001).

    Returns:
        0-dim mean loss; ``mask_logits.sum() * 0`` when ``P == 0``.
    """
    raise NotImplementedError


def offset_loss(
    pred: Tensor, target: Tensor, weights: Tensor, *, beta: float = 1.0 / 9.0
) -> Tensor:
    """Scale-weighted Smooth L1 of the offsets.

    Args:
        pred: ``(B, C_P, 2, S_c, S_c)`` predicted offsets.
        target: ``(B, C_P, 2, S_c, S_c)`` target offsets.
        weights: ``(B, C_P, S_c, S_c)`` per-entry weights (shared by dx and dy).
        beta: Smooth L1 transition point.

    Returns:
        0-dim loss: ``sum(w * smooth_l1) / #entries with w > 0`` (dx and dy counted
        separately), ``pred.sum() * 0`` when nothing is weighted.
    """
    raise NotImplementedError


def smp_losses(
    outputs: SMPOutputs,
    targets: SMPTargets,
    *,
    center_weight: float,
    part_weight: float,
    mask_weight: float,
    offset_weight: float,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    offset_beta: float = 1.0 / 9.0,
    dice_eps: float = 0.002,
) -> dict[str, Tensor]:
    """Weighted SMP loss terms (eq. 2).

    Args:
        outputs: raw head outputs.
        targets: the batch targets (:func:`~smp_parsing.models.targets.build_smp_targets`).
        center_weight: lambda_c (1.0).
        part_weight: lambda_p (1.0).
        mask_weight: lambda_d (3.0).
        offset_weight: lambda_o (10.0).
        focal_alpha: focal alpha (0.25).
        focal_gamma: focal gamma (2.0).
        offset_beta: Smooth L1 beta (1/9).
        dice_eps: Dice smoothing (0.002).

    Returns:
        ``loss_center``, ``loss_part``, ``loss_mask``, ``loss_offset`` (weighted) and
        ``loss`` = their sum.
    """
    raise NotImplementedError
