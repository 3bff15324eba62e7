"""SMP losses (paper eq. 2): focal for centers and part categories, Dice for part
masks, scale-weighted Smooth L1 for offsets.

Shapes convention: B batch size, C_P part classes, S_c center grid, S_l part grid of level
l, C_K kernel length, P positive part cells (all levels), h x w = H/4 x W/4 mask size.
Every function runs in fp32 under autocast (:mod:`smp_parsing.models.layers.precision`).
Every term stays finite and connected to the graph when there is no positive
(``x.sum() * 0``), so every parameter gets a (zero) gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss

from smp_parsing.models.layers.packing import pack_by_group
from smp_parsing.models.layers.precision import full_precision
from smp_parsing.models.outputs import SMPOutputs
from smp_parsing.models.targets import SMPTargets


@full_precision
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
    loss = sigmoid_focal_loss(
        logits.float(), targets.float(), alpha=alpha, gamma=gamma, reduction="sum"
    )
    return loss / (num_pos + 1)


@full_precision
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
    return focal_loss(center_logits[:, 0], heatmap, num_pos, alpha=alpha, gamma=gamma)


@full_precision
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
    if len(cate_logits) != len(labels):
        raise ValueError(f"{len(cate_logits)} category levels but {len(labels)} target levels")
    num_part_classes = cate_logits[0].shape[1]
    logits = torch.cat([c.permute(0, 2, 3, 1).reshape(-1, num_part_classes) for c in cate_logits])
    flat_labels = torch.cat([lab.reshape(-1) for lab in labels])
    # One-hot over the C_P part classes (label 0 = background: an all-negative row), by a
    # comparison: F.one_hot reads the labels' range on the host (two syncs per step).
    classes = torch.arange(1, num_part_classes + 1, device=flat_labels.device)
    targets = flat_labels[:, None] == classes
    num_pos = (flat_labels > 0).sum()
    return focal_loss(logits, targets, num_pos, alpha=alpha, gamma=gamma)


@full_precision
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
    batch, channels, height, width = mask_feat.shape
    # All levels' kernels side by side: (B, C_K, sum_l S_l^2); a positive's column is the
    # start of its level plus its cell.
    flat = torch.cat([k.flatten(2).float() for k in kernels], 2)
    # Start column of each positive's level from Python ints (no constant tensor copied
    # to the device every step).
    column = pos_cell.clone()
    start = 0
    for level, k in enumerate(kernels):
        column = torch.where(pos_level == level, pos_cell + start, column)
        start += k.shape[-1] * k.shape[-2]
    pos_kernels = flat[pos_batch, :, column]  # (P, C_K)

    # Pack the positives per image into (B, P_max, C_K): one bmm for the whole batch.
    packed, slot = pack_by_group(pos_kernels, pos_batch, num_groups=batch)
    logits = torch.bmm(packed, mask_feat.float().flatten(2))  # (B, P_max, h * w), fp32
    out = logits[slot[:, 0], slot[:, 1]]
    return out.view(-1, height, width)


@full_precision
def dice_loss(mask_logits: Tensor, mask_targets: Tensor, *, eps: float = 0.002) -> Tensor:
    """Dice loss ``1 - 2 sum(p t) / (sum p^2 + sum t^2 + eps)`` averaged over masks.

    Args:
        mask_logits: ``(P, h, w)`` logits.
        mask_targets: ``(P, h, w)`` 0/1 (bool or float).
        eps: smoothing term of the denominator (0.002 as in the release, split 0.001 + 0.001).

    Returns:
        0-dim mean loss; ``mask_logits.sum() * 0`` when ``P == 0``.
    """
    if mask_logits.shape[0] == 0:
        return mask_logits.sum() * 0
    prob = torch.sigmoid(mask_logits.float()).flatten(1)
    target = mask_targets.float().flatten(1)
    inter = (prob * target).sum(1)
    denom = (prob * prob).sum(1) + (target * target).sum(1) + eps
    return (1 - 2 * inter / denom).mean()


@full_precision
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
    per_entry = F.smooth_l1_loss(pred.float(), target.float(), reduction="none", beta=beta)
    weights = weights.float().unsqueeze(2)  # shared by dx and dy
    num_entries = (weights > 0).sum() * pred.shape[2]
    # Unweighted entries multiply by 0: the term stays connected to every prediction.
    return (per_entry * weights).sum() / num_entries.clamp(min=1)


@full_precision
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
    center = center_loss(
        outputs.center,
        targets.center.heatmap,
        targets.center.num_pos,
        alpha=focal_alpha,
        gamma=focal_gamma,
    )
    part = part_category_loss(
        outputs.cate, targets.parts.labels, alpha=focal_alpha, gamma=focal_gamma
    )
    pos = targets.parts
    mask_logits = positive_mask_logits(
        outputs.kernels, outputs.mask_feat, pos.pos_batch, pos.pos_level, pos.pos_cell
    )
    # With no positive, kernels and F_mask still get a (zero) gradient (DDP).
    untouched = sum(k.sum() for k in outputs.kernels) * 0 + outputs.mask_feat.sum() * 0
    mask = dice_loss(mask_logits, pos.mask_targets, eps=dice_eps) + untouched
    offset = offset_loss(
        outputs.offsets, targets.offsets.offsets, targets.offsets.weights, beta=offset_beta
    )
    losses = {
        "loss_center": center_weight * center,
        "loss_part": part_weight * part,
        "loss_mask": mask_weight * mask,
        "loss_offset": offset_weight * offset,
    }
    losses["loss"] = sum(losses.values())
    return losses
