"""Winograd F(m x m, 3 x 3) convolution: equals F.conv2d, converts only eligible layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from benchmarks.common import TINY_OVERRIDES, build_smp
from torch import nn

from smp_parsing.models.deploy.winograd import (
    WinogradConv2d,
    convert_to_winograd,
    is_winograd_eligible,
    transform_weight,
    winograd_conv2d,
)
from smp_parsing.models.layers.dcn import ModulatedDeformConv2d


def _reference(x, weight, bias, padding):
    out = F.conv2d(x.double(), weight.double(), None if bias is None else bias.double(),
                   padding=padding)  # fmt: skip
    return out.float()


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize(
    ("batch", "size", "padding", "use_bias", "channels_last"),
    [
        (1, (13, 17), 1, True, False),  # odd sizes: partial tiles at both edges
        (2, (9, 7), 1, False, True),  # batch > 1, channels_last input
        (1, (8, 12), 1, False, False),  # whole tiles, no bias: no crop copy
        (2, (11, 6), 0, True, True),  # valid convolution
    ],
)
def test_winograd_conv2d_equals_conv2d(tile, batch, size, padding, use_bias, channels_last):
    gen = torch.Generator().manual_seed(0)
    cin, cout = 12, 10
    x = torch.randn(batch, cin, *size, generator=gen).relu()  # post-ReLU-like activations
    weight = torch.randn(cout, cin, 3, 3, generator=gen) / (9 * cin) ** 0.5
    bias = torch.randn(cout, generator=gen) if use_bias else None
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = winograd_conv2d(x, transform_weight(weight, tile), bias, tile=tile, padding=padding)
    expected = _reference(x, weight, bias, padding)
    assert out.shape == expected.shape
    # same memory format out as in (the next layer sees the layout it was given)
    assert out.is_contiguous(memory_format=torch.channels_last) is channels_last
    assert out.is_contiguous() is (not channels_last)
    scale = expected.abs().max()
    assert (out - expected).abs().max() <= (1e-5 if tile == 4 else 1e-6) * scale


def test_winograd_error_on_realistic_activations_stays_small():
    """F(4x4, 3x3) at a tower width: max error ~1e-5 of the output scale (fp32)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 256, 20, 20, generator=gen).relu()
    weight = torch.randn(128, 256, 3, 3, generator=gen) * 0.01  # SOLOv2 init std
    out = winograd_conv2d(x, transform_weight(weight, 4), None, tile=4)
    expected = _reference(x, weight, None, 1)
    assert ((out - expected).abs().max() / expected.abs().max()).item() < 1e-4


def test_module_matches_conv_and_falls_back_for_autograd():
    conv = nn.Conv2d(8, 6, 3, padding=1).eval()
    wino = WinogradConv2d(conv).eval()
    assert set(wino.state_dict()) == set(conv.state_dict())  # u is not persistent
    x = torch.randn(2, 8, 10, 11)
    with torch.no_grad():
        torch.testing.assert_close(wino(x), conv(x), atol=1e-5, rtol=1e-4)
    x.requires_grad_(True)
    wino(x).sum().backward()  # F.conv2d path: gradients flow
    assert x.grad is not None
    with pytest.raises(RuntimeError, match="inference only"):
        wino.train()(x)


def test_convert_swaps_only_eligible_convs():
    net = nn.Sequential(
        nn.Conv2d(8, 8, 3, padding=1),  # eligible
        nn.Conv2d(8, 8, 3, padding=1, bias=False),  # eligible
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.Conv2d(8, 8, 3, padding=1, groups=2),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2),
        nn.Conv2d(8, 8, 1),
        ModulatedDeformConv2d.from_conv(nn.Conv2d(8, 8, 3, padding=1)),
        nn.Conv2d(8, 4, 3, padding=1),  # below min_channels
    )
    with pytest.raises(RuntimeError, match="eval mode"):
        convert_to_winograd(net.train(), min_channels=8)
    kinds = [type(m) for m in net]
    # the two plain convs + the DCN's offset-predicting conv (a plain 8 -> 27 3x3 conv)
    assert convert_to_winograd(net.eval(), min_channels=8) == 3
    assert [type(m) for m in net[:2]] == [WinogradConv2d] * 2
    assert [type(m) for m in net[2:]] == kinds[2:]  # the deformable conv itself stays
    assert type(net[6].conv_offset) is WinogradConv2d
    assert not is_winograd_eligible(nn.Conv2d(64, 27, 3, padding=1), min_channels=128)


def test_converted_smp_gives_the_same_predictions():
    overrides = {**TINY_OVERRIDES, "num_grids": [12, 10, 8, 6, 4], "center_grid": 12}
    net = build_smp("r18", overrides=overrides).eval()
    # a random network finds nobody: confident center / category biases make it find persons
    nn.init.constant_(net.center_head.out.bias, 4.0)
    nn.init.constant_(net.part_head.cate_out.bias, 4.0)
    x = torch.randn(1, 3, 64, 96)
    metas = [{"img_size": (64, 96), "ori_size": (64, 96), "pad_size": (64, 96),
              "scale": (1.0, 1.0)}]  # fmt: skip
    with torch.no_grad():
        expected = net(x)
        expected_preds = net.predict(expected, metas)
        assert convert_to_winograd(net, min_channels=16) > 20  # towers, FPN, backbone
        out = net(x)
        preds = net.predict(out, metas)
    for name in ("center", "offsets", "mask_feat"):
        torch.testing.assert_close(
            getattr(out, name), getattr(expected, name), atol=1e-4, rtol=1e-3
        )
    for a, b in zip(out.cate + out.kernels, expected.cate + expected.kernels):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)
    assert len(preds[0]["scores"]) == len(expected_preds[0]["scores"]) > 0
    torch.testing.assert_close(
        preds[0]["scores"], expected_preds[0]["scores"], atol=1e-5, rtol=1e-4
    )
    assert torch.equal(preds[0]["parsing"], expected_preds[0]["parsing"])
