"""The built-in center, part and offset heads on the head protocol (``models/heads/base.py``).

Each brings its targets (``build_targets(parsing_list, instances)``) and its terms of eq. 2
(``loss(output, targets)``), with the settings SMP hands them from ``conf/model/net/smp.yaml``;
``SMP.loss`` loops over the heads and gives what the pure chain (``build_smp_targets`` +
``smp_losses``) gives, bit for bit.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hydra.utils import instantiate
from torch import Tensor

from smp_parsing.models.heads.base import SMPHead
from smp_parsing.models.heads.part_head import PartLossInput
from smp_parsing.models.losses import smp_losses
from smp_parsing.models.targets import build_smp_targets

# Settings away from the paper's, so that a setting handed to the wrong head (or not at all) shows.
LOSS = {
    "center_weight": 2.0,
    "part_weight": 3.0,
    "mask_weight": 5.0,
    "offset_weight": 7.0,
    "focal_alpha": 0.3,
    "focal_gamma": 1.5,
    "offset_beta": 0.2,
    "dice_eps": 0.01,
}


def _tiny_net(**changes):
    from conftest import tiny_net_config

    torch.manual_seed(0)
    return instantiate(tiny_net_config(num_classes=5, **changes))


def _batch():
    from conftest import tiny_parsing_batch

    return tiny_parsing_batch()


def _assert_same(a, b, where: str = "targets") -> None:
    """Dataclasses of tensors (nested) equal field by field, bit for bit."""
    if dataclasses.is_dataclass(a):
        for field in dataclasses.fields(a):
            _assert_same(getattr(a, field.name), getattr(b, field.name), f"{where}.{field.name}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b, where


def test_builtin_heads_follow_the_head_protocol():
    net = _tiny_net()
    for head in (net.center_head, net.part_head, net.offset_head):
        assert isinstance(head, SMPHead), type(head).__name__
    assert list(net.loss_heads(net(torch.randn(1, 3, 64, 64)))) == ["center", "part", "offset"]


def test_heads_get_their_settings_and_match_the_pure_chain():
    net = _tiny_net(loss=LOSS, epsilon=0.25).train()
    assert net.center_head.loss_weight == 2.0 and net.offset_head.beta == 0.2
    assert net.part_head.mask_weight == 5.0 and net.part_head.dice_eps == 0.01
    assert net.center_head.grid == net.offset_head.grid == net.center_grid == 12
    images, parsing = _batch()
    out = net(images)
    losses = net.loss(out, parsing)

    expected_targets = build_smp_targets(
        parsing,
        num_classes=5,
        center_grid=12,
        part_grids=[12, 10, 8, 6, 4],
        scale_ranges=net.scale_ranges,
        epsilon=0.25,
    )
    targets = net.build_targets(parsing)
    _assert_same(targets, expected_targets)
    assert targets.parts.pos_batch.numel() > 0 and targets.center.num_pos > 0
    expected = smp_losses(out, expected_targets, **LOSS)
    for key in ("loss_center", "loss_part", "loss_mask", "loss_offset", "loss"):
        assert torch.equal(losses[key], expected[key]), key

    # each head's terms are reached through the head itself
    part_terms = net.part_head.loss(
        PartLossInput(out.cate, out.kernels, out.mask_feat), targets.parts
    )
    assert torch.equal(part_terms["loss_mask"], losses["loss_mask"])
    assert torch.equal(
        net.center_head.loss(out.center, targets.center)["loss_center"], losses["loss_center"]
    )
    # F_mask is trained through the part head's Dice term
    part_terms["loss_mask"].backward()
    grads = [p.grad for p in net.mask_feature.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_unknown_loss_setting_is_refused():
    with pytest.raises(Exception, match="unknown settings"):
        _tiny_net(loss={**LOSS, "centre_weight": 1.0})
