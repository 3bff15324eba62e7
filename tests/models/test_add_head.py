"""The "add a head" walk-through (DEVELOPERS.md), followed on a toy per-pixel foreground head.

1. The head: an ``nn.Module`` on the FPN levels P2..P6 (built with ``in_channels``) that brings
   its targets (``build_targets(parsing_list, instances)``) and its loss terms (``loss(output,
   targets)`` -> ``{"loss_<what>": weighted 0-dim tensor}``), see ``models/heads/base.py``;
   optionally a decode hook (``decode(output, preds, metas)``) that adds its keys to each
   image's prediction, and a ``built`` parameter of ``build_targets`` to read the targets of
   the heads before it.
2. Its config entry: ``model.net.extra_heads.<name>`` = the head's partial.
3. ``SMP`` wires it: output in ``SMPOutputs.extra[<name>]``, terms in ``net.loss`` (summed into
   ``loss``, logged as ``train/loss_<what>``), its keys in ``net.predict``. No other file changes.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch import Tensor, nn

from smp_parsing.models.heads.base import SMPHead
from smp_parsing.models.targets.instances import BatchInstances


# Step 1: the head, its targets and its loss term.
class ForegroundHead(nn.Module):
    """Per-pixel person foreground at the stride of P2 (4): one 1x1 conv, BCE loss.

    Shapes: P2 ``(B, in_channels, H/4, W/4)`` -> logits ``(B, 1, H/4, W/4)``.
    """

    def __init__(self, *, in_channels: int, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 1, 1)
        self.loss_weight = loss_weight

    def forward(self, feats: list[Tensor]) -> Tensor:
        return self.conv(feats[0])

    def build_targets(self, parsing_list: list[Tensor], instances: BatchInstances) -> Tensor:
        """``(B, H/4, W/4)`` float: 1 where any person of the image is (the union of its masks)."""
        persons = instances.persons
        h, w = persons.masks.shape[-2:]
        union = torch.zeros(instances.batch_size, h * w, device=persons.masks.device)
        union.index_add_(0, persons.batch_idx, persons.masks.flatten(1).float())
        return (union > 0).float().view(-1, h, w)

    def loss(self, output: Tensor, targets: Tensor) -> dict[str, Tensor]:
        h, w = targets.shape[-2:]
        bce = F.binary_cross_entropy_with_logits(output[:, 0, :h, :w].float(), targets)
        return {"loss_foreground": self.loss_weight * bce}

    # Optional: the decode hook.
    def decode(self, output: Tensor, preds: list[dict], metas: list[dict]) -> list[dict]:
        """Adds ``"foreground"``: ``(H0, W0)`` probability at the original size (the image's
        content, ``img_size`` at stride 4, resized as the parsing maps are)."""
        out = []
        for logits, pred, meta in zip(output, preds, metas):
            h, w = (-(-s // 4) for s in meta["img_size"])
            prob = logits[:, :h, :w].sigmoid()[None]
            prob = F.interpolate(prob, size=tuple(meta["ori_size"]), mode="bilinear")[0, 0]
            out.append({**pred, "foreground": prob})
        return out


class TargetsOfEarlierHeads(nn.Module):
    """A head whose targets read those of the heads before it (``build_targets``'s ``built``):
    the center heatmap, as a per-image count of human-center cells."""

    def __init__(self, *, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 1, 1)
        self.seen: list[str] = []

    def forward(self, feats: list[Tensor]) -> Tensor:
        return self.conv(feats[-1]).mean((1, 2, 3))  # (B,)

    def build_targets(self, parsing_list, instances, built) -> Tensor:
        self.seen = list(built)
        return (built["center"].heatmap == 1).flatten(1).sum(1).float()

    def loss(self, output: Tensor, targets: Tensor) -> dict[str, Tensor]:
        return {"loss_count": F.mse_loss(output.float(), targets)}


# Step 2: the config entry.
HEAD_OVERRIDE = (
    f"+model.net.extra_heads.foreground={{_target_:{__name__}.ForegroundHead,"
    "_partial_:true,loss_weight:2.0}"
)


def _tiny_net(**changes):
    from conftest import tiny_net_config

    cfg = tiny_net_config(num_classes=5, **changes)
    torch.manual_seed(0)
    return instantiate(cfg)


def test_extra_head_brings_its_output_targets_and_loss_term():
    head_cfg = {"_target_": f"{__name__}.ForegroundHead", "_partial_": True, "loss_weight": 2.0}
    net = _tiny_net(extra_heads={"foreground": head_cfg})
    plain = _tiny_net()
    assert isinstance(net.extra_heads["foreground"], SMPHead)
    images = torch.randn(2, 3, 64, 64)
    parsing = [torch.zeros(1, 64, 64, dtype=torch.uint8), torch.zeros(2, 64, 64, dtype=torch.uint8)]
    parsing[0][0, 8:40, 8:24] = 1
    parsing[1][0, 4:20, 30:60] = 2
    parsing[1][1, 40:64, 0:16] = 3

    out = net(images)
    assert out.extra["foreground"].shape == (2, 1, 16, 16)
    assert out.apply(torch.Tensor.double).extra["foreground"].dtype == torch.float64
    losses = net.loss(out, parsing)
    assert set(losses) == set(plain.loss(plain(images), parsing)) | {"loss_foreground"}
    assert torch.allclose(losses["loss"], sum(v for k, v in losses.items() if k != "loss"))
    # the target is the union of the persons at the stride of F_mask
    targets = net.extra_heads["foreground"].build_targets(
        parsing, net.build_targets(parsing).instances
    )
    # sampled at the centre pixel of every 4 x 4 block, as the part masks
    expected = torch.stack([(p > 0).any(0).float() for p in parsing])[:, 2::4, 2::4]
    assert targets.sum() > 0 and torch.equal(targets, expected)
    losses["loss"].backward()
    assert net.extra_heads["foreground"].conv.weight.grad.abs().sum() > 0


def test_extra_head_decode_adds_its_key_to_the_predictions():
    head_cfg = {"_target_": f"{__name__}.ForegroundHead", "_partial_": True}
    net = _tiny_net(extra_heads={"foreground": head_cfg}).eval()
    plain = _tiny_net().eval()  # same weights: the extra head is built last
    metas = [
        {"img_size": (64, 48), "ori_size": (128, 96)},
        {"img_size": (64, 64), "ori_size": (64, 64)},
    ]
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out, plain_out = net(images), plain(images)
        for o in (out, plain_out):  # confident maps, so that persons are decoded
            torch.manual_seed(3)
            o.center = torch.randn_like(o.center) * 3
            o.cate = [torch.randn_like(c) * 3 for c in o.cate]
        preds, plain_preds = net.predict(out, metas), plain.predict(plain_out, metas)
    for pred, ref, meta, logits in zip(preds, plain_preds, metas, out.extra["foreground"]):
        assert set(pred) == set(ref) | {"foreground"}
        assert pred["foreground"].shape == meta["ori_size"]
        h, w = meta["img_size"][0] // 4, meta["img_size"][1] // 4  # multiples of 4 here
        prob = logits[:, :h, :w].sigmoid()[None]
        expected = F.interpolate(prob, size=meta["ori_size"], mode="bilinear")[0, 0]
        assert torch.equal(pred["foreground"], expected)
        # the built-in keys are untouched by the hook
        assert torch.equal(pred["parsing"], ref["parsing"])
        assert torch.equal(pred["scores"], ref["scores"])
    assert sum(p["parsing"].shape[0] for p in preds) > 0


def test_extra_head_reads_the_targets_of_the_heads_before_it():
    head_cfg = {"_target_": f"{__name__}.TargetsOfEarlierHeads", "_partial_": True}
    fg_cfg = {"_target_": f"{__name__}.ForegroundHead", "_partial_": True}
    net = _tiny_net(extra_heads={"foreground": fg_cfg, "count": head_cfg})
    parsing = [torch.zeros(1, 64, 64, dtype=torch.uint8), torch.zeros(0, 64, 64, dtype=torch.uint8)]
    parsing[0][0, 8:40, 8:24] = 1
    losses = net.loss(net(torch.randn(2, 3, 64, 64)), parsing)
    assert net.extra_heads["count"].seen == ["center", "part", "offset", "foreground"]
    assert list(losses)[-3:] == ["loss_foreground", "loss_count", "loss"]
    counts = net.extra_heads["count"].build_targets(
        parsing, None, {"center": net.build_targets(parsing).center}
    )
    assert counts[0] > 0 and counts[1] == 0


def test_extra_head_without_targets_or_loss_is_refused():
    with pytest.raises(InstantiationException, match="Identity must be .* build_targets"):
        _tiny_net(extra_heads={"bad": {"_target_": "torch.nn.Identity", "_partial_": True}})


def test_toy_head_registered_in_config_and_trained_two_steps(synthetic_root, tmp_path):
    from conftest import compose_config, tiny_train_overrides
    from smp_parsing.train import train

    cfg = compose_config("train", tiny_train_overrides(synthetic_root, HEAD_OVERRIDE), tmp_path)
    assert cfg.model.net.extra_heads.foreground.loss_weight == 2.0
    metric_dict, objects = train(cfg)
    assert objects["trainer"].global_step == 2
    assert isinstance(objects["model"].net.extra_heads["foreground"], ForegroundHead)
    assert torch.isfinite(torch.as_tensor(metric_dict["train/loss_foreground"]))
    assert torch.isfinite(torch.as_tensor(metric_dict["train/loss"]))
