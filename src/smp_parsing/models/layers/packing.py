"""Packing of variable-size groups into one zero-padded tensor, shared by matrix NMS, the mask
loss (positives per image) and the decode (parts per person): one batched op instead of a loop.

Shapes convention: N rows, G groups, K_max rows of the largest group.
"""

from __future__ import annotations

import torch
from torch import Tensor


def consecutive_ids(sorted_labels: Tensor) -> Tensor:
    """``0, 0, 1, 1, 1, 2, ...``: the run index of each entry of a sorted label vector
    (``unique_consecutive``'s inverse, without its host read of the output size)."""
    change = torch.ones_like(sorted_labels, dtype=torch.long)
    # fill_ takes the number as a kernel argument; `change[0] = 0` would copy a CPU scalar into
    # the tensor, a host-to-device copy that waits for the GPU
    change[:1].fill_(0)
    change[1:] = (sorted_labels[1:] != sorted_labels[:-1]).long()
    return torch.cumsum(change, 0)


def pack_by_group(
    values: Tensor, group: Tensor, num_groups: int | None = None
) -> tuple[Tensor, Tensor]:
    """Pack rows into a zero-padded ``(G, K_max, ...)`` tensor by group, order kept.

    Args:
        values: ``(N, ...)`` rows.
        group: ``(N,)`` long group ids in ``0..G-1``.
        num_groups: G; ``max(group) + 1`` when ``None``.

    Returns:
        ``packed`` ``(G, K_max, ...)`` and ``slot`` ``(N, 2)`` long ``(group, rank)`` of each
        row in ``packed``.
    """
    if group.numel() == 0:
        return values.new_zeros(num_groups or 0, 0, *values.shape[1:]), group.new_zeros(0, 2)
    order = torch.argsort(group, stable=True)
    sorted_group = group[order]
    # Rank inside the group = position - position of the group's first row (a running max
    # of the group starts): no per-group counts, so G and K_max come from one host read.
    position = torch.arange(group.numel(), device=group.device)
    is_start = torch.ones_like(sorted_group, dtype=torch.bool)
    is_start[1:] = sorted_group[1:] != sorted_group[:-1]
    rank_sorted = position - torch.where(is_start, position, 0).cummax(0).values
    rank = torch.empty_like(rank_sorted)
    rank[order] = rank_sorted
    if num_groups is None:
        num_groups, k_max = torch.stack([sorted_group[-1] + 1, rank_sorted.max() + 1]).tolist()
    else:
        k_max = int(rank_sorted.max()) + 1
    packed = values.new_zeros(num_groups, k_max, *values.shape[1:])
    packed[group, rank] = values
    return packed, torch.stack([group, rank], 1)


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
