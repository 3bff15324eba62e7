"""SMP losses: formulas against loops, zero positives, gradients, weights."""

from __future__ import annotations

import math

import torch

from smp_parsing.models.losses import (
    dice_loss,
    focal_loss,
    offset_loss,
    part_category_loss,
    positive_mask_logits,
    smp_losses,
)
from smp_parsing.models.outputs import SMPOutputs
from smp_parsing.models.targets import build_smp_targets

GRIDS = (12, 8)
SCALE_RANGES = ((1, 32), (16, 128))
NUM_CLASSES = 5
WEIGHTS = {"center_weight": 1.0, "part_weight": 1.0, "mask_weight": 3.0, "offset_weight": 10.0}


def scalar_focal(logit: float, target: float, alpha=0.25, gamma=2.0) -> float:
    p = 1 / (1 + math.exp(-logit))
    if target:
        return -alpha * (1 - p) ** gamma * math.log(p)
    return -(1 - alpha) * p**gamma * math.log(1 - p)


def test_focal_loss_matches_scalar_formula():
    logits = torch.tensor([[-2.0, 0.5], [1.5, 3.0]])
    targets = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    want = sum(
        scalar_focal(x, t) for x, t in zip(logits.flatten().tolist(), targets.flatten().tolist())
    )
    got = focal_loss(logits, targets, torch.tensor(2))
    torch.testing.assert_close(got, torch.tensor(want / 3))


def test_part_category_loss_one_hot_over_levels():
    generator = torch.Generator().manual_seed(0)
    logits = [torch.randn(2, 4, s, s, generator=generator) for s in GRIDS]
    labels = [
        torch.randint(0, 5, (2, s, s), generator=generator)
        * (torch.rand(2, s, s, generator=generator) < 0.1)
        for s in GRIDS
    ]
    total, num_pos = 0.0, 0
    for lg, lab in zip(logits, labels):
        for b in range(2):
            for y in range(lab.shape[1]):
                for x in range(lab.shape[2]):
                    num_pos += int(lab[b, y, x] > 0)
                    for c in range(4):
                        total += scalar_focal(lg[b, c, y, x].item(), float(lab[b, y, x] == c + 1))
    got = part_category_loss(logits, labels, alpha=0.25, gamma=2.0)
    torch.testing.assert_close(got, torch.tensor(total / (num_pos + 1)), rtol=1e-4, atol=1e-5)


def test_dice_loss_matches_loop_and_empty():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 5, 6, generator=generator)
    targets = torch.rand(3, 5, 6, generator=generator) > 0.5
    want = []
    for k in range(3):
        p = torch.sigmoid(logits[k]).flatten().tolist()
        t = targets[k].float().flatten().tolist()
        inter = sum(a * b for a, b in zip(p, t))
        want.append(1 - 2 * inter / (sum(a * a for a in p) + sum(b * b for b in t) + 0.002))
    torch.testing.assert_close(dice_loss(logits, targets), torch.tensor(sum(want) / 3))
    empty = torch.zeros(0, 5, 6, requires_grad=True)
    loss = dice_loss(empty, torch.zeros(0, 5, 6, dtype=torch.bool))
    assert torch.isfinite(loss) and loss == 0
    loss.backward()


def test_offset_loss_weighted_and_normalised():
    pred = torch.zeros(1, 2, 2, 3, 3, requires_grad=True)
    target = torch.zeros(1, 2, 2, 3, 3)
    target[0, 1, :, 1, 1] = torch.tensor([2.0, 0.05])
    weights = torch.zeros(1, 2, 3, 3)
    weights[0, 1, 1, 1] = 0.5
    weights[0, 0, 0, 0] = 0.25  # weighted entry with zero error
    beta = 1 / 9
    smooth = (2.0 - 0.5 * beta) + 0.5 * 0.05**2 / beta
    want = 0.5 * smooth / 4  # two weighted cells x (dx, dy)
    got = offset_loss(pred, target, weights, beta=beta)
    torch.testing.assert_close(got, torch.tensor(want))
    zero = offset_loss(pred, target, torch.zeros_like(weights))
    assert zero == 0
    zero.backward()
    assert pred.grad is not None


def test_positive_mask_logits_matches_per_positive_loop():
    generator = torch.Generator().manual_seed(2)
    kernels = [torch.randn(3, 6, s, s, generator=generator) for s in GRIDS]
    mask_feat = torch.randn(3, 6, 5, 7, generator=generator)
    pos_batch = torch.tensor([2, 0, 2, 0, 2])  # image 1 has none
    pos_level = torch.tensor([0, 0, 1, 1, 1])
    pos_cell = torch.tensor([5, 143, 0, 63, 10])
    got = positive_mask_logits(kernels, mask_feat, pos_batch, pos_level, pos_cell)
    for k in range(5):
        b, lvl, cell = int(pos_batch[k]), int(pos_level[k]), int(pos_cell[k])
        s = GRIDS[lvl]
        kernel = kernels[lvl][b, :, cell // s, cell % s]
        want = torch.einsum("c,chw->hw", kernel, mask_feat[b])
        torch.testing.assert_close(got[k], want, rtol=1e-5, atol=1e-5)
    none = positive_mask_logits(
        kernels, mask_feat, *(torch.zeros(0, dtype=torch.long) for _ in range(3))
    )
    assert none.shape == (0, 5, 7)


def fake_outputs(batch: int, height: int, width: int, generator) -> SMPOutputs:
    c_p, c_k, s_c = NUM_CLASSES - 1, 8, 10
    tensors = SMPOutputs(
        center=torch.randn(batch, 1, s_c, s_c, generator=generator),
        offsets=torch.randn(batch, c_p, 2, s_c, s_c, generator=generator),
        cate=[torch.randn(batch, c_p, s, s, generator=generator) for s in GRIDS],
        kernels=[torch.randn(batch, c_k, s, s, generator=generator) for s in GRIDS],
        mask_feat=torch.randn(batch, c_k, height // 4, width // 4, generator=generator),
    )
    for t in [tensors.center, tensors.offsets, tensors.mask_feat, *tensors.cate, *tensors.kernels]:
        t.requires_grad_(True)
    return tensors


def leaves(out: SMPOutputs):
    return [out.center, out.offsets, out.mask_feat, *out.cate, *out.kernels]


def targets_for(maps):
    return build_smp_targets(
        maps,
        num_classes=NUM_CLASSES,
        center_grid=10,
        part_grids=GRIDS,
        scale_ranges=SCALE_RANGES,
        epsilon=0.2,
    )


def test_smp_losses_with_people_and_weights():
    generator = torch.Generator().manual_seed(3)
    person = torch.zeros(2, 32, 48, dtype=torch.uint8)
    person[0, 4:16, 4:20] = 1
    person[0, 16:30, 4:20] = 2
    person[1, 8:28, 28:44] = 3
    maps = [person, torch.zeros(0, 32, 48, dtype=torch.uint8)]  # half-empty batch
    out = fake_outputs(2, 32, 48, generator)
    targets = targets_for(maps)
    losses = smp_losses(out, targets, **WEIGHTS)
    assert set(losses) == {"loss_center", "loss_part", "loss_mask", "loss_offset", "loss"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    torch.testing.assert_close(losses["loss"], sum(v for k, v in losses.items() if k != "loss"))
    doubled = smp_losses(out, targets, **{k: 2 * v for k, v in WEIGHTS.items()})
    torch.testing.assert_close(doubled["loss"], 2 * losses["loss"])
    losses["loss"].backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in leaves(out))
    assert out.offsets.grad.abs().sum() > 0 and out.mask_feat.grad.abs().sum() > 0


def test_smp_losses_without_any_person_are_finite_with_gradients():
    generator = torch.Generator().manual_seed(4)
    maps = [torch.zeros(0, 32, 48, dtype=torch.uint8), torch.zeros(2, 32, 48, dtype=torch.uint8)]
    out = fake_outputs(2, 32, 48, generator)
    losses = smp_losses(out, targets_for(maps), **WEIGHTS)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_mask"] == 0 and losses["loss_offset"] == 0
    assert losses["loss_center"] > 0  # all-negative focal still trains the heatmap
    losses["loss"].backward()
    for t in leaves(out):
        assert t.grad is not None and torch.isfinite(t.grad).all()
    assert out.kernels[0].grad.abs().sum() == 0  # connected, zero gradient
