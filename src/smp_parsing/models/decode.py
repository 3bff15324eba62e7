"""Single-stage decoding of SMP outputs into per-person parsing maps (paper section 4.1).

Shapes convention: C_P part classes, S_c center/offset grid, L part levels, C_K kernel
length, h x w mask-feature size (input / 4), Hp x Wp padded input, H0 x W0 original image,
Q human peaks of an image, K part-candidate cells of an image, R selected parts.
"""

from __future__ import annotations

from collections.abc import Sequence

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
         ``cate_score_thr``; the part is the candidate cell of class p on that level
         (score > threshold, top ``nms_pre``) maximising ``score * exp(-d^2 / r^2)``,
         d the Manhattan distance to the pointed centre, r the spread of the human's
         pointed centres (at least ``min_radius``);
      4. masks from the kernels (> ``mask_thr``), area > level stride, maskness rescoring,
         matrix NMS among same-class parts of a human, keep >= ``update_thr``, at most
         ``max_parts_per_human`` per human; parts painted in ascending score into one map
         per human at mask resolution; human score = its center score;
      5. maps upsampled to the padded input, cropped to ``meta["img_size"]`` and resized to
         ``meta["ori_size"]``.

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
        return_intermediates: also return the maps a visualiser needs.

    Returns:
        Per image a dict: ``parsing`` ``(P, H0, W0)`` uint8, ``scores`` ``(P,)`` float; with
        intermediates also ``center_heatmap`` ``(S_c, S_c)``, ``centers`` ``(P, 2)`` grid
        ``(x, y)``, ``part_centers`` ``(P, C_P, 2)`` pointed grid positions ``(x, y)``,
        ``offsets`` ``(C_P, 2, S_c, S_c)``.
    """
    raise NotImplementedError
