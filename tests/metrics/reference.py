"""Brute-force NumPy reference of the MHP parsing metrics, written from the words of the spec.

Loops everywhere, one ``bincount`` confusion matrix per (prediction, GT) pair as the official MHP
evaluation does. Slow on purpose: it is the yardstick of the vectorised metric, never used by it.
Tie rules are the ones documented in :mod:`smp_parsing.metrics.functional` (global visiting order
``(-score, image key, arrival order)``; pair scores within 1e-12 are equal).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TOLERANCE = 1e-12
THRESHOLDS = tuple(k / 10 for k in range(1, 10))


@dataclass
class ReferenceImage:
    """One image: ``pred`` P x H x W, ``scores`` (P,), ``gt`` G x H x W, tie-break ``key``."""

    pred: np.ndarray
    scores: np.ndarray
    gt: np.ndarray
    key: int = 0
    extra: dict = field(default_factory=dict)


def pair_class_iou(pred_map: np.ndarray, gt_map: np.ndarray, num_classes: int) -> np.ndarray:
    """IoU of every class between two H x W maps (NaN when the class is in neither)."""
    hist = np.bincount(
        num_classes * gt_map.astype(np.int64).ravel() + pred_map.astype(np.int64).ravel(),
        minlength=num_classes * num_classes,
    ).reshape(num_classes, num_classes)
    diag = np.diag(hist).astype(np.float64)
    union = hist.sum(1) + hist.sum(0) - diag
    with np.errstate(divide="ignore", invalid="ignore"):
        return diag / union


def voc_ap(recall: list[float], precision: list[float]) -> float:
    """VOC all-point AP (area under the monotone precision envelope)."""
    mrec = [0.0, *recall, 1.0]
    mpre = [0.0, *precision, 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    ap = 0.0
    for i in range(len(mrec) - 1):
        if mrec[i + 1] != mrec[i]:
            ap += (mrec[i + 1] - mrec[i]) * mpre[i + 1]
    return ap


def reference_metrics(
    images: list[ReferenceImage],
    num_classes: int,
    thresholds: tuple[float, ...] = THRESHOLDS,
    score_threshold_miou: float = 0.05,
) -> dict[str, float]:
    """The metric dict of the spec for a list of images."""
    # GT persons: all-zero maps are not GT persons.
    gts = [[g for g in image.gt if g.any()] for image in images]
    npos = sum(len(g) for g in gts)

    # Every prediction: (image index, prediction index), with its best GT and pair IoU vector.
    detections = []
    arrival = 0
    for i, image in enumerate(images):
        for p in range(len(image.pred)):
            ovmax, jmax, best_iou = -np.inf, -1, None
            for j, gt_map in enumerate(gts[i]):
                iou = pair_class_iou(image.pred[p], gt_map, num_classes)
                score = np.nanmean(iou)
                if score > ovmax + TOLERANCE:  # the first GT wins ties
                    ovmax, jmax, best_iou = score, j, iou
            detections.append(
                {
                    "score": float(image.scores[p]),
                    "key": image.key,
                    "arrival": arrival,
                    "image": i,
                    "ovmax": ovmax,
                    "jmax": jmax,
                    "iou": best_iou,
                }
            )
            arrival += 1
    detections.sort(key=lambda d: (-d["score"], d["key"], d["arrival"]))

    results: dict[str, float] = {}
    aps, pcps = [], []
    for t in thresholds:
        taken = set()
        tp, fp, pcp_sum = [], [], 0.0
        for d in detections:
            if (
                d["jmax"] >= 0
                and d["ovmax"] > t + TOLERANCE
                and (d["image"], d["jmax"]) not in taken
            ):
                taken.add((d["image"], d["jmax"]))
                tp.append(1)
                fp.append(0)
                gt_map = gts[d["image"]][d["jmax"]]
                gt_parts = [c for c in np.unique(gt_map) if c >= 1]
                passed = sum(1 for c in gt_parts if d["iou"][c] > t)
                pcp_sum += passed / len(gt_parts)
            else:
                tp.append(0)
                fp.append(1)
        if not detections or npos == 0:
            aps.append(0.0)
            pcps.append(0.0)
            continue
        cum_tp = np.cumsum(tp).astype(np.float64)
        cum_fp = np.cumsum(fp).astype(np.float64)
        recall = list(cum_tp / npos)
        precision = list(cum_tp / np.maximum(cum_tp + cum_fp, np.finfo(np.float64).eps))
        aps.append(voc_ap(recall, precision))
        pcps.append(pcp_sum / npos)

    # Semantic maps: predictions painted from the worst to the best ranked (the best wins),
    # skipping scores below the threshold; GT painted in file order (later persons win).
    confusion = np.zeros((num_classes, num_classes), np.int64)
    for image in images:
        shape = image.gt.shape[1:]
        pred_sem = np.zeros(shape, np.int64)
        ranked = sorted(range(len(image.pred)), key=lambda p: (-image.scores[p], p))
        for p in reversed(ranked):
            if image.scores[p] < score_threshold_miou:
                continue
            fg = image.pred[p] > 0
            pred_sem[fg] = image.pred[p][fg]
        gt_sem = np.zeros(shape, np.int64)
        for gt_map in image.gt:
            fg = gt_map > 0
            gt_sem[fg] = gt_map[fg]
        confusion += np.bincount(
            num_classes * gt_sem.ravel() + pred_sem.ravel(), minlength=num_classes**2
        ).reshape(num_classes, num_classes)
    diag = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - diag
    with np.errstate(divide="ignore", invalid="ignore"):
        class_iou = diag / union
    results["APp50"] = aps[thresholds.index(0.5)]
    results["APpvol"] = float(np.mean(aps))
    results["PCP50"] = pcps[thresholds.index(0.5)]
    results["mIoU"] = float(np.nanmean(class_iou)) if (union > 0).any() else 0.0
    results["pixel_acc"] = float(diag.sum() / confusion.sum()) if confusion.sum() else 0.0
    for t, ap in zip(thresholds, aps):
        results[f"APp@{t:g}"] = ap
    for t, pcp in zip(thresholds, pcps):
        results[f"PCP@{t:g}"] = pcp
    return results
