"""Functional core of the multi-human parsing metrics (AP^p, AP^p_vol, PCP, mIoU).

The protocol is the official MHP v2 evaluation (``shared/spec/metrics.md``):

* **Pair score** of a predicted person against a GT person: the CxC confusion of the two maps over
  the whole image gives IoU_c = diag_c / (row_c + col_c - diag_c) for every class, background
  included; the pair score is the mean over the classes present in either map.
* **Matching at threshold t**: predictions are visited in descending score order; a prediction's
  ``ovmax`` is its best pair score over the GT persons of its own image (first GT wins ties); it is
  a true positive when ``ovmax > t`` and that GT is not taken yet (no fallback to another GT).
  AP is the VOC all-point area under the precision envelope; AP^p_vol is the mean over t.
* **PCP at t**: a true positive scores the fraction of its GT's part classes with IoU_c > t; the
  sum over true positives is divided by the number of GT persons.
* **mIoU**: per image, predicted persons with score >= a threshold are painted into one semantic
  map (the better-ranked person wins a pixel), GT persons in file order (later files win); one CxC
  confusion over the data set gives the per-class IoU, averaged over the classes present.

Because a prediction only competes for the GT of its own image, the greedy matching is decided
image by image (:func:`image_statistics`) and only (score, TP flags, PCP values) per prediction,
the GT count and the semantic confusion are kept; :func:`aggregate_statistics` then sorts all
predictions globally and integrates AP. That split is what makes the DDP state small.

Conventions (where the official code is silent or wrong, see the spec's edge cases):

* **Ties in score.** Within an image, equal scores are visited in prediction index order. Across
  images, equal scores are ordered by an optional per-image key (a hash of the image id when the
  caller supplies one), then by the order in which the predictions were accumulated. So the global
  order is a stable sort by ``(-score, image key, arrival order)``.
* **Ties in pair score.** Pair scores are means of up to C ratios; two summation orders of the same
  exact value can differ by a few ulps (1e-16). Comparisons of pair scores (``ovmax > t`` and the
  first-best GT) therefore treat values within :data:`PAIR_SCORE_TOLERANCE` of each other as equal,
  which gives the exact-arithmetic answer: a pair score of exactly 0.5 is *not* above t = 0.5.
* **No predictions** gives AP = PCP = 0; a prediction in an image without GT is a false positive;
  no GT in the whole data set gives AP = PCP = 0 (the official code divides by zero).
* Prediction and GT maps of different sizes, class ids outside ``0..C-1``, non-integer maps and
  non-finite scores raise a :class:`ValueError` naming the image.

Implementation notes (speed). Person maps are mostly background, so the per-image work skips
all-background runs of 8 pixels by viewing each ``uint8`` map as ``int64`` words: only words with a
non-zero byte are expanded (:class:`~smp_parsing.metrics.sparse_maps.SparseMaps`). All
prediction/GT pairs of an image are handled at once: the pixels where a prediction word and a GT
word are both non-zero are gathered for every pair in one go, and a single ``bincount`` over
(pair, class) gives every pair's per-class intersection; the background intersection follows from
the foreground counts. The semantic maps are painted with one ``scatter_reduce`` each on a compact
canvas of the words some person touches.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from smp_parsing.metrics.sparse_maps import BYTES_PER_WORD, SparseMaps, word_bytes

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(k / 10 for k in range(1, 10))
"""IoU thresholds of AP^p_vol and PCP: 0.1, 0.2, ..., 0.9 (each the nearest double to k/10)."""

PAIR_SCORE_TOLERANCE = 1e-12
"""Pair scores closer than this are equal (floating-point summation noise is ~1e-16)."""


@dataclass(frozen=True)
class ImageStatistics:
    """What one image contributes to the metrics.

    Attributes:
        scores: ``(P,)`` float64 prediction scores, in prediction index order.
        true_positive: ``(P, T)`` bool, TP flag of each prediction at each threshold.
        pcp: ``(P, T)`` float64, the PCP value of each prediction (0 when not a TP).
        num_gt: number of GT persons (all-zero GT maps excluded).
        confusion: ``(C, C)`` int64 semantic confusion, rows = GT class, columns = predicted class.
    """

    scores: Tensor
    true_positive: Tensor
    pcp: Tensor
    num_gt: int
    confusion: Tensor


def image_key(image_id: str | int) -> int:
    """Order-free tie-break key of an image: 52 bits of a BLAKE2 hash of its id.

    Args:
        image_id: The image id (e.g. the MHP id ``"1234"``).

    Returns:
        A non-negative int below 2**52, exactly representable in int64 and float64.
    """
    digest = hashlib.blake2b(str(image_id).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 12


def check_thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
    """Validate IoU thresholds: non-empty, strictly increasing, inside (0, 1), containing 0.5.

    Raises:
        ValueError: naming the problem.
    """
    values = tuple(float(t) for t in thresholds)
    if not values:
        raise ValueError("thresholds must not be empty")
    if any(not 0.0 < t < 1.0 for t in values):
        raise ValueError(f"thresholds must lie strictly between 0 and 1, got {values}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"thresholds must be strictly increasing, got {values}")
    if not any(math.isclose(t, 0.5) for t in values):
        raise ValueError(f"thresholds must contain 0.5 (for APp50 and PCP50), got {values}")
    return values


def _check_num_classes(num_classes: int) -> None:
    if not 2 <= num_classes <= 256:
        raise ValueError(
            f"num_classes must be in 2..256 (class ids are stored as uint8), got {num_classes}"
        )


def _as_class_maps(maps: Tensor, num_classes: int, what: str, where: str) -> Tensor:
    """Check an ``N x H x W`` integer map stack and return it as contiguous uint8.

    The range of uint8 maps is checked later on their non-zero words (cheaper than a full scan).

    Raises:
        ValueError: for a wrong rank, a non-integer dtype or a class id outside ``0..C-1``.
    """
    if not isinstance(maps, Tensor):
        raise ValueError(f"{where}: {what} must be a torch.Tensor, got {type(maps).__name__}")
    if maps.ndim != 3:
        raise ValueError(f"{where}: {what} must be N x H x W, got shape {tuple(maps.shape)}")
    if maps.dtype == torch.bool or maps.is_floating_point() or maps.is_complex():
        raise ValueError(f"{where}: {what} must hold integer class ids, got dtype {maps.dtype}")
    if maps.dtype != torch.uint8 and maps.numel():
        low, high = torch.aminmax(maps)
        if int(low) < 0:
            raise ValueError(
                f"{where}: {what} holds class id {int(low)}, outside 0..{num_classes - 1}"
            )
        _check_range(int(high), num_classes, what, where)
    return maps.to(torch.uint8).contiguous()


def _check_range(high: int, num_classes: int, what: str, where: str) -> None:
    if high >= num_classes:
        raise ValueError(f"{where}: {what} holds class id {high}, outside 0..{num_classes - 1}")


def _pair_class_iou(
    pred: SparseMaps, gt: SparseMaps, pred_hist: Tensor, gt_hist: Tensor, num_classes: int
) -> Tensor:
    """``P x G x C`` per-class IoU of every pair from the sparse maps (see :func:`pair_class_iou`)."""
    num_pred, num_gt = pred.num_maps, gt.num_maps
    c = num_classes
    area = pred.area
    # Join on the word index: every (prediction word, GT word) couple sharing a word, without a
    # dense G x F table (memory stays O(overlaps) for many persons). The GT entries are word-major,
    # so the GT words at word w are the run first[w] .. first[w] + per_word[w] - 1.
    per_word = torch.bincount(gt.word, minlength=gt.num_words)
    first = torch.cumsum(per_word, 0) - per_word
    hits = torch.index_select(per_word, 0, pred.word)  # (F,) GT words at each prediction word
    pair_word = torch.repeat_interleave(torch.arange(hits.numel(), device=hits.device), hits)
    run_start = torch.cumsum(hits, 0) - hits
    within_run = torch.arange(pair_word.numel(), device=hits.device) - run_start[pair_word]
    gt_entry = torch.index_select(first, 0, pred.word)[pair_word] + within_run  # (K,)
    pair_gt = torch.index_select(gt.row, 0, gt_entry)
    gt_bytes = word_bytes(torch.index_select(gt.values, 0, gt_entry))  # K x 8
    pred_bytes = word_bytes(torch.index_select(pred.values, 0, pair_word))  # K x 8
    # Slot of each pixel: its class when both maps agree (0 when both are background: that bin is
    # never read), C when both are foreground but disagree, C + 1 (discarded) otherwise.
    # int32 scalars keep the per-pixel arrays at 4 bytes (uint8 operands promote to int32).
    slot_disagree, slot_discard = _int32_scalars(c, c + 1, device=pred_bytes.device)
    both_fg = torch.minimum(pred_bytes, gt_bytes) > 0
    slot = torch.where(
        pred_bytes == gt_bytes, gt_bytes, torch.where(both_fg, slot_disagree, slot_discard)
    )
    pair = torch.index_select(pred.row, 0, pair_word) * num_gt + pair_gt
    code = (pair * (c + 2)).int()[:, None] + slot
    counts = torch.bincount(code.reshape(-1), minlength=num_pred * num_gt * (c + 2))
    counts = counts.view(num_pred, num_gt, c + 2)

    intersection = counts[..., :c].clone()
    both_foreground = counts[..., 1 : c + 1].sum(-1)
    fg_pred = area - pred_hist[:, 0]
    fg_gt = area - gt_hist[:, 0]
    # Background agrees wherever neither map is foreground (inclusion-exclusion).
    intersection[..., 0] = area - fg_pred[:, None] - fg_gt[None, :] + both_foreground
    union = pred_hist[:, None, :] + gt_hist[None, :, :] - intersection
    return intersection.double() / union.double()  # 0/0 = NaN for classes in neither map


def _int32_scalars(*values: int, device: torch.device) -> list[Tensor]:
    """0-d int32 tensors (``torch.where`` with Python ints would produce int64 arrays)."""
    return [torch.tensor(v, dtype=torch.int32, device=device) for v in values]


def pair_class_iou(pred: Tensor, gt: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per-class IoU of every (prediction, GT person) pair of one image, all pairs at once.

    Per pair this is the IoU vector of the pair's CxC confusion over the whole image; here the
    part intersections of all pairs come from one ``bincount`` over (pair, class) of the pixels
    where both maps are foreground, and the background intersection from the foreground counts.

    Args:
        pred: ``P x H x W`` uint8 predicted person maps (values below C).
        gt: ``G x H x W`` uint8 GT person maps (same size).
        num_classes: C, background included.

    Returns:
        ``class_iou``: ``P x G x C`` float64, IoU_c of each pair, NaN where class c is in neither
        map; ``gt_hist``: ``G x C`` int64 pixel count per class of each GT map.
    """
    pred_maps, gt_maps = SparseMaps.from_maps(pred), SparseMaps.from_maps(gt, word_major=True)
    pred_hist, gt_hist = pred_maps.histograms(num_classes), gt_maps.histograms(num_classes)
    return _pair_class_iou(pred_maps, gt_maps, pred_hist, gt_hist, num_classes), gt_hist


def pair_scores(class_iou: Tensor) -> Tensor:
    """Pair score (``nanmean`` of the per-class IoU): ``P x G x C`` -> ``P x G`` float64."""
    present = ~torch.isnan(class_iou)
    return class_iou.nan_to_num(0.0).sum(-1) / present.sum(-1)


def _visiting_rank(scores: Tensor) -> Tensor:
    """``(P,)`` rank of each prediction in the visiting order (descending score, then index)."""
    order = torch.sort(-scores.double(), stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    return rank


def match_image(
    scores: Tensor,
    class_iou: Tensor,
    gt_hist: Tensor,
    thresholds: Tensor,
) -> tuple[Tensor, Tensor]:
    """Greedy matching of one image's predictions at every threshold at once.

    Args:
        scores: ``(P,)`` prediction scores.
        class_iou: ``P x G x C`` float64 per-class IoU of each pair (NaN = class absent).
        gt_hist: ``G x C`` pixel counts of the GT maps (every GT has a part).
        thresholds: ``(T,)`` float64 IoU thresholds.

    Returns:
        ``true_positive`` ``P x T`` bool and ``pcp`` ``P x T`` float64 (0 where not a TP).
    """
    num_pred, num_gt = class_iou.shape[:2]
    num_thr = thresholds.numel()
    device = scores.device
    if num_pred == 0 or num_gt == 0:
        empty = torch.zeros(num_pred, num_thr, dtype=torch.bool, device=device)
        return empty, torch.zeros(num_pred, num_thr, dtype=torch.float64, device=device)

    rank = _visiting_rank(scores)
    mean_iou = pair_scores(class_iou)  # P x G
    ovmax = mean_iou.max(1).values
    # First GT whose pair score equals the best (within the summation noise).
    is_best = mean_iou >= ovmax[:, None] - PAIR_SCORE_TOLERANCE
    best_gt = is_best.long().argmax(1)  # argmax returns the first maximal index

    candidate = ovmax[:, None] > thresholds[None, :] + PAIR_SCORE_TOLERANCE  # P x T
    # A candidate takes its GT iff no better-ranked candidate chose the same GT at that threshold.
    candidate_rank = torch.where(candidate, rank[:, None], num_pred)
    first_rank = torch.full((num_gt, num_thr), num_pred, dtype=rank.dtype, device=device)
    first_rank.scatter_reduce_(0, best_gt[:, None].expand(-1, num_thr), candidate_rank, "amin")
    true_positive = candidate & (first_rank[best_gt] == rank[:, None])

    # PCP: fraction of the matched GT's part classes whose IoU exceeds t.
    matched_iou = class_iou[torch.arange(num_pred, device=device), best_gt, 1:]  # P x (C-1)
    gt_parts = gt_hist[best_gt, 1:] > 0  # P x (C-1)
    num_parts = gt_parts.sum(1)  # >= 1: empty GT maps were dropped
    # NaN > t is False; a class the GT lacks has IoU 0 anyway, the mask states the definition.
    above = (matched_iou[:, None, :] > thresholds[None, :, None]) & gt_parts[:, None, :]
    passed = above.sum(-1)
    pcp = torch.where(true_positive, passed.double() / num_parts[:, None].double(), 0.0)
    return true_positive, pcp


def _semantic_confusion(
    pred: SparseMaps, scores: Tensor, gt: SparseMaps, num_classes: int, score_threshold: float
) -> Tensor:
    """``C x C`` semantic confusion from the sparse maps (see :func:`semantic_confusion`)."""
    c = num_classes
    device = scores.device
    # Only words where some person is foreground can leave the (background, background) cell:
    # paint into a compact canvas of those words (slot = position among the active words).
    active = torch.zeros(gt.num_words, dtype=torch.bool, device=device)
    active[pred.word] = True
    active[gt.word] = True
    slot = torch.cumsum(active, 0) - 1
    canvas = int(slot[-1]) + 1 if slot.numel() else 0
    offsets = torch.arange(BYTES_PER_WORD, device=device)

    # Paint by scatter: a pixel keeps the smallest (rank, value) key of the predictions covering it,
    # the largest (file index, value) key of the GT persons. Keys pack the value in the low byte;
    # ``no_person`` (and anything above it) decodes to background.
    no_person = pred.num_maps << 8
    row_key = torch.where(scores >= score_threshold, _visiting_rank(scores) << 8, no_person)
    pred_bytes = pred.bytes()
    pred_key = torch.where(pred_bytes > 0, row_key.int()[pred.row][:, None] | pred_bytes, no_person)
    pred_pixel = (slot[pred.word] * BYTES_PER_WORD)[:, None] + offsets
    pred_sem = torch.full((canvas * BYTES_PER_WORD,), no_person, dtype=torch.int32, device=device)
    pred_sem.scatter_reduce_(0, pred_pixel.reshape(-1), pred_key.reshape(-1), "amin")

    gt_bytes = gt.bytes()
    gt_key = torch.where(gt_bytes > 0, (gt.row.int() << 8)[:, None] | gt_bytes, 0)
    gt_pixel = (slot[gt.word] * BYTES_PER_WORD)[:, None] + offsets
    gt_sem = torch.zeros(canvas * BYTES_PER_WORD, dtype=torch.int32, device=device)
    gt_sem.scatter_reduce_(0, gt_pixel.reshape(-1), gt_key.reshape(-1), "amax")

    code = (gt_sem & 0xFF) * c + (pred_sem & 0xFF)
    confusion = torch.bincount(code, minlength=c * c).view(c, c)
    # The skipped words (and the padding) are background in both maps.
    confusion[0, 0] = gt.area - (confusion.sum() - confusion[0, 0])
    return confusion


def semantic_confusion(
    pred: Tensor, scores: Tensor, gt: Tensor, num_classes: int, score_threshold: float
) -> Tensor:
    """``C x C`` confusion (rows GT, columns prediction) of the painted semantic maps of one image.

    Predicted persons with ``score >= score_threshold`` are painted so that the better-ranked
    person (higher score, then lower index) wins a pixel; GT persons are painted in file order so
    that later persons win, as the MHP semantic maps are built.

    Args:
        pred: ``P x H x W`` uint8; scores: ``(P,)``; gt: ``G x H x W`` uint8 (values below C).
        num_classes: C.
        score_threshold: Persons scored below it are not painted.
    """
    return _semantic_confusion(
        SparseMaps.from_maps(pred),
        scores,
        SparseMaps.from_maps(gt, word_major=True),
        num_classes,
        score_threshold,
    )


def image_statistics(
    pred_parsing: Tensor,
    pred_scores: Tensor,
    gt_parsing: Tensor,
    num_classes: int,
    thresholds: Sequence[float] | Tensor = DEFAULT_THRESHOLDS,
    score_threshold_miou: float = 0.05,
    where: str = "image",
) -> ImageStatistics:
    """Everything one image contributes to the metrics (the metric's ``update`` for one image).

    Args:
        pred_parsing: ``P x H x W`` integer predicted person maps (P may be 0).
        pred_scores: ``(P,)`` finite scores.
        gt_parsing: ``G x H x W`` integer GT person maps in file order (G may be 0); all-zero
            maps are not GT persons and are ignored.
        num_classes: C, background included (at most 256).
        thresholds: IoU thresholds of the matching and of PCP.
        score_threshold_miou: Predicted persons below this score are not painted for mIoU.
        where: Names the image in error messages.

    Returns:
        The :class:`ImageStatistics` of the image.

    Raises:
        ValueError: for malformed inputs (rank, dtype, size mismatch, class id out of range,
            score count or non-finite score).
    """
    _check_num_classes(num_classes)
    gt = _as_class_maps(gt_parsing, num_classes, "GT parsing", where)
    pred = _as_class_maps(pred_parsing, num_classes, "predicted parsing", where)
    if pred.shape[1:] != gt.shape[1:]:
        raise ValueError(
            f"{where}: predicted parsing is {pred.shape[1]}x{pred.shape[2]} (HxW) but the GT is "
            f"{gt.shape[1]}x{gt.shape[2]}; predictions must be at the GT (original image) size"
        )
    if not isinstance(pred_scores, Tensor):
        pred_scores = torch.as_tensor(pred_scores)
    scores = pred_scores.to(device=pred.device, dtype=torch.float64).reshape(-1)
    if pred_scores.ndim > 1 or scores.numel() != pred.shape[0]:
        raise ValueError(
            f"{where}: {pred.shape[0]} predicted persons but scores of shape "
            f"{tuple(pred_scores.shape)}"
        )
    if not torch.isfinite(scores).all():
        raise ValueError(f"{where}: scores must be finite, got {scores.tolist()}")
    thr = torch.as_tensor(thresholds, dtype=torch.float64, device=pred.device).reshape(-1)

    gt_maps = SparseMaps.from_maps(gt, word_major=True)
    pred_maps = SparseMaps.from_maps(pred)
    _check_range(gt_maps.max_value(), num_classes, "GT parsing", where)
    _check_range(pred_maps.max_value(), num_classes, "predicted parsing", where)
    nonempty = torch.zeros(gt_maps.num_maps, dtype=torch.bool, device=gt.device)
    nonempty[gt_maps.row] = True
    if not bool(nonempty.all()):  # all-zero GT persons are not GT persons
        gt_maps = SparseMaps.from_maps(gt[nonempty], word_major=True)
    gt_hist = gt_maps.histograms(num_classes)
    class_iou = _pair_class_iou(
        pred_maps, gt_maps, pred_maps.histograms(num_classes), gt_hist, num_classes
    )
    true_positive, pcp = match_image(scores, class_iou, gt_hist, thr)
    confusion = _semantic_confusion(pred_maps, scores, gt_maps, num_classes, score_threshold_miou)
    return ImageStatistics(scores, true_positive, pcp, gt_maps.num_maps, confusion)


def global_order(scores: Tensor, image_keys: Tensor) -> Tensor:
    """Visiting order of all predictions: stable sort by ``(-score, image key, arrival order)``.

    Args:
        scores: ``(N,)`` float64 scores in arrival order; image_keys: ``(N,)`` int64.

    Returns:
        ``(N,)`` int64 permutation.
    """
    by_key = torch.sort(image_keys, stable=True).indices
    by_score = torch.sort(-scores[by_key], stable=True).indices
    return by_key[by_score]


def voc_average_precision(true_positive: Tensor, num_gt: int) -> Tensor:
    """VOC all-point AP of ranked detections, for several thresholds at once.

    Args:
        true_positive: ``N x T`` bool, TP flags in visiting order (descending score).
        num_gt: Number of GT persons (npos).

    Returns:
        ``(T,)`` float64 AP; 0 when there are no predictions or no GT.
    """
    num_det, num_thr = true_positive.shape
    device = true_positive.device
    if num_det == 0 or num_gt == 0:
        return torch.zeros(num_thr, dtype=torch.float64, device=device)
    cum_tp = true_positive.long().cumsum(0).double()
    cum_fp = (~true_positive).long().cumsum(0).double()
    recall = cum_tp / num_gt
    precision = cum_tp / torch.clamp(cum_tp + cum_fp, min=torch.finfo(torch.float64).eps)
    zero = torch.zeros(1, num_thr, dtype=torch.float64, device=device)
    m_recall = torch.cat([zero, recall, zero + 1.0])
    m_precision = torch.cat([zero, precision, zero])
    # Monotone envelope: precision at recall r is the best precision at any recall >= r.
    m_precision = m_precision.flip(0).cummax(0).values.flip(0)
    step = m_recall[1:] - m_recall[:-1]  # 0 where recall does not change: those terms vanish
    return (step * m_precision[1:]).sum(0)


def semantic_class_iou(confusion: Tensor) -> Tensor:
    """Per-class IoU of a semantic confusion (the terms the mIoU averages).

    Args:
        confusion: ``C x C`` counts, rows GT, columns prediction.

    Returns:
        ``(C,)`` float64: ``diag_c / (row_c + col_c - diag_c)``; NaN for a class in neither map
        (it does not count towards the mIoU).
    """
    confusion = confusion.double()
    diag = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - diag
    return torch.where(union > 0, diag / union.clamp(min=1), torch.nan)


def aggregate_statistics(
    scores: Tensor,
    image_keys: Tensor,
    true_positive: Tensor,
    pcp: Tensor,
    num_gt: int,
    confusion: Tensor,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> dict[str, float]:
    """Final metrics from the accumulated per-prediction results (the metric's ``compute``).

    Args:
        scores: ``(N,)`` float64 scores of all predictions, in arrival order.
        image_keys: ``(N,)`` int64 tie-break key of each prediction's image.
        true_positive: ``N x T`` TP flags (any integer or bool dtype).
        pcp: ``N x T`` float64 PCP values (0 for non-TP).
        num_gt: Total number of GT persons.
        confusion: ``C x C`` semantic confusion.
        thresholds: The T thresholds.

    Returns:
        ``APp50``, ``APpvol``, ``PCP50``, ``mIoU``, ``pixel_acc``, ``APp@<t>`` and ``PCP@<t>`` for
        every threshold, as floats.
    """
    thresholds = check_thresholds(thresholds)
    order = global_order(scores, image_keys)
    tp_sorted = true_positive[order].bool()
    ap = voc_average_precision(tp_sorted, num_gt)
    pcp_sum = pcp[order].double().sum(0)
    pcp_values = pcp_sum / num_gt if num_gt > 0 else torch.zeros_like(pcp_sum)

    confusion = confusion.double()
    diag = confusion.diagonal()
    class_iou = semantic_class_iou(confusion)
    class_iou = class_iou[~class_iou.isnan()]
    total = confusion.sum()

    results: dict[str, float] = {}
    half = next(i for i, t in enumerate(thresholds) if math.isclose(t, 0.5))
    results["APp50"] = float(ap[half])
    results["APpvol"] = float(ap.mean())
    results["PCP50"] = float(pcp_values[half])
    results["mIoU"] = float(class_iou.mean()) if class_iou.numel() else 0.0
    results["pixel_acc"] = float(diag.sum() / total) if total > 0 else 0.0
    for i, t in enumerate(thresholds):
        results[f"APp@{t:g}"] = float(ap[i])
    for i, t in enumerate(thresholds):
        results[f"PCP@{t:g}"] = float(pcp_values[i])
    return results


def evaluate_parsing(
    preds: Sequence[Mapping[str, Tensor]],
    target: Sequence[Mapping[str, Tensor]],
    num_classes: int,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    score_threshold_miou: float = 0.05,
) -> dict[str, float]:
    """One-shot form of :class:`smp_parsing.metrics.ParsingMetrics` for scripts.

    Args:
        preds: Per image ``{"parsing": P x H x W int tensor, "scores": (P,)}``.
        target: Per image ``{"parsing": G x H x W int tensor}``, optionally ``"image_id"`` (used
            only to break score ties across images independently of the image order).
        num_classes: C, background included.
        thresholds: IoU thresholds (must contain 0.5).
        score_threshold_miou: Score below which predicted persons are not painted for mIoU.

    Returns:
        The metric dict of :func:`aggregate_statistics`.
    """
    thresholds = check_thresholds(thresholds)
    if len(preds) != len(target):
        raise ValueError(f"got {len(preds)} predictions but {len(target)} targets")
    per_image = [
        image_statistics(
            p["parsing"],
            p["scores"],
            t["parsing"],
            num_classes,
            thresholds,
            score_threshold_miou,
            where=f"image {i}" + (f" (id {t['image_id']})" if "image_id" in t else ""),
        )
        for i, (p, t) in enumerate(zip(preds, target))
    ]
    keys = [
        torch.full((s.scores.numel(),), image_key(t["image_id"]) if "image_id" in t else 0)
        for s, t in zip(per_image, target)
    ]
    num_thr = len(thresholds)
    return aggregate_statistics(
        torch.cat([s.scores for s in per_image] or [torch.zeros(0, dtype=torch.float64)]),
        torch.cat(keys or [torch.zeros(0, dtype=torch.long)]),
        torch.cat(
            [s.true_positive for s in per_image] or [torch.zeros(0, num_thr, dtype=torch.bool)]
        ),
        torch.cat([s.pcp for s in per_image] or [torch.zeros(0, num_thr, dtype=torch.float64)]),
        sum(s.num_gt for s in per_image),
        sum(
            (s.confusion for s in per_image),
            torch.zeros(num_classes, num_classes, dtype=torch.long),
        ),
        thresholds,
    )
