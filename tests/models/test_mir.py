"""MIR: mask boxes, RoI classification of masks, relabelling, semantic targets."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from smp_parsing.models.heads.mir import MIRHead, mask_boxes, semantic_targets


def _boxes_loop(masks: torch.Tensor) -> torch.Tensor:
    out = []
    for m in masks:
        ys, xs = torch.nonzero(m > 0.5, as_tuple=True)
        if len(xs) == 0:
            out.append([0.0, 0.0, float(m.shape[1]), float(m.shape[0])])
        else:
            out.append([xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1])
    return torch.tensor(out, dtype=torch.float)


def test_mask_boxes_equal_a_loop():
    torch.manual_seed(0)
    masks = (torch.rand(6, 9, 11) > 0.9).float()
    masks[2] = 0  # empty
    masks[3] = 0
    masks[3, 4, 5] = 1  # single pixel
    torch.testing.assert_close(mask_boxes(masks), _boxes_loop(masks))


def _head(**kw):
    args = dict(num_classes=5, in_channels=8, feat_channels=8, num_convs=1, roi_size=7,
                fc_channels=16, num_groups=4)  # fmt: skip
    args.update(kw)
    return MIRHead(**args)


def test_mir_shapes_and_empty_roi_set():
    head = _head()
    feat, sem = head.features(torch.randn(2, 8, 12, 16))
    assert feat.shape == (2, 8, 12, 16) and sem.shape == (2, 6, 12, 16)
    masks = torch.zeros(3, 12, 16)
    masks[0, 2:6, 3:9] = 1
    masks[1, :, :] = 0.7
    logits = head.classify(feat, masks, torch.tensor([0, 1, 1]))
    assert logits.shape == (3, 5) and torch.isfinite(logits).all()
    assert head.classify(feat, masks[:0], torch.zeros(0, dtype=torch.long)).shape == (0, 5)


def test_mir_roi_depends_only_on_the_masked_region_and_its_image():
    torch.manual_seed(0)
    head = _head().eval()
    feat = torch.randn(2, 8, 12, 16)
    mask = torch.zeros(1, 12, 16)
    mask[0, 2:8, 4:12] = 1
    a = head.classify(feat, mask, torch.tensor([0]))
    changed = feat.clone()
    changed[1] += 5.0  # other image
    changed[0, :, 10:, :] += 5.0  # outside the box (rows 10-11, box ends at 8)
    b = head.classify(changed, mask, torch.tensor([0]))
    torch.testing.assert_close(a, b)
    changed[0, :, 3, 5] += 5.0  # inside the mask
    assert not torch.allclose(a, head.classify(changed, mask, torch.tensor([0])))


def test_semantic_targets_paint_part_labels_per_image():
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, :2, :2] = True
    masks[1, 2:, 2:] = True
    masks[2, 1:3, 1:3] = True
    parts = SimpleNamespace(
        masks=masks, labels=torch.tensor([2, 5, 3]), batch_idx=torch.tensor([0, 0, 1])
    )
    inst = SimpleNamespace(parts=parts, batch_size=3)
    sem = semantic_targets(SimpleNamespace(instances=inst), (4, 4))
    expected = torch.zeros(3, 4, 4, dtype=torch.long)  # image 2 has no person
    expected[0, :2, :2] = 2
    expected[0, 2:, 2:] = 5
    expected[1, 1:3, 1:3] = 3
    assert torch.equal(sem, expected)
