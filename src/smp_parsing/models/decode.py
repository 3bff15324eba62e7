"""Single-stage decoding of SMP outputs into per-person parsing maps (paper section 4.1).

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

from smp_parsing.models.layers.matrix_nms import matrix_nms
from smp_parsing.models.layers.packing import pack_by_group
from smp_parsing.models.layers.precision import full_precision
from smp_parsing.models.outputs import SMPOutputs

GROUPINGS = ("release", "pointed_cell")


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

    # 1. Humans: peak cells, highest center scores first.
    hy, hx = peaks.nonzero(as_tuple=True)
    human_scores = center[hy, hx]
    top = torch.argsort(human_scores, descending=True)[: cfg.max_humans]
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
        # Acceptance test on every level: score of class p at the pointed cell.
        pointed_cell = torch.nan_to_num(pointed).round().clamp(0, grid - 1).long()
        cls = torch.arange(num_part_classes, device=device)
        pointed_score = accept_scores[:, cls, pointed_cell[..., 1], pointed_cell[..., 0]]
        accepted = (pointed_score > cfg.cate_score_thr) & finite  # (L, Q, C_P)
        selected = select_parts(
            pointed,
            accepted,
            part_scores,
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
    parsing = _to_original(
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


def mask_statistics(soft: Tensor, mask_thr: float, mask_w: int) -> tuple[Tensor, Tensor, Tensor]:
    """Area, maskness and covered box of every part mask, from its covered pixels.

    The covered pixels (probability > ``mask_thr``) are a small fraction of R x h x w, so
    they are listed once and every statistic is a reduction over that list.

    Args:
        soft: ``(R, h * w)`` part probabilities (NaN is never covered).
        mask_thr: coverage threshold.
        mask_w: w, the row length of F_mask.

    Returns:
        ``area`` ``(R,)`` float covered pixels; ``maskness`` ``(R,)`` mean probability over
        them (0 when none); ``boxes`` ``(R, 4)`` long ``(y_min, x_min, y_max, x_max)`` of the
        covered pixels, inclusive (``(h * w, h * w, -1, -1)`` when none).
    """
    num, size = soft.shape
    flat = (soft > mask_thr).view(-1).nonzero().squeeze(1)
    row = torch.div(flat, size, rounding_mode="floor")
    pixel = flat - row * size
    # index_add, not bincount (whose CUDA kernel reads the range on the host)
    area = soft.new_zeros(num).index_add_(0, row, torch.ones_like(row, dtype=soft.dtype))
    total = soft.new_zeros(num).index_add_(0, row, soft.view(-1)[flat])
    maskness = total / area.clamp(min=1)
    y = torch.div(pixel, mask_w, rounding_mode="floor")
    x = pixel - y * mask_w
    # one column at a time: a scatter over an expanded (E, 2) index is several times slower
    boxes = torch.stack(
        [
            torch.full((num,), init, dtype=torch.long, device=soft.device).scatter_reduce_(
                0, row, coord, reduce
            )
            for coord, init, reduce in (
                (y, size, "amin"),
                (x, size, "amin"),
                (y, -1, "amax"),
                (x, -1, "amax"),
            )
        ],
        1,
    )
    return area, maskness, boxes


def person_windows(
    boxes: Tensor, human: Tensor, num_humans: int, mask_size: tuple[int, int]
) -> tuple[Tensor, tuple[int, int]]:
    """One same-size F_mask window per human holding its parts' boxes grown by one cell.

    One cell of margin holds everything the painting and the resampling read next to a
    covered cell (3 x 3 label growing, bilinear taps). The size is the largest human's,
    and each window is shifted to lie inside F_mask.

    Args:
        boxes: ``(R, 4)`` ``(y_min, x_min, y_max, x_max)`` inclusive covered box of each part.
        human: ``(R,)`` human of each part.
        num_humans: Q.
        mask_size: ``(h, w)``.

    Returns:
        ``origin`` ``(Q, 2)`` long top-left ``(y, x)`` cell of each window and the window
        size ``(win_h, win_w)`` (at least 1 x 1; a human without parts gets any window).
    """
    mask_h, mask_w = mask_size
    limit = torch.full((2,), mask_h, dtype=torch.long, device=boxes.device)
    limit[1] = mask_w  # filled on the device: no host-to-device copy
    lows = torch.full((num_humans, 2), mask_h + mask_w, dtype=torch.long, device=boxes.device)
    lows.scatter_reduce_(0, human[:, None].expand(-1, 2), boxes[:, :2], "amin")
    highs = torch.full((num_humans, 2), -1, dtype=torch.long, device=boxes.device)
    highs.scatter_reduce_(0, human[:, None].expand(-1, 2), boxes[:, 2:], "amax")
    lo = (lows - 1).clamp(min=0)
    hi = torch.minimum(highs + 2, limit)
    extent = (hi - lo).clamp(min=1).amax(0) if human.numel() else torch.ones_like(limit)
    win_h, win_w = extent.tolist()  # one read of the (2,) size, not two
    window = (int(win_h), int(win_w))
    origin = torch.minimum(lo, limit - extent).clamp(min=0)
    return origin, window


def crop_windows(masks: Tensor, rows: Tensor, origin: Tensor, window: tuple[int, int]) -> Tensor:
    """The ``window``-sized crop of each selected mask at its origin.

    Args:
        masks: ``(R, h, w)``.
        rows: ``(R',)`` rows to crop.
        origin: ``(R', 2)`` top-left ``(y, x)`` of each crop (inside ``(h, w)``).
        window: ``(win_h, win_w)``.

    Returns:
        ``(R', win_h, win_w)``.
    """
    _, mask_h, mask_w = masks.shape
    win_h, win_w = window
    if (win_h, win_w) == (mask_h, mask_w):
        return masks[rows]  # whole masks (origins are 0): a row gather, no pixel index
    ys = origin[:, :1] + torch.arange(win_h, device=masks.device)  # (R', win_h)
    xs = origin[:, 1:] + torch.arange(win_w, device=masks.device)  # (R', win_w)
    # One flat index (a single gather) rather than three broadcast ones.
    flat = (rows[:, None, None] * mask_h + ys[:, :, None]) * mask_w + xs[:, None, :]
    return masks.reshape(-1)[flat]


def paint_persons(
    masks: Tensor,
    human: Tensor,
    labels: Tensor,
    num_humans: int,
    mask_thr: float,
) -> tuple[Tensor, Tensor]:
    """One label map per human from its parts' soft masks, all humans at once.

    Per human and pixel, the label of the last (highest-scored) of its parts whose
    probability exceeds ``mask_thr``; a pixel no part covers but next to a covered one
    (3 x 3) takes the label of the best covered neighbour, since the bilinear foreground
    may grow into it when upsampled. The foreground is the max part probability.

    Args:
        masks: ``(R, h, w)`` part probabilities (each part in its human's window), grouped
            by human in ascending score.
        human: ``(R,)`` human of each part.
        labels: ``(R,)`` part class (1..C_P) of each part.
        num_humans: Q.
        mask_thr: coverage threshold.

    Returns:
        ``label_map`` ``(Q, h, w)`` long and ``foreground`` ``(Q, h, w)`` float (0 for a
        human without parts).
    """
    _, mask_h, mask_w = masks.shape
    device = masks.device
    if human.numel() == 0:
        return (
            torch.zeros(num_humans, mask_h, mask_w, dtype=torch.long, device=device),
            masks.new_zeros(num_humans, mask_h, mask_w),
        )
    # (Q, K, h * w), zero (never covered) where a human has fewer than K parts
    packed, slot = pack_by_group(masks.flatten(1), human, num_groups=num_humans)
    k_max = packed.shape[1]
    label_of = torch.zeros(num_humans, k_max + 1, dtype=torch.long, device=device)
    label_of[slot[:, 0], slot[:, 1] + 1] = labels  # column 0: background
    foreground = packed.amax(1)
    rank = torch.arange(1, k_max + 1, device=device, dtype=packed.dtype).view(1, -1, 1)
    winner = torch.where(packed > mask_thr, rank, 0.0).amax(1)  # 0 = not covered
    grown = F.max_pool2d(winner.view(num_humans, 1, mask_h, mask_w), 3, stride=1, padding=1)
    winner = torch.where(winner > 0, winner, grown.view(num_humans, mask_h * mask_w))
    label_map = label_of.gather(1, winner.long())
    return label_map.view(num_humans, mask_h, mask_w), foreground.view(num_humans, mask_h, mask_w)


def select_parts(
    pointed: Tensor,
    accepted: Tensor,
    part_scores: Tensor,
    *,
    cate_score_thr: float,
    min_radius: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``grouping="pointed_cell"``: best candidate of every accepted (human, level, class).

    Candidates are the cells of all levels and classes with a score above
    ``cate_score_thr``. For human q and a candidate of class p on
    level l (valid when ``accepted[l, q, p]``), the weighted score is
    ``score * exp(-d^2 / r_q^2)`` with d the Manhattan distance from the candidate cell to
    the human's pointed centre of class p and r_q the spread (RMS distance to their mean)
    of the human's accepted pointed centres, at least ``min_radius``. Each (q, l, p) keeps
    its highest weighted candidate (ties: the higher-scored candidate, then the lower
    flat index (level, class, y, x)).

    Args:
        pointed: ``(Q, C_P, 2)`` pointed part centres ``(x, y)`` in grid cells.
        accepted: ``(L, Q, C_P)`` bool, class p accepted for human q on level l.
        part_scores: ``(L, C_P, S, S)`` part probabilities on the center grid.
        cate_score_thr: candidate threshold.
        min_radius: lower bound of r.

    Returns:
        ``human``, ``level``, ``cls`` (0-based), ``cell_y``, ``cell_x`` of the R chosen
        parts (long ``(R,)``) and their weighted ``score`` ``(R,)``, ordered by
        (human, level, class).
    """
    device = part_scores.device
    levels, num_part_classes, grid, _ = part_scores.shape
    num_humans = pointed.shape[0]
    # Radius of the distance weighting: spread of the human's accepted pointed centres.
    any_level = accepted.any(0).float()  # (Q, C_P)
    count = any_level.sum(1, keepdim=True).clamp(min=1)
    safe_pointed = torch.nan_to_num(pointed)
    mean = (safe_pointed * any_level[..., None]).sum(1, keepdim=True) / count[..., None]
    spread = (((safe_pointed - mean) ** 2).sum(2) * any_level).sum(1) / count[:, 0]
    radius = spread.sqrt().clamp(min=min_radius)  # (Q,) guarded: never 0

    # Part candidate cells: score > threshold on any level (no per-image cap: the decode
    # caps the chosen parts per human).
    flat_scores = part_scores.flatten()
    cand = (flat_scores > cate_score_thr).nonzero(as_tuple=True)[0]
    cand_score = flat_scores[cand]
    cand_level = cand // (num_part_classes * grid * grid)
    cand_cls = cand // (grid * grid) % num_part_classes
    cand_y = cand // grid % grid
    cand_x = cand % grid
    num_cand = cand.numel()

    # Every (human, candidate) pair at once: the candidate's distance to the human's
    # pointed centre of its class, weighted score, validity (class accepted on its level).
    target_xy = safe_pointed[:, cand_cls]  # (Q, K, 2)
    dist = (cand_x[None] - target_xy[..., 0]).abs() + (cand_y[None] - target_xy[..., 1]).abs()
    weighted = cand_score[None] * torch.exp(-(dist**2) / radius[:, None] ** 2)  # (Q, K)
    valid = accepted[
        cand_level[None], torch.arange(num_humans, device=device)[:, None], cand_cls[None]
    ]
    weighted = torch.where(valid, weighted, -1.0)

    # Best candidate of each (human, level, class) group: max of the weighted scores by
    # scatter, then the first candidate reaching it.
    num_groups = num_humans * levels * num_part_classes
    group = (
        torch.arange(num_humans, device=device)[:, None] * levels + cand_level[None]
    ) * num_part_classes + cand_cls[None]  # (Q, K)
    best = torch.full((num_groups,), -1.0, device=device)
    best.scatter_reduce_(0, group.flatten(), weighted.flatten(), "amax")
    is_best = valid & (weighted == best[group])
    cand_idx = torch.arange(num_cand, device=device).expand_as(group)
    first = torch.full((num_groups,), num_cand, dtype=torch.long, device=device)
    first.scatter_reduce_(
        0, group.flatten(), torch.where(is_best, cand_idx, num_cand).flatten(), "amin"
    )
    chosen_group = (first < num_cand).nonzero(as_tuple=True)[0]
    chosen = first[chosen_group]  # (R,) candidate index
    part_human = chosen_group // (levels * num_part_classes)
    part_level = cand_level[chosen]
    part_cls = cand_cls[chosen]
    part_score = best[chosen_group]
    return part_human, part_level, part_cls, cand_y[chosen], cand_x[chosen], part_score


def group_parts_release(
    pointed: Tensor,
    finite: Tensor,
    part_scores: Tensor,
    *,
    cand_score_thr: float,
    cate_score_thr: float,
    min_radius: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The release's part grouping (spec Inference step 3): one part per (human, class).

    Candidates are the cells (level l, class p, y, x) with a score above
    ``cand_score_thr``. For human q, r_q is half the geometric mean of the width and
    height of the box around its finite pointed centres (at least ``min_radius``: the
    release divides by r = 0 when the centres line up). Each candidate of class p gets
    ``score * exp(-d^2 / r_q^2)``, d the Manhattan distance in cells from the candidate
    to q's pointed centre of class p clamped into the grid and rounded to a cell; the
    best candidate of (q, p) is the part when that weighted score exceeds
    ``cate_score_thr`` (ties: the first cell in (y, x) order, then the lowest level). A
    class whose pointed centre is not finite, or that has no candidate, gets no part (the
    release's argmax would duplicate candidate 0 there).

    The weight depends on the cell, not on the level, so each cell's candidate is its
    best level: at most C_P x S x S candidates whatever the thresholds, and every
    (human, candidate) pair is weighted at once (``(Q, K)``, K the candidate cells).

    Args:
        pointed: ``(Q, C_P, 2)`` pointed part centres ``(x, y)`` in grid cells.
        finite: ``(Q, C_P)`` bool, the pointed centre is finite.
        part_scores: ``(L, C_P, S, S)`` part probabilities on the center grid.
        cand_score_thr: candidate threshold (0.1).
        cate_score_thr: acceptance threshold of the weighted score (theta_p, 0.3).
        min_radius: lower bound of r, in cells (1).

    Returns:
        ``human``, ``level``, ``cls`` (0-based), ``cell_y``, ``cell_x`` of the R chosen
        parts (long ``(R,)``) and their weighted ``score`` ``(R,)``, ordered by
        (human, class).
    """
    device = part_scores.device
    _, num_part_classes, grid, _ = part_scores.shape
    num_humans = pointed.shape[0]
    # Radius: extent of the box of the human's (finite) pointed centres; none -> 0 -> guard.
    lo = torch.where(finite[..., None], pointed, float("inf")).amin(1)  # (Q, 2)
    hi = torch.where(finite[..., None], pointed, float("-inf")).amax(1)
    extent = (hi - lo).clamp(min=0)  # -inf (no finite centre) -> 0
    radius = (0.5 * (extent[:, 0] * extent[:, 1]).sqrt()).clamp(min=min_radius)  # (Q,)
    target = torch.nan_to_num(pointed).clamp(0, grid - 1).round()  # (Q, C_P, 2) cells

    cell_score, cell_level = part_scores.max(0)  # (C_P, S, S): each cell's best level
    cand = (cell_score.flatten() > cand_score_thr).nonzero(as_tuple=True)[0]
    cand_score = cell_score.flatten()[cand]
    cand_cls = torch.div(cand, grid * grid, rounding_mode="floor")
    cand_y = torch.div(cand, grid, rounding_mode="floor") % grid
    cand_x = cand % grid
    num_cand = cand.numel()

    # Every (human, candidate) pair: distance to the human's pointed centre of the
    # candidate's class, weighted score; -1 where that centre is not finite.
    target_xy = target[:, cand_cls]  # (Q, K, 2)
    dist = (cand_x - target_xy[..., 0]).abs() + (cand_y - target_xy[..., 1]).abs()
    weighted = cand_score * torch.exp(-(dist**2) / radius[:, None] ** 2)  # (Q, K)
    weighted = torch.where(finite[:, cand_cls], weighted, -1.0)

    # Best candidate of each (human, class): max by scatter, then the first reaching it
    # (candidates are in (class, y, x) order).
    num_groups = num_humans * num_part_classes
    group = torch.arange(num_humans, device=device)[:, None] * num_part_classes + cand_cls
    best = torch.full((num_groups,), -1.0, device=device)
    best.scatter_reduce_(0, group.flatten(), weighted.flatten(), "amax")
    is_best = (weighted >= 0) & (weighted == best[group])
    cand_idx = torch.arange(num_cand, device=device).expand_as(group)
    first = torch.full((num_groups,), num_cand, dtype=torch.long, device=device)
    first.scatter_reduce_(
        0, group.flatten(), torch.where(is_best, cand_idx, num_cand).flatten(), "amin"
    )
    chosen_group = ((first < num_cand) & (best > cate_score_thr)).nonzero(as_tuple=True)[0]
    chosen = first[chosen_group]  # (R,) candidate index
    cell_y, cell_x, cls = cand_y[chosen], cand_x[chosen], cand_cls[chosen]
    return (
        torch.div(chosen_group, num_part_classes, rounding_mode="floor"),
        cell_level[cls, cell_y, cell_x],
        cls,
        cell_y,
        cell_x,
        best[chosen_group],
    )


def rank_in_group(score: Tensor, group: Tensor, num_groups: int) -> Tensor:
    """Rank of every entry inside its group by descending score (0 = best; ties: first).

    Args:
        score: ``(R,)`` scores.
        group: ``(R,)`` long group ids in ``0..num_groups-1``.
        num_groups: G.

    Returns:
        ``(R,)`` long rank.
    """
    order = torch.argsort(score, descending=True, stable=True)
    order = order[torch.argsort(group[order], stable=True)]
    counts = torch.zeros(num_groups, dtype=torch.long, device=group.device)
    counts.index_add_(0, group, torch.ones_like(group))  # not bincount: no host read
    first = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device) - first[group[order]]
    return rank


def _to_original(
    label_map: Tensor,
    foreground: Tensor,
    origin: Tensor,
    mask_size: tuple[int, int],
    meta: dict,
    mask_thr: float,
    mask_stride: int,
) -> Tensor:
    """Person maps in F_mask windows -> the original image size.

    The three steps of the spec (upsample to the padded input, crop the padding, resize to
    the original size) are done as one resampling of the F_mask-resolution maps at the
    original pixels' positions: labels by nearest neighbour, the foreground probability
    bilinearly (as SOLO resizes soft masks, edge-clamped, half-pixel centres) and
    thresholded at ``mask_thr``. Only the output pixels whose samples can reach a covered
    cell are resampled (all persons at once, with the size of the largest): a sample
    above the threshold has a covered tap, so all its taps lie within one cell of the
    covered box, inside the person's window; the cost follows the persons' sizes, not
    P x H0 x W0.

    Args:
        label_map: ``(P, win_h, win_w)`` part class per cell of each person's window.
        foreground: ``(P, win_h, win_w)`` person foreground probability.
        origin: ``(P, 2)`` top-left ``(y, x)`` F_mask cell of each window.
        mask_size: ``(h, w)`` of F_mask.
        meta: ``img_size`` (resized content, top-left of the batch tensor), ``ori_size``.
        mask_thr: foreground threshold.
        mask_stride: F_mask stride on the batch tensor (its padded size = F_mask size x
            stride, whatever the image's own ``pad_size``).

    Returns:
        ``(P, H0, W0)`` uint8 person maps.
    """
    num, win_h, win_w = label_map.shape
    mask_h, mask_w = mask_size
    device = label_map.device
    img_h, img_w = (int(v) for v in meta["img_size"])
    ori_h, ori_w = (int(v) for v in meta["ori_size"])
    out = torch.zeros(num, ori_h, ori_w, dtype=torch.uint8, device=device)
    if num == 0:
        return out
    covered = foreground > mask_thr  # NaN compares False
    # Original pixel Y samples F_mask at the continuous coordinate (Y + 0.5) * scale.
    # (F_mask covers the batch tensor at 1 / mask_stride, whatever the image's own padding)
    scale_y = img_h / (ori_h * mask_stride)
    scale_x = img_w / (ori_w * mask_stride)
    y_lo, y_hi = _window(covered.any(2), origin[:, 0], mask_h, scale_y, ori_h)
    x_lo, x_hi = _window(covered.any(1), origin[:, 1], mask_w, scale_x, ori_w)
    extent_h, extent_w = torch.stack([(y_hi - y_lo).amax(), (x_hi - x_lo).amax()]).tolist()
    out_h, out_w = max(int(extent_h), 1), max(int(extent_w), 1)  # one host read for both
    # Same-size output windows for all persons, shifted inside the image where needed.
    y_lo = y_lo.clamp(max=ori_h - out_h)
    x_lo = x_lo.clamp(max=ori_w - out_w)
    ys = y_lo[:, None] + torch.arange(out_h, device=device)  # (P, out_h)
    xs = x_lo[:, None] + torch.arange(out_w, device=device)  # (P, out_w)
    # Continuous sampling coordinates in each person's F_mask window.
    src_y = (ys + 0.5) * scale_y - origin[:, :1]
    src_x = (xs + 0.5) * scale_x - origin[:, 1:]

    # Bilinear foreground: grid_sample with per-person grids (normalised, half-pixel).
    # Edge clamping at a window side inside F_mask only reaches taps that are all
    # uncovered, so it cannot change a thresholded sample.
    grid = torch.stack(
        [
            (2 * src_x / win_w - 1)[:, None, :].expand(num, out_h, out_w),
            (2 * src_y / win_h - 1)[:, :, None].expand(num, out_h, out_w),
        ],
        -1,
    ).to(foreground.dtype)
    fg = F.grid_sample(
        foreground[:, None], grid, mode="bilinear", padding_mode="border", align_corners=False
    )[:, 0]
    # Nearest labels: the F_mask cell containing the sampling point.
    cell_y = src_y.floor().long().clamp(0, win_h - 1)
    cell_x = src_x.floor().long().clamp(0, win_w - 1)
    person = torch.arange(num, device=device)[:, None, None]
    labels = label_map[person, cell_y[:, :, None], cell_x[:, None, :]].to(torch.uint8)
    window = labels.masked_fill_(~(fg > mask_thr), 0)
    if (out_h, out_w) == (ori_h, ori_w):
        return window  # the windows are the whole image
    # Paste through one flat index (8 bytes per window pixel, not three broadcast indices).
    flat = (person * ori_h + ys[:, :, None]) * ori_w + xs[:, None, :]
    out.view(-1)[flat.view(-1)] = window.view(-1)
    return out


def _window(
    covered_lines: Tensor, origin: Tensor, length: int, scale: float, size: int
) -> tuple[Tensor, Tensor]:
    """Output pixel range ``[lo, hi)`` whose samples can touch a covered line +- 1 cell.

    Args:
        covered_lines: ``(P, L_win)`` bool, window rows (or columns) with a covered cell.
        origin: ``(P,)`` F_mask index of each window's first line.
        length: F_mask rows (or columns).
        scale: F_mask units per output pixel.
        size: output length (H0 or W0).

    Returns:
        ``lo``, ``hi`` ``(P,)`` long, empty (``lo == hi``) for a person with no cell.
    """
    win = covered_lines.shape[1]
    any_line = covered_lines.any(1)
    first = origin + covered_lines.to(torch.uint8).argmax(1)
    last = origin + win - 1 - covered_lines.flip(1).to(torch.uint8).argmax(1)
    # Grow by one cell (bilinear support), convert [first - 1, last + 2) to pixels.
    lo = ((first - 1).clamp(min=0) / scale).floor().long().clamp(0, size)
    hi = ((last + 2).clamp(max=length) / scale).ceil().long().clamp(0, size)
    hi = torch.where(any_line, hi, lo)
    return lo, hi
