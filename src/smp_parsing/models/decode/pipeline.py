"""Single-stage decoding of SMP outputs into per-person parsing maps (paper section 4.1): the
pipeline (humans, part scores, grouping, masks, matrix NMS, painting, resampling); the grouping
rules live in :mod:`.grouping`, the windowed painting and resampling in :mod:`.painting`.

Shapes convention: C_P part classes, S_c center/offset grid, L part levels, C_K kernel
length, h x w mask-feature size (input / 4), Hp x Wp padded input, H0 x W0 original image,
Q human peaks of an image, K part-candidate cells of an image, R selected parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from smp_parsing.models.decode.grouping import (
    GROUPINGS,
    group_parts_pointed_cell,
    group_parts_release,
)
from smp_parsing.models.decode.painting import (
    crop_windows,
    mask_statistics,
    paint_persons,
    person_windows,
    to_original,
)
from smp_parsing.models.layers.matrix_nms import matrix_nms
from smp_parsing.models.layers.packing import rank_in_group
from smp_parsing.models.layers.precision import full_precision
from smp_parsing.models.outputs import SMPOutputs


@full_precision
def decode_parsing(
    outputs: SMPOutputs,
    metas: list[dict],
    *,
    strides: Sequence[int],
    ctr_score_thr: float = 0.1,
    ctr_pool_size: int = 5,
    cate_score_thr: float = 0.3,
    cand_score_thr: float = 0.1,
    grouping: str = "release",
    nms_pre: int = 500,
    mask_thr: float = 0.5,
    update_thr: float = 0.1,
    nms_kernel: str = "gaussian",
    nms_sigma: float = 2.0,
    max_humans: int = 100,
    max_parts_per_human: int = 100,
    min_radius: float = 1.0,
    accept_window: int = 1,
    mask_stride: int = 4,
    return_intermediates: bool = False,
) -> list[dict]:
    """Decode a batch of raw outputs into person parsing maps at the original image size.

    Per image (all humans and parts at once):
      1. humans = local maxima of the sigmoid center map (``ctr_pool_size`` max-pool,
         equal values kept) with score > ``ctr_score_thr``;
      2. part score maps of all levels (sigmoid, 2x2 point NMS) and kernels resized to
         S_c x S_c (nearest, so a candidate's score and kernel come from the same cell);
      3. each human points at its part centres ``cell - offset_p`` and takes at most one
         part per class (``grouping="release"``, the authors' rule, spec Inference step 3):
         the candidates are the cells of all levels with a score above
         ``cand_score_thr``; for class p the candidate of class p maximising
         ``score * exp(-d^2 / r^2)`` is kept, d the Manhattan distance in cells to the
         pointed centre clamped into the grid, r half the geometric mean of the extent of
         the box around the human's C_P pointed centres (at least ``min_radius``); the part
         is accepted when that weighted score exceeds ``cate_score_thr`` and the weighted
         score is its score. ``grouping="pointed_cell"`` (the previous rule of this
         implementation, not the release's) accepts class p on a level only when that
         level's score at the pointed cell exceeds ``cate_score_thr`` (with
         ``accept_window`` > 1: the best score in the window around it), then keeps per
         (level, class) the candidate above ``cate_score_thr`` with the highest
         ``score * exp(-d^2 / r^2)``, r the spread of the accepted pointed centres. Either
         way at most ``nms_pre`` parts per human (highest weighted scores) go on;
      4. masks from the kernels (> ``mask_thr``), area > level stride, maskness rescoring,
         matrix NMS among same-class parts of a human (with ``pointed_cell`` one part per
         level and class survives step 3: duplicates across levels are decayed here), keep >=
         ``update_thr``, at most ``max_parts_per_human`` per human; parts painted in
         ascending score into one map per human at mask resolution (a cell no part covers
         takes the label of its best covered neighbour); human score = its center score;
         humans without any part are dropped;
      5. maps upsampled to the padded input, cropped to ``meta["img_size"]`` and resized to
         ``meta["ori_size"]``, as one resampling (labels nearest, foreground = max part
         probability bilinear, then thresholded), over a window around each person.

    Args:
        outputs: raw head outputs of a batch of B images.
        metas: B dicts with ``img_size`` (h, w) and ``ori_size`` (H0, W0).
        strides: L level strides used by the area filter (8, 8, 16, 32, 32).
        ctr_score_thr: human-center threshold (0.1).
        ctr_pool_size: max-pool window of the center peak search (5).
        cate_score_thr: part threshold theta_p (0.3).
        cand_score_thr: min score of a part candidate cell for ``grouping="release"``
            (the release's ``score_thr``, 0.1).
        grouping: ``"release"`` (default) or ``"pointed_cell"``, see step 3.
        nms_pre: max parts per human entering the mask stage (the release caps per human).
        mask_thr: mask binarisation threshold (0.5).
        update_thr: min part score after matrix NMS (0.1).
        nms_kernel: matrix NMS kernel (``"gaussian"``).
        nms_sigma: matrix NMS sigma (2.0).
        max_humans: max humans per image (highest center scores).
        max_parts_per_human: max parts kept per human.
        min_radius: lower bound of the distance-weighting radius r, in grid cells.
        accept_window: ``grouping="pointed_cell"`` only: odd side of the window, in
            center-grid cells, whose best part score decides the acceptance test (1 = the
            pointed cell only).
        mask_stride: stride of F_mask on the batch's padded input tensor (4). The images of a
            batch are padded to the batch's largest size, so an image's own ``pad_size``
            (meta) is not the F_mask geometry: the batch tensor is.
        return_intermediates: also return the maps a visualiser needs.

    Returns:
        Per image a dict: ``parsing`` ``(P, H0, W0)`` uint8, ``scores`` ``(P,)`` float; with
        intermediates also ``center_heatmap`` ``(S_c, S_c)``, ``centers`` ``(P, 2)`` grid
        ``(x, y)``, ``part_centers`` ``(P, C_P, 2)`` pointed grid positions ``(x, y)``,
        ``offsets`` ``(C_P, 2, S_c, S_c)``.
    """
    if len(metas) != outputs.center.shape[0]:
        raise ValueError(
            f"decode_parsing: {len(metas)} metas for a batch of {outputs.center.shape[0]}"
        )
    for b, meta in enumerate(metas):
        missing = {"img_size", "ori_size"} - set(meta)
        if missing:
            raise ValueError(f"decode_parsing: meta of image {b} lacks {sorted(missing)}")
    if len(strides) != len(outputs.cate):
        raise ValueError(f"decode_parsing: {len(strides)} strides for {len(outputs.cate)} levels")
    if grouping not in GROUPINGS:
        raise ValueError(f"decode_parsing: grouping must be one of {GROUPINGS}, got {grouping!r}")
    if accept_window < 1 or accept_window % 2 == 0:
        raise ValueError(f"decode_parsing: accept_window must be odd and >= 1, got {accept_window}")
    grid = outputs.center.shape[-1]
    # Batch-wide dense maps (cheap, S x S): NaN becomes 0 so it can never pass a threshold.
    center = _sigmoid(outputs.center[:, 0])  # (B, S, S)
    pooled = F.max_pool2d(center, ctr_pool_size, stride=1, padding=ctr_pool_size // 2)
    peaks = (pooled == center) & (center > ctr_score_thr)
    part_scores = torch.stack(
        [
            F.interpolate(_point_nms(_sigmoid(c)), size=(grid, grid), mode="nearest-exact")
            for c in outputs.cate
        ],
        1,
    )  # (B, L, C_P, S, S)
    accept_scores = part_scores
    if grouping == "pointed_cell" and accept_window > 1:
        accept_scores = F.max_pool2d(
            part_scores.flatten(1, 2), accept_window, stride=1, padding=accept_window // 2
        ).view_as(part_scores)
    settings = _DecodeSettings(
        strides=tuple(strides),
        part_grids=tuple(c.shape[-1] for c in outputs.cate),
        cate_score_thr=cate_score_thr,
        cand_score_thr=cand_score_thr,
        grouping=grouping,
        nms_pre=nms_pre,
        mask_thr=mask_thr,
        update_thr=update_thr,
        nms_kernel=nms_kernel,
        nms_sigma=nms_sigma,
        max_humans=max_humans,
        max_parts_per_human=max_parts_per_human,
        min_radius=min_radius,
        mask_stride=mask_stride,
    )
    results = []
    # A loop over the images of the batch only: every human and part of an image is
    # decoded at once.
    for b, meta in enumerate(metas):
        result = _decode_image(
            peaks=peaks[b],
            center=center[b],
            offsets=outputs.offsets[b].float(),
            part_scores=part_scores[b],
            accept_scores=accept_scores[b],
            kernels=[k[b].float() for k in outputs.kernels],
            mask_feat=outputs.mask_feat[b].float(),
            meta=meta,
            cfg=settings,
        )
        if return_intermediates:
            result["center_heatmap"] = center[b]
            result["offsets"] = outputs.offsets[b].float()
        else:
            del result["centers"], result["part_centers"]
        results.append(result)
    return results


@dataclass(frozen=True)
class _DecodeSettings:
    """The thresholds of :func:`decode_parsing` for one image (see its docstring)."""

    strides: tuple[int, ...]
    part_grids: tuple[int, ...]
    cate_score_thr: float
    cand_score_thr: float
    grouping: str
    nms_pre: int
    mask_thr: float
    update_thr: float
    nms_kernel: str
    nms_sigma: float
    max_humans: int
    max_parts_per_human: int
    min_radius: float
    mask_stride: int


def _sigmoid(logits: Tensor) -> Tensor:
    """Sigmoid in float32 with NaN mapped to 0 (a NaN logit never detects anything)."""
    return torch.nan_to_num(torch.sigmoid(logits.float()), nan=0.0)


def _point_nms(scores: Tensor) -> Tensor:
    """Keep the cells equal to the max of their 2 x 2 neighbourhood (SOLO point NMS).

    Args:
        scores: ``(B, C, S, S)`` probabilities.

    Returns:
        ``(B, C, S, S)`` with non-maximal cells zeroed.
    """
    hmax = F.max_pool2d(scores, 2, stride=1, padding=1)[..., :-1, :-1]
    return scores * (hmax == scores)


def _decode_image(
    *,
    peaks: Tensor,
    center: Tensor,
    offsets: Tensor,
    part_scores: Tensor,
    accept_scores: Tensor,
    kernels: list[Tensor],
    mask_feat: Tensor,
    meta: dict,
    cfg: _DecodeSettings,
) -> dict:
    """Decode one image (all humans and parts at once).

    Args:
        peaks: ``(S, S)`` bool human peaks.
        center: ``(S, S)`` center probabilities.
        offsets: ``(C_P, 2, S, S)`` offsets.
        part_scores: ``(L, C_P, S, S)`` part probabilities on the center grid.
        accept_scores: ``(L, C_P, S, S)`` the scores of the acceptance test (``part_scores``
            or their ``accept_window`` max-pool).
        kernels: per level ``(C_K, S_l, S_l)``.
        mask_feat: ``(C_K, h, w)``.
        meta: the image meta (``img_size``, ``ori_size``).
        cfg: thresholds.

    Returns:
        ``parsing``, ``scores``, ``centers``, ``part_centers`` (see :func:`decode_parsing`).
    """
    device = center.device
    levels, num_part_classes, grid, _ = part_scores.shape

    # 1. Humans: peak cells, highest center scores first. A stable sort keeps tied scores in
    # raster order (nonzero's), so the persons come in one order on every device: CUDA's
    # unstable sort ordered a well-trained network's saturated (tied) scores differently.
    hy, hx = peaks.nonzero(as_tuple=True)
    human_scores = center[hy, hx]
    top = torch.argsort(human_scores, descending=True, stable=True)[: cfg.max_humans]
    hy, hx, human_scores = hy[top], hx[top], human_scores[top]
    num_humans = hy.numel()

    # 3. Pointed part centres (Q, C_P, 2) = cell - offset, then at most one part per
    # (human, class) [release] or per (human, level, class) [pointed_cell].
    human_xy = torch.stack([hx, hy], 1).float()
    pointed = human_xy[:, None, :] - offsets[:, :, hy, hx].permute(2, 0, 1)
    finite = torch.isfinite(pointed).all(2)  # (Q, C_P)
    if cfg.grouping == "release":
        selected = group_parts_release(
            pointed,
            finite,
            part_scores,
            cand_score_thr=cfg.cand_score_thr,
            cate_score_thr=cfg.cate_score_thr,
            min_radius=cfg.min_radius,
        )
    else:
        selected = group_parts_pointed_cell(
            pointed,
            finite,
            part_scores,
            accept_scores,
            cate_score_thr=cfg.cate_score_thr,
            min_radius=cfg.min_radius,
        )
    part_human, part_level, part_cls, cell_y, cell_x, part_score = selected

    # At most nms_pre parts per human (the release's cap, per human: a per-image cap
    # drops true parts in a crowded image) and none under update_thr: maskness and the
    # NMS decay are <= 1, so such a part cannot come back and its mask is never computed.
    rank = rank_in_group(part_score, part_human, num_humans)
    alive = ((rank < cfg.nms_pre) & (part_score >= cfg.update_thr)).nonzero(as_tuple=True)[0]
    part_human, part_level, part_cls = part_human[alive], part_level[alive], part_cls[alive]
    cell_y, cell_x, part_score = cell_y[alive], cell_x[alive], part_score[alive]

    # 4. Masks from the kernels of the chosen cells (same nearest-exact map as the scores).
    # Per-level constants from Python ints (no constant tensor copied to the device), and
    # one gather from the levels' kernels side by side (no boolean mask per level).
    level_grid = torch.zeros_like(part_level)
    level_start = torch.zeros_like(part_level)
    level_stride = torch.zeros_like(part_level)
    start = 0
    for level, (level_size, stride) in enumerate(zip(cfg.part_grids, cfg.strides)):
        on_level = part_level == level
        level_grid = torch.where(on_level, level_size, level_grid)
        level_start = torch.where(on_level, start, level_start)
        level_stride = torch.where(on_level, stride, level_stride)
        start += level_size**2
    src_y = ((cell_y + 0.5) * level_grid / grid).floor().long().clamp(max=level_grid - 1)
    src_x = ((cell_x + 0.5) * level_grid / grid).floor().long().clamp(max=level_grid - 1)
    column = level_start + src_y * level_grid + src_x
    all_kernels = torch.cat([k.flatten(1) for k in kernels], 1)  # (C_K, sum_l S_l^2)
    part_kernels = all_kernels[:, column].T  # (R, C_K)
    mask_h, mask_w = mask_feat.shape[-2:]
    # The one dense product of the decode: every selected part's mask over all of F_mask
    # (SOLOv2's dynamic convolution). Everything after it works on the covered pixels
    # (a sparse list) or inside the persons' windows, so its cost follows the persons'
    # sizes, not parts x image.
    soft = (part_kernels @ mask_feat.flatten(1)).sigmoid_()  # (R, h * w); NaN stays NaN
    area, maskness, boxes = mask_statistics(soft, cfg.mask_thr, mask_w)
    rows = (area > level_stride).nonzero(as_tuple=True)[0]  # area filter
    part_human, part_cls = part_human[rows], part_cls[rows]
    part_score = part_score[rows] * maskness[rows]  # maskness rescoring

    # Every remaining part of a human is covered only inside the human's window, so the
    # masks are cut to it: IoUs and painting on the windows are those of the full masks.
    origin, window = person_windows(boxes[rows], part_human, num_humans, (mask_h, mask_w))
    masks = crop_windows(soft.view(-1, mask_h, mask_w), rows, origin[part_human], window)
    del soft

    # Matrix NMS among the same-class parts of one human: the label is (human, class).
    part_score = matrix_nms(
        masks > cfg.mask_thr,
        part_human * num_part_classes + part_cls,
        part_score,
        kernel=cfg.nms_kernel,
        sigma=cfg.nms_sigma,
        mask_areas=area[rows],
    )
    # Score >= update_thr and among the max_parts_per_human best of its human (one
    # compaction); then ascending score inside each human (the painting order).
    kept = part_score >= cfg.update_thr
    rank = rank_in_group(torch.where(kept, part_score, -1.0), part_human, num_humans)
    keep = (kept & (rank < cfg.max_parts_per_human)).nonzero(as_tuple=True)[0]
    part_human, part_cls, part_score = part_human[keep], part_cls[keep], part_score[keep]
    order = torch.argsort(part_score, stable=True)
    order = order[torch.argsort(part_human[order], stable=True)]
    keep, part_human, part_cls = keep[order], part_human[order], part_cls[order]

    # 4'. Paint at F_mask resolution, inside the windows.
    label_map, foreground = paint_persons(
        masks[keep], part_human, part_cls + 1, num_humans, cfg.mask_thr
    )
    # humans with a part: one compaction, then integer indexing
    has_parts = torch.zeros(num_humans, dtype=torch.bool, device=device)
    has_parts = has_parts.index_fill_(0, part_human, True).nonzero(as_tuple=True)[0]
    parsing = to_original(
        label_map[has_parts],
        foreground[has_parts],
        origin[has_parts],
        (mask_h, mask_w),
        meta,
        cfg.mask_thr,
        cfg.mask_stride,
    )
    return {
        "parsing": parsing,
        "scores": human_scores[has_parts],
        "centers": human_xy[has_parts],
        "part_centers": pointed[has_parts],
    }
