"""Per-class IoU (``ParsingMetrics.class_iou``): the terms behind mIoU, shown per class on W&B."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from smp_parsing.metrics import ParsingMetrics, evaluate_parsing
from smp_parsing.metrics.functional import semantic_class_iou

from .cases import random_images, to_metric_inputs


def test_class_iou_of_a_hand_example() -> None:
    # one 1 x 4 image: GT [1 1 2 0], prediction [1 2 2 2]; class 3 appears nowhere
    gt = torch.tensor([[[1, 1, 2, 0]]], dtype=torch.uint8)
    pred = torch.tensor([[[1, 2, 2, 2]]], dtype=torch.uint8)
    metric = ParsingMetrics(num_classes=4)
    metric.update([{"parsing": pred, "scores": torch.tensor([0.9])}], [{"parsing": gt}])
    iou = metric.class_iou()
    assert iou.shape == (4,)
    # background: 0 of 1; class 1: 1 of 2; class 2: 1 of 3
    assert iou[:3].tolist() == pytest.approx([0.0, 0.5, 1 / 3])
    assert math.isnan(iou[3])
    assert metric.compute()["mIoU"] == pytest.approx((0.5 + 1 / 3) / 3)


def test_class_iou_mean_is_the_miou_on_random_cases() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        num_classes = int(rng.choice([3, 6, 59]))
        preds, target = to_metric_inputs(random_images(rng, int(rng.integers(1, 4)), num_classes))
        metric = ParsingMetrics(num_classes)
        metric.update(preds, target)
        iou = metric.class_iou()
        expected = evaluate_parsing(preds, target, num_classes)["mIoU"]
        mean = float(iou.nanmean()) if not iou.isnan().all() else 0.0
        assert mean == pytest.approx(expected, abs=1e-12)
        assert ((iou[~iou.isnan()] >= 0) & (iou[~iou.isnan()] <= 1)).all()


def test_semantic_class_iou_marks_absent_classes_nan() -> None:
    confusion = torch.tensor([[5, 0, 0], [0, 0, 0], [1, 0, 3]])
    iou = semantic_class_iou(confusion)
    assert iou[0] == pytest.approx(5 / 6) and iou[2] == pytest.approx(3 / 4)
    assert math.isnan(iou[1])
