"""Matrix NMS (SOLOv2): soft, parallel suppression of overlapping masks of the same label.

Shapes convention: N candidate masks, D pixels per mask (any spatial size, flattened).
"""

from __future__ import annotations

from torch import Tensor


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
    raise NotImplementedError
