"""Part grouping of the decode (step 3): which part candidates each human takes, from the part
centres its offsets point at. ``release`` is the authors' rule (spec Inference step 3),
``pointed_cell`` the earlier rule of this implementation.

Shapes convention: L part levels, C_P part classes, S center grid, Q humans of an image,
K part-candidate cells, R selected parts.
"""

from __future__ import annotations

import torch
from torch import Tensor

GROUPINGS = ("release", "pointed_cell")


def group_parts_pointed_cell(
    pointed: Tensor,
    finite: Tensor,
    part_scores: Tensor,
    accept_scores: Tensor,
    *,
    cate_score_thr: float,
    min_radius: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``grouping="pointed_cell"``: accept class p on a level when that level's score at the
    pointed cell exceeds ``cate_score_thr``, then :func:`select_parts`.

    Args:
        pointed: ``(Q, C_P, 2)`` pointed part centres ``(x, y)`` in grid cells.
        finite: ``(Q, C_P)`` the pointed centre is finite.
        part_scores: ``(L, C_P, S, S)`` part probabilities on the center grid.
        accept_scores: ``(L, C_P, S, S)`` the scores of the acceptance test (``part_scores``
            or their ``accept_window`` max-pool).
        cate_score_thr: theta_p.
        min_radius: lower bound of the distance-weighting radius, in cells.

    Returns:
        What :func:`select_parts` returns.
    """
    grid = part_scores.shape[-1]
    # Acceptance test on every level: score of class p at the pointed cell.
    pointed_cell = torch.nan_to_num(pointed).round().clamp(0, grid - 1).long()
    cls = torch.arange(part_scores.shape[1], device=part_scores.device)
    pointed_score = accept_scores[:, cls, pointed_cell[..., 1], pointed_cell[..., 0]]
    accepted = (pointed_score > cate_score_thr) & finite  # (L, Q, C_P)
    return select_parts(
        pointed, accepted, part_scores, cate_score_thr=cate_score_thr, min_radius=min_radius
    )


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
