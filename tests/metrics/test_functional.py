"""The vectorised metric against the spec's worked example, a brute-force reference and edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from smp_parsing.metrics import ParsingMetrics, evaluate_parsing
from smp_parsing.metrics.functional import (
    image_statistics,
    match_image,
    pair_class_iou,
    pair_scores,
    semantic_confusion,
    voc_average_precision,
)

from .cases import (
    WORKED_AP,
    WORKED_NUM_CLASSES,
    WORKED_PCP,
    random_images,
    to_metric_inputs,
    worked_example,
)
from .reference import ReferenceImage, reference_metrics, voc_ap
from .reference import pair_class_iou as reference_pair_iou

THRESHOLD_NAMES = [f"{k / 10:g}" for k in range(1, 10)]


def test_worked_example_of_the_spec():
    preds, target = worked_example()
    result = evaluate_parsing(preds, target, WORKED_NUM_CLASSES)
    assert [result[f"APp@{t}"] for t in THRESHOLD_NAMES] == pytest.approx(WORKED_AP, abs=1e-12)
    assert [result[f"PCP@{t}"] for t in THRESHOLD_NAMES] == pytest.approx(WORKED_PCP, abs=1e-12)
    assert result["APp50"] == pytest.approx(1 / 3, abs=1e-12)
    assert result["APpvol"] == pytest.approx(49 / 108, abs=1e-12)
    assert result["PCP50"] == pytest.approx(1 / 3, abs=1e-12)


def test_worked_example_pair_scores():
    preds, target = worked_example()
    class_iou, _ = pair_class_iou(preds[0]["parsing"], target[0]["parsing"], WORKED_NUM_CLASSES)
    scores = pair_scores(class_iou)
    assert scores[0, 0].item() == pytest.approx((5 / 6 + 1 + 0.6) / 3, abs=1e-12)  # 0.8111
    assert scores[1, 1].item() == pytest.approx(0.5, abs=1e-15)  # exactly at the threshold
    assert scores[2, 0].item() == 1.0


def test_metric_class_equals_functional_over_several_updates():
    preds, target = worked_example()
    metric = ParsingMetrics(WORKED_NUM_CLASSES)
    metric.update(preds[:1], target[:1])
    metric.update(preds[1:], target[1:])
    assert metric.compute() == evaluate_parsing(preds, target, WORKED_NUM_CLASSES)
    metric.reset()
    metric.update(preds, target)
    assert metric.compute() == evaluate_parsing(preds, target, WORKED_NUM_CLASSES)


def test_randomised_cases_equal_the_reference():
    """A few hundred random data sets (overlaps, empty maps, ties, odd sizes) against the spec."""
    rng = np.random.default_rng(2024)
    for case in range(250):
        num_classes = int(rng.choice([3, 6, 59]))
        images = random_images(rng, int(rng.integers(1, 4)), num_classes)
        preds, target = to_metric_inputs(images)
        ours = evaluate_parsing(preds, target, num_classes)
        expected = reference_metrics(images, num_classes)
        assert ours.keys() == expected.keys()
        for key, value in expected.items():
            assert abs(ours[key] - value) <= 1e-9, (case, key, ours[key], value)


def test_pair_iou_equals_one_bincount_per_pair():
    rng = np.random.default_rng(0)
    images = random_images(rng, 6, 7, max_size=19)
    for image in images:
        class_iou, _ = pair_class_iou(
            torch.from_numpy(image.pred), torch.from_numpy(image.gt), num_classes=7
        )
        for p in range(len(image.pred)):
            for g in range(len(image.gt)):
                expected = reference_pair_iou(image.pred[p], image.gt[g], 7)
                np.testing.assert_allclose(class_iou[p, g].numpy(), expected, rtol=0, atol=1e-15)


def test_semantic_confusion_equals_painting_loop():
    rng = np.random.default_rng(1)
    for image in random_images(rng, 8, 5, max_size=21):
        confusion = semantic_confusion(
            torch.from_numpy(image.pred), torch.from_numpy(image.scores),
            torch.from_numpy(image.gt), 5, 0.05,
        )  # fmt: skip
        pred_sem = np.zeros(image.gt.shape[1:], np.int64)
        for p in sorted(range(len(image.pred)), key=lambda p: (image.scores[p], -p)):
            if image.scores[p] >= 0.05:
                pred_sem[image.pred[p] > 0] = image.pred[p][image.pred[p] > 0]
        gt_sem = np.zeros(image.gt.shape[1:], np.int64)
        for gt_map in image.gt:
            gt_sem[gt_map > 0] = gt_map[gt_map > 0]
        expected = np.bincount(5 * gt_sem.ravel() + pred_sem.ravel(), minlength=25).reshape(5, 5)
        np.testing.assert_array_equal(confusion.numpy(), expected)


def _person(height=8, width=8, value=1, rows=slice(0, 4)):
    person = torch.zeros(height, width, dtype=torch.uint8)
    person[rows] = value
    return person


def test_no_predictions_at_all_gives_zero_ap_and_pcp():
    target = [{"parsing": _person()[None]}]
    preds = [{"parsing": torch.zeros(0, 8, 8, dtype=torch.uint8), "scores": torch.zeros(0)}]
    result = evaluate_parsing(preds, target, 3)
    assert result["APp50"] == 0.0 and result["APpvol"] == 0.0 and result["PCP50"] == 0.0
    metric = ParsingMetrics(3)
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert metric.compute()["APp50"] == 0.0  # never updated


def test_prediction_on_an_image_without_gt_is_a_false_positive():
    gt = _person()[None]
    empty = torch.zeros(0, 8, 8, dtype=torch.uint8)
    preds = [
        {"parsing": gt.clone(), "scores": torch.tensor([0.5])},
        {"parsing": gt.clone(), "scores": torch.tensor([0.9])},  # ranked first, no GT: FP
    ]
    result = evaluate_parsing(preds, [{"parsing": gt}, {"parsing": empty}], 3)
    assert result["APp50"] == pytest.approx(0.5)  # precision 1/2 at recall 1
    assert result["PCP50"] == 1.0


def test_all_zero_gt_person_is_not_counted():
    gt = torch.stack([_person(), torch.zeros(8, 8, dtype=torch.uint8)])
    preds = [{"parsing": _person()[None], "scores": torch.tensor([0.7])}]
    stats = image_statistics(preds[0]["parsing"], preds[0]["scores"], gt, 3)
    assert stats.num_gt == 1
    assert evaluate_parsing(preds, [{"parsing": gt}], 3)["APp50"] == 1.0


def test_no_gt_in_the_whole_data_set_gives_zero():
    preds = [{"parsing": _person()[None], "scores": torch.tensor([0.7])}]
    result = evaluate_parsing(preds, [{"parsing": torch.zeros(0, 8, 8, dtype=torch.uint8)}], 3)
    assert result["APpvol"] == 0.0 and result["PCP50"] == 0.0
    assert not any(math.isnan(v) for v in result.values())


@pytest.mark.parametrize(
    ("pred", "scores", "gt", "message"),
    [
        (_person(8, 9)[None], [0.5], _person()[None], "9x8|8x9|predictions must be at the GT"),
        (_person(value=3)[None], [0.5], _person()[None], "class id 3, outside 0..2"),
        (_person()[None], [0.5], _person(value=7)[None], "GT parsing holds class id 7"),
        (_person()[None].long() - 1, [0.5], _person()[None], "class id -1"),
        (_person()[None].float(), [0.5], _person()[None], "integer class ids"),
        (_person(), [0.5], _person()[None], "N x H x W"),
        (_person()[None], [0.5, 0.2], _person()[None], "1 predicted persons but scores"),
        (_person()[None], [float("nan")], _person()[None], "finite"),
    ],
)
def test_bad_input_raises_a_clear_error(pred, scores, gt, message):
    metric = ParsingMetrics(3)
    with pytest.raises(ValueError, match=message) as info:
        metric.update([{"parsing": pred, "scores": torch.tensor(scores)}], [{"parsing": gt}])
    assert "image 0 of the batch" in str(info.value)


def test_bad_construction_raises():
    with pytest.raises(ValueError, match="contain 0.5"):
        ParsingMetrics(3, thresholds=(0.3, 0.7))
    with pytest.raises(ValueError, match="num_classes"):
        ParsingMetrics(300)
    with pytest.raises(ValueError, match="2 predictions but 1 targets"):
        ParsingMetrics(3).update([{}, {}], [{}])


def test_image_ids_make_tie_breaking_independent_of_image_order():
    rng = np.random.default_rng(7)
    images = random_images(rng, 6, 4)
    for image in images:
        image.scores[:] = 0.5  # every prediction tied
    preds, target = to_metric_inputs(images)
    for i, t in enumerate(target):
        t["image_id"] = f"img{i}"
    forward = evaluate_parsing(preds, target, 4)
    backward = evaluate_parsing(preds[::-1], target[::-1], 4)
    assert forward == backward


def test_ties_follow_arrival_order_without_ids():
    """Without ids, tied scores across images are visited in arrival order (the reference's rule)."""
    gt = _person()[None]
    miss = _person(value=2, rows=slice(4, 8))[None]
    empty = torch.zeros(0, 8, 8, dtype=torch.uint8)
    hit_first = [{"parsing": gt.clone(), "scores": torch.tensor([0.5])},
                 {"parsing": miss, "scores": torch.tensor([0.5])}]  # fmt: skip
    target = [{"parsing": gt}, {"parsing": empty}]
    assert evaluate_parsing(hit_first, target, 3)["APp50"] == 1.0
    assert evaluate_parsing(hit_first[::-1], target[::-1], 3)["APp50"] == 0.5
    images = [ReferenceImage(p["parsing"].numpy(), p["scores"].double().numpy(), t["parsing"].numpy())
              for p, t in zip(hit_first[::-1], target[::-1])]  # fmt: skip
    assert reference_metrics(images, 3)["APp50"] == 0.5


def test_voc_average_precision_equals_the_loop_version():
    rng = np.random.default_rng(5)
    for _ in range(50):
        num_det, num_gt = int(rng.integers(1, 30)), int(rng.integers(1, 20))
        flags = torch.from_numpy(rng.random((num_det, 3)) < 0.4)
        ap = voc_average_precision(flags, num_gt)
        for t in range(3):
            tp = flags[:, t].numpy().astype(np.float64)
            cum_tp, cum_fp = np.cumsum(tp), np.cumsum(1 - tp)
            expected = voc_ap(list(cum_tp / num_gt), list(cum_tp / (cum_tp + cum_fp)))
            assert abs(ap[t].item() - expected) <= 1e-12


def test_match_image_equals_the_greedy_loop():
    rng = np.random.default_rng(9)
    thresholds = torch.tensor([0.1, 0.3, 0.5, 0.7], dtype=torch.float64)
    for _ in range(40):
        num_pred, num_gt, num_classes = int(rng.integers(1, 7)), int(rng.integers(1, 4)), 5
        class_iou = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], size=(num_pred, num_gt, num_classes))
        class_iou[rng.random(class_iou.shape) < 0.3] = np.nan
        class_iou[..., 0] = rng.random((num_pred, num_gt))  # background is always present
        gt_hist = torch.from_numpy(rng.integers(0, 3, (num_gt, num_classes)))
        gt_hist[:, 1] += 1  # every GT has a part
        scores = rng.choice([0.2, 0.5, 0.9], size=num_pred)
        tp, pcp = match_image(
            torch.from_numpy(scores), torch.from_numpy(class_iou), gt_hist, thresholds
        )
        order = sorted(range(num_pred), key=lambda p: (-scores[p], p))
        for t, thr in enumerate(thresholds.tolist()):
            taken = set()
            for p in order:
                means = [np.nanmean(class_iou[p, g]) for g in range(num_gt)]
                best = int(np.argmax(means))
                hit = means[best] > thr + 1e-12 and best not in taken
                assert bool(tp[p, t]) == hit
                if hit:
                    taken.add(best)
                    parts = [c for c in range(1, num_classes) if gt_hist[best, c] > 0]
                    passed = sum(1 for c in parts if class_iou[p, best, c] > thr)
                    assert pcp[p, t].item() == passed / len(parts)
                else:
                    assert pcp[p, t].item() == 0.0


def test_missing_keys_are_named():
    with pytest.raises(ValueError, match=r"image 0 of the batch: missing preds\['scores'\]"):
        ParsingMetrics(3).update([{"parsing": _person()[None]}], [{"parsing": _person()[None]}])
