"""MIR: mask boxes, RoI classification of masks, relabelling, semantic targets."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
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
    sem = semantic_targets(inst, (4, 4))
    expected = torch.zeros(3, 4, 4, dtype=torch.long)  # image 2 has no person
    expected[0, :2, :2] = 2
    expected[0, 2:, 2:] = 5
    expected[1, 1:3, 1:3] = 3
    assert torch.equal(sem, expected)


# ---------------------------------------------------------------- MIR on the head protocol
# Settings away from the defaults, so that one not handed to the head (or handed wrongly) shows.
MIR_LOSS = {"weight": 2.0, "semantic_weight": 0.5, "focal_alpha": 0.3, "focal_gamma": 1.5,
            "max_rois": 3}  # fmt: skip


def _tiny_mir_net(**changes):
    from hydra.utils import instantiate

    from conftest import tiny_net_config

    torch.manual_seed(0)
    return instantiate(tiny_net_config(num_classes=5, mir=True, **changes))


def _batch():
    from conftest import tiny_parsing_batch

    return tiny_parsing_batch()


def _reference_mir_loss(head: MIRHead, out, targets, *, weight, semantic_weight, focal_alpha,
                        focal_gamma, max_rois) -> torch.Tensor:  # fmt: skip
    """MIR's loss as ``SMP.mir_loss`` computed it before MIR was on the head protocol."""
    from torchvision.ops import sigmoid_focal_loss

    from smp_parsing.models.losses import positive_mask_logits

    parts = targets.parts
    idx = torch.arange(parts.pos_batch.numel())
    if idx.numel() > max_rois:
        idx = idx[torch.randperm(idx.numel())[:max_rois]]
    with torch.no_grad():
        masks = positive_mask_logits(out.kernels, out.mask_feat, parts.pos_batch[idx],
                                     parts.pos_level[idx], parts.pos_cell[idx]).sigmoid()  # fmt: skip
    logits = head.classify(out.mir_feat, masks, parts.pos_batch[idx]).float()
    labels = targets.instances.parts.labels[parts.pos_instance[idx]] - 1
    onehot = (labels[:, None] == torch.arange(head.num_classes)).float()
    cls = sigmoid_focal_loss(logits, onehot, alpha=focal_alpha, gamma=focal_gamma,
                             reduction="sum") / max(int(idx.numel()), 1)  # fmt: skip
    cls = cls + sum(p.sum() * 0 for p in head.parameters())
    semantic = semantic_targets(targets.instances, out.mir_semantic.shape[-2:])
    sem = torch.nn.functional.cross_entropy(out.mir_semantic.float(), semantic)
    return weight * cls + semantic_weight * sem


def test_mir_is_a_head_on_the_protocol_with_its_settings_from_the_config():
    from smp_parsing.models.heads.base import DecodingHead, SMPHead, wants_built_targets

    net = _tiny_mir_net(mir_loss=MIR_LOSS, **{"test_cfg.mir_score_thr": 0.3})
    head = net.mir_head
    assert isinstance(head, SMPHead) and isinstance(head, DecodingHead)
    assert wants_built_targets(head) and not wants_built_targets(net.part_head)
    assert (head.loss_weight, head.semantic_weight, head.focal_alpha, head.focal_gamma,
            head.max_rois) == (2.0, 0.5, 0.3, 1.5, 3)  # fmt: skip
    assert head.mask_stride == 4 and head.score_thr == net.mir_score_thr == 0.3
    net.mir_score_thr = 0.7  # one threshold: SMP's is the head's
    assert head.score_thr == 0.7
    out = net(torch.randn(1, 3, 64, 64))
    assert list(net.loss_heads(out)) == ["center", "part", "offset", "mir"]
    with pytest.raises(Exception, match="unknown settings"):
        _tiny_mir_net(mir_loss={**MIR_LOSS, "wieght": 1.0})


def test_mir_loss_through_the_protocol_equals_the_former_mir_loss():
    """``loss_mir`` (sampled RoIs included) and the order of the summed terms, bit for bit."""
    net = _tiny_mir_net(mir_loss=MIR_LOSS).train()
    images, parsing = _batch()
    out = net(images)
    torch.manual_seed(7)
    losses = net.loss(out, parsing)
    keys = ["loss_center", "loss_part", "loss_mask", "loss_offset", "loss_mir", "loss"]
    assert list(losses) == keys
    targets = net.build_targets(parsing)
    assert targets.parts.pos_batch.numel() > MIR_LOSS["max_rois"]  # the sampling is exercised
    torch.manual_seed(7)
    expected = _reference_mir_loss(net.mir_head, out, targets, **MIR_LOSS)
    assert torch.equal(losses["loss_mir"], expected)
    total = losses["loss_center"]
    for key in keys[1:-1]:
        total = total + losses[key]
    assert torch.equal(losses["loss"], total)
    # the RoIs are sampled: another seed, other RoIs, another term
    torch.manual_seed(8)
    assert not torch.equal(net.loss(out, parsing)["loss_mir"], losses["loss_mir"])


def test_mir_targets_are_the_part_heads_positive_cells():
    net = _tiny_mir_net()  # max_rois 512: every positive cell
    _, parsing = _batch()
    targets = net.build_targets(parsing)
    built = {"center": targets.center, "part": targets.parts, "offset": targets.offsets}
    mir = net.mir_head.build_targets(parsing, targets.instances, built)
    parts = targets.parts
    assert torch.equal(mir.batch_idx, parts.pos_batch) and torch.equal(mir.cell, parts.pos_cell)
    assert torch.equal(mir.level, parts.pos_level)
    assert torch.equal(mir.labels, targets.instances.parts.labels[parts.pos_instance] - 1)
    assert torch.equal(mir.semantic, semantic_targets(targets.instances, (16, 16)))


def test_predict_relabels_through_mirs_decode_hook():
    """``predict`` = the built-in decode, then MIR's relabelling of each image (as before)."""
    from smp_parsing.models.decode import decode_parsing

    thresholds = {f"test_cfg.{k}": 0.0 for k in ("ctr_score_thr", "cate_score_thr",
                                                 "update_thr", "cand_score_thr", "mir_score_thr")}  # fmt: skip
    net = _tiny_mir_net(**thresholds).eval()
    metas = [{"img_size": (64, 64), "ori_size": (96, 96)}] * 2
    with torch.no_grad():
        out = net(_batch()[0])
        # confident random maps: a fresh network emits no person
        torch.manual_seed(3)
        out.center = torch.randn_like(out.center) * 3
        out.cate = [torch.randn_like(c) * 3 for c in out.cate]
        out.kernels = [torch.randn_like(k) for k in out.kernels]
        out.mask_feat = torch.randn_like(out.mask_feat)
        preds = net.predict(out, metas)
        plain = decode_parsing(out, metas, strides=net.strides, mask_stride=4, **net.test_cfg)
        expected = [net.mir_relabel(out.mir_feat[i : i + 1], p, m)
                    for i, (p, m) in enumerate(zip(plain, metas))]  # fmt: skip
    assert sum(p["parsing"].shape[0] for p in preds) > 0
    assert any(not torch.equal(p["parsing"], q["parsing"]) for p, q in zip(preds, plain))
    for p, q in zip(preds, expected):
        assert torch.equal(p["parsing"], q["parsing"]) and torch.equal(p["scores"], q["scores"])
