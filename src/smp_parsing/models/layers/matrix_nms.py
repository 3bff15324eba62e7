"""Matrix NMS (SOLOv2): soft, parallel suppression of overlapping masks of the same label.

Shapes convention: N candidate masks, D pixels per mask (any spatial size, flattened).
"""

from __future__ import annotations

import torch
from torch import Tensor

from smp_parsing.models.layers.packing import consecutive_ids, pack_by_group
from smp_parsing.models.layers.precision import full_precision


@full_precision
def matrix_nms(
    masks: Tensor,
    labels: Tensor,
    scores: Tensor,
    *,
    kernel: str = "gaussian",
    sigma: float = 2.0,
    mask_areas: Tensor | None = None,
) -> Tensor:
    """Decay the scores of masks overlapping a higher-scored mask of the same label.

    For candidate j, ``decay_j = min_i f(iou_ij) / f(comp_i)`` over the higher-scored
    candidates i of the same label, where ``comp_i`` is the largest IoU of i with a
    higher-scored same-label candidate and ``f(x) = exp(-sigma x^2)`` (gaussian) or
    ``1 - x`` (linear); candidates with no such i keep their score. IoUs are computed
    only for same-label pairs, so a label can also encode a group (e.g.
    ``human * C_P + class``).

    Args:
        masks: ``(N, ...)`` binary masks (bool or 0/1 float).
        labels: ``(N,)`` integer labels; only equal labels suppress each other.
        scores: ``(N,)`` scores (any order).
        kernel: ``"gaussian"`` or ``"linear"``.
        sigma: gaussian sharpness (2.0).
        mask_areas: ``(N,)`` mask areas, computed from ``masks`` when ``None``.

    Returns:
        ``(N,)`` decayed scores, in the input order.

    Raises:
        ValueError: unknown kernel or inconsistent lengths.
    """
    if kernel not in ("gaussian", "linear"):
        raise ValueError(f"matrix_nms: unknown kernel {kernel!r} (gaussian or linear)")
    num = scores.numel()
    if masks.shape[0] != num or labels.numel() != num:
        raise ValueError(
            f"matrix_nms: {masks.shape[0]} masks, {labels.numel()} labels, {num} scores"
        )
    if num == 0:
        return scores.clone()
    flat = masks.reshape(num, -1)
    areas = flat.sum(1) if mask_areas is None else mask_areas
    areas = areas.to(torch.float32)

    # Sort by score (descending), then group by label keeping that order inside a group.
    by_score = torch.argsort(scores, descending=True, stable=True)
    order = by_score[torch.argsort(labels[by_score], stable=True)]
    group = consecutive_ids(labels[order])  # no unique_consecutive: no host read
    counts = torch.zeros(num, dtype=torch.long, device=group.device)
    counts.index_add_(0, group, torch.ones_like(group))
    # A candidate alone with its label keeps its score: IoUs are computed only for the
    # groups of two or more, packed into (G, K_max, D).
    shared = (counts[group] > 1).nonzero(as_tuple=True)[0]
    coefficient = torch.ones(num, dtype=torch.float32, device=scores.device)
    members = order[shared]
    if members.numel():
        sub_group = consecutive_ids(group[shared])
        packed, slot = pack_by_group(flat[members].to(torch.float32), sub_group)  # (G, K, D)
        packed_area = areas.new_zeros(packed.shape[:2])
        packed_area[slot[:, 0], slot[:, 1]] = areas[members]
        inter = torch.bmm(packed, packed.transpose(1, 2))  # (G, K, K)
        union = packed_area[:, :, None] + packed_area[:, None, :] - inter
        # Upper triangle: row i is a higher-scored member of the group than column j.
        iou = (inter / union.clamp(min=1e-6)).triu(1)
        compensate = iou.amax(1)  # (G, K): largest IoU of i with a higher-scored member
        if kernel == "gaussian":
            decay = torch.exp(-sigma * iou**2) / torch.exp(-sigma * compensate**2).unsqueeze(2)
        else:
            decay = (1 - iou) / (1 - compensate).clamp(min=1e-6).unsqueeze(2)
        coefficient[shared] = decay.amin(1)[slot[:, 0], slot[:, 1]]
    out = torch.empty_like(scores)
    out[order] = scores[order] * coefficient.to(scores.dtype)
    return out
