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

from smp_parsing.models.matrix_nms import matrix_nms, pack_by_group
from smp_parsing.models.outputs import SMPOutputs


def decode_parsing(
    outputs: SMPOutputs,
    metas: list[dict],
    *,
    strides: Sequence[int],
    ctr_score_thr: float = 0.1,
    ctr_pool_size: int = 5,
    cate_score_thr: float = 0.3,
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
      3. each human points at its part centres ``cell - offset_p``; class p is accepted
         for the human on a level when that level's score at the pointed cell exceeds
         ``cate_score_thr`` (with ``accept_window`` > 1: the level's best score in the
         ``accept_window`` x ``accept_window`` cells around the pointed one, which forgives
         an offset that misses a small part's only cell by one); the part is the
         candidate cell of class p on that level (score > threshold, top ``nms_pre``)
         maximising ``score * exp(-d^2 / r^2)``,
         d the Manhattan distance to the pointed centre, r the spread of the human's
         pointed centres (at least ``min_radius``);
      4. masks from the kernels (> ``mask_thr``), area > level stride, maskness rescoring,
         matrix NMS among same-class parts of a human (one part per level and class can
         survive step 3, so duplicates across levels are decayed here), keep >=
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
        cate_score_thr: part threshold (0.3).
        nms_pre: max part-candidate cells per image.
        mask_thr: mask binarisation threshold (0.5).
        update_thr: min part score after matrix NMS (0.1).
        nms_kernel: matrix NMS kernel (``"gaussian"``).
        nms_sigma: matrix NMS sigma (2.0).
        max_humans: max humans per image (highest center scores).
        max_parts_per_human: max parts kept per human.
        min_radius: lower bound of the distance-weighting radius r, in grid cells.
        accept_window: odd side of the window, in center-grid cells, whose best part score
            decides the acceptance test (1 = the pointed cell only, as in the release).
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
    if accept_window > 1:
        accept_scores = F.max_pool2d(
            part_scores.flatten(1, 2), accept_window, stride=1, padding=accept_window // 2
        ).view_as(part_scores)
    settings = _DecodeSettings(
        strides=tuple(strides),
        part_grids=tuple(c.shape[-1] for c in outputs.cate),
        cate_score_thr=cate_score_thr,
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

    # 3. Pointed part centres (Q, C_P, 2) = cell - offset, and the acceptance test on
    # every level: score of class p at the pointed cell.
    human_xy = torch.stack([hx, hy], 1).float()
    pointed = human_xy[:, None, :] - offsets[:, :, hy, hx].permute(2, 0, 1)
    finite = torch.isfinite(pointed).all(2)  # (Q, C_P)
    pointed_cell = torch.nan_to_num(pointed).round().clamp(0, grid - 1).long()
    cls = torch.arange(num_part_classes, device=device)
    pointed_score = accept_scores[:, cls, pointed_cell[..., 1], pointed_cell[..., 0]]  # (L, Q, C_P)
    accepted = (pointed_score > cfg.cate_score_thr) & finite  # (L, Q, C_P)

    part_human, part_level, part_cls, cell_y, cell_x, part_score = select_parts(
        pointed,
        accepted,
        part_scores,
        cate_score_thr=cfg.cate_score_thr,
        nms_pre=cfg.nms_pre,
        min_radius=cfg.min_radius,
    )

    # Maskness and the NMS decay are <= 1: a part already under update_thr cannot come
    # back, so its mask is never computed.
    alive = (part_score >= cfg.update_thr).nonzero(as_tuple=True)[0]
    part_human, part_level, part_cls = part_human[alive], part_level[alive], part_cls[alive]
    cell_y, cell_x, part_score = cell_y[alive], cell_x[alive], part_score[alive]

    # 4. Masks from the kernels of the chosen cells (same nearest-exact map as the scores).
    part_grids = torch.tensor(cfg.part_grids, device=device)
    level_grid = part_grids[part_level]
    src_y = ((cell_y + 0.5) * level_grid / grid).floor().long().clamp(max=level_grid - 1)
    src_x = ((cell_x + 0.5) * level_grid / grid).floor().long().clamp(max=level_grid - 1)
    src_cell = src_y * level_grid + src_x
    part_kernels = kernels[0].new_zeros(part_level.numel(), kernels[0].shape[0])  # (R, C_K)
    for level, level_kernels in enumerate(kernels):  # the five levels, not the parts
        on_level = part_level == level
        part_kernels[on_level] = level_kernels.flatten(1)[:, src_cell[on_level]].T
    mask_h, mask_w = mask_feat.shape[-2:]
    num_sel = part_kernels.shape[0]
    # Row R is an extra all-background mask: the padding slots of the painting pack
    # below point at it. The masks are kept at F_mask resolution, and every filter and
    # reordering below works on row indices, so the (R, h * w) masks are never copied.
    padded_kernels = torch.cat([part_kernels, part_kernels.new_zeros(1, part_kernels.shape[1])])
    soft = padded_kernels @ mask_feat.flatten(1)  # (R + 1, h * w) logits
    soft[num_sel] = float("-inf")
    soft = soft.sigmoid_()  # NaN stays NaN and never passes a threshold
    # 0/1 float masks (float reductions are several times faster than bool ones on CPU):
    # first the probabilities above the threshold (maskness numerator), then their sign.
    binary = F.threshold(soft, cfg.mask_thr, 0.0)
    maskness = binary.sum(1)[:num_sel]
    area = binary.sign_().sum(1)[:num_sel]
    maskness = maskness / area.clamp(min=1)
    strides = torch.tensor(cfg.strides, device=device, dtype=area.dtype)
    rows = (area > strides[part_level]).nonzero(as_tuple=True)[0]  # area filter
    part_human, part_cls = part_human[rows], part_cls[rows]
    part_score = part_score[rows] * maskness[rows]  # maskness rescoring

    # Matrix NMS among the same-class parts of one human: the label is (human, class).
    part_score = matrix_nms(
        binary[rows],
        part_human * num_part_classes + part_cls,
        part_score,
        kernel=cfg.nms_kernel,
        sigma=cfg.nms_sigma,
        mask_areas=area[rows],
    )
    keep = part_score >= cfg.update_thr
    rows, part_human, part_cls, part_score = (
        rows[keep],
        part_human[keep],
        part_cls[keep],
        part_score[keep],
    )

    # Ascending score inside each human (the painting order), at most max_parts_per_human.
    order = torch.argsort(part_score, stable=True)
    order = order[torch.argsort(part_human[order], stable=True)]
    rows, part_human, part_cls = rows[order], part_human[order], part_cls[order]
    per_human = torch.bincount(part_human, minlength=num_humans)
    _, slot = pack_by_group(rows, part_human, num_groups=num_humans)
    keep = per_human[part_human] - 1 - slot[:, 1] < cfg.max_parts_per_human
    rows, part_human, part_cls = rows[keep], part_human[keep], part_cls[keep]

    # 4'. Paint at F_mask resolution (rows are in ascending score inside each human).
    label_map, foreground = paint_persons(
        soft, rows, part_human, part_cls + 1, num_humans, (mask_h, mask_w), cfg.mask_thr
    )

    has_parts = (
        per_human.new_zeros(num_humans).index_add_(0, part_human, torch.ones_like(part_human)) > 0
    )
    parsing = _to_original(
        label_map[has_parts], foreground[has_parts], meta, cfg.mask_thr, cfg.mask_stride
    )
    return {
        "parsing": parsing,
        "scores": human_scores[has_parts],
        "centers": human_xy[has_parts],
        "part_centers": pointed[has_parts],
    }


def paint_persons(
    masks: Tensor,
    rows: Tensor,
    human: Tensor,
    labels: Tensor,
    num_humans: int,
    mask_size: tuple[int, int],
    mask_thr: float,
) -> tuple[Tensor, Tensor]:
    """One label map per human from its parts' soft masks, all humans at once.

    Per human and pixel, the label of the last (highest-scored) of its parts whose
    probability exceeds ``mask_thr``; a pixel no part covers but next to a covered one
    (3 x 3) takes the label of the best covered neighbour, since the bilinear foreground
    may grow into it when upsampled. The foreground is the max part probability.

    Args:
        masks: ``(R + 1, h * w)`` part probabilities; the last row is all 0 (padding).
        rows: ``(R',)`` rows of the kept parts, grouped by human in ascending score.
        human: ``(R',)`` human of each kept part.
        labels: ``(R',)`` part class (1..C_P) of each kept part.
        num_humans: Q.
        mask_size: ``(h, w)``.
        mask_thr: coverage threshold.

    Returns:
        ``label_map`` ``(Q, h, w)`` long and ``foreground`` ``(Q, h, w)`` float.
    """
    device = masks.device
    mask_h, mask_w = mask_size
    padding_row = masks.shape[0] - 1
    _, slot = pack_by_group(rows, human, num_groups=num_humans)
    k_max = max(int(slot[:, 1].max()) + 1 if slot.numel() else 0, 1)
    source = torch.full((num_humans, k_max), padding_row, dtype=torch.long, device=device)
    source[slot[:, 0], slot[:, 1]] = rows
    label_of = torch.zeros(num_humans, k_max + 1, dtype=torch.long, device=device)
    label_of[slot[:, 0], slot[:, 1] + 1] = labels  # column 0: background
    # (advanced indexing: index_select is many times slower for long rows on CPU)
    packed = masks[source.flatten()].view(num_humans, k_max, mask_h * mask_w)  # (Q, K, hw)
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
    nms_pre: int,
    min_radius: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Best part candidate of every (human, level, class) with an accepted pointed centre.

    Candidates are the cells of all levels and classes with a score above
    ``cate_score_thr`` (the ``nms_pre`` best). For human q and a candidate of class p on
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
        nms_pre: max candidates.
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

    # Part candidate cells: score > threshold on any level, the nms_pre best.
    flat_scores = part_scores.flatten()
    cand = (flat_scores > cate_score_thr).nonzero(as_tuple=True)[0]
    cand = cand[torch.argsort(flat_scores[cand], descending=True, stable=True)[:nms_pre]]
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


def _to_original(
    label_map: Tensor, foreground: Tensor, meta: dict, mask_thr: float, mask_stride: int
) -> Tensor:
    """Person maps at F_mask resolution -> the original image size.

    The three steps of the spec (upsample to the padded input, crop the padding, resize to
    the original size) are done as one resampling of the F_mask-resolution maps at the
    original pixels' positions: labels by nearest neighbour, the foreground probability
    bilinearly (as SOLO resizes soft masks, edge-clamped, half-pixel centres) and
    thresholded at ``mask_thr``. Only a window around each person is resampled (all
    persons at once, with the size of the largest): outside the box of its covered cells
    grown by one cell the bilinear foreground cannot exceed the threshold, so the cost
    follows the persons' sizes, not P x H0 x W0.

    Args:
        label_map: ``(P, h, w)`` part class per pixel.
        foreground: ``(P, h, w)`` person foreground probability.
        meta: ``img_size`` (resized content, top-left of the batch tensor), ``ori_size``.
        mask_thr: foreground threshold.
        mask_stride: F_mask stride on the batch tensor (its padded size = F_mask size x
            stride, whatever the image's own ``pad_size``).

    Returns:
        ``(P, H0, W0)`` uint8 person maps.
    """
    num, mask_h, mask_w = label_map.shape
    device = label_map.device
    img_h, img_w = (int(v) for v in meta["img_size"])
    ori_h, ori_w = (int(v) for v in meta["ori_size"])
    out = torch.zeros(num, ori_h, ori_w, dtype=torch.uint8, device=device)
    covered = foreground > mask_thr  # NaN compares False
    if num == 0:
        return out
    # Original pixel Y samples F_mask at the continuous coordinate (Y + 0.5) * scale.
    # (F_mask covers the batch tensor at 1 / mask_stride, whatever the image's own padding)
    scale_y = img_h / (ori_h * mask_stride)
    scale_x = img_w / (ori_w * mask_stride)
    y_lo, y_hi = _window(covered.any(2), scale_y, ori_h)
    x_lo, x_hi = _window(covered.any(1), scale_x, ori_w)
    win_h = max(int((y_hi - y_lo).max()), 1)
    win_w = max(int((x_hi - x_lo).max()), 1)
    # Same-size windows for all persons, shifted inside the image where needed.
    y_lo = y_lo.clamp(max=ori_h - win_h)
    x_lo = x_lo.clamp(max=ori_w - win_w)
    ys = y_lo[:, None] + torch.arange(win_h, device=device)  # (P, win_h)
    xs = x_lo[:, None] + torch.arange(win_w, device=device)  # (P, win_w)
    src_y = (ys + 0.5) * scale_y  # continuous F_mask coordinates
    src_x = (xs + 0.5) * scale_x

    # Bilinear foreground: grid_sample with per-person grids (normalised, half-pixel).
    grid = torch.stack(
        [
            (2 * src_x / mask_w - 1)[:, None, :].expand(num, win_h, win_w),
            (2 * src_y / mask_h - 1)[:, :, None].expand(num, win_h, win_w),
        ],
        -1,
    ).to(foreground.dtype)
    fg = F.grid_sample(
        foreground[:, None], grid, mode="bilinear", padding_mode="border", align_corners=False
    )[:, 0]
    # Nearest labels: the F_mask cell containing the sampling point.
    cell_y = src_y.floor().long().clamp(0, mask_h - 1)
    cell_x = src_x.floor().long().clamp(0, mask_w - 1)
    person = torch.arange(num, device=device)[:, None, None]
    labels = label_map[person, cell_y[:, :, None], cell_x[:, None, :]].to(torch.uint8)
    window = labels.masked_fill_(~(fg > mask_thr), 0)
    if (win_h, win_w) == (ori_h, ori_w):
        return window  # the windows are the whole image
    # Paste through one flat index (8 bytes per window pixel, not three broadcast indices).
    flat = (person * ori_h + ys[:, :, None]) * ori_w + xs[:, None, :]
    out.view(-1)[flat.view(-1)] = window.view(-1)
    return out


def _window(covered_lines: Tensor, scale: float, size: int) -> tuple[Tensor, Tensor]:
    """Output pixel range ``[lo, hi)`` whose samples can touch a covered line +- 1 cell.

    Args:
        covered_lines: ``(P, L)`` bool, F_mask rows (or columns) with a covered cell.
        scale: F_mask units per output pixel.
        size: output length (H0 or W0).

    Returns:
        ``lo``, ``hi`` ``(P,)`` long, empty (``lo == hi``) for a person with no cell.
    """
    length = covered_lines.shape[1]
    any_line = covered_lines.any(1)
    first = covered_lines.to(torch.uint8).argmax(1)
    last = length - 1 - covered_lines.flip(1).to(torch.uint8).argmax(1)
    # Grow by one cell (bilinear support), convert [first - 1, last + 2) to pixels.
    lo = ((first - 1).clamp(min=0) / scale).floor().long().clamp(0, size)
    hi = ((last + 2).clamp(max=length) / scale).ceil().long().clamp(0, size)
    hi = torch.where(any_line, hi, lo)
    return lo, hi
