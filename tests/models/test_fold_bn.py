"""Folding BatchNorm into convolutions for inference: same outputs, no BN left after a conv."""

from __future__ import annotations

import pytest
import torch
from benchmarks.common import TINY_OVERRIDES, build_smp
from torch import nn

from smp_parsing.models.deploy.fold_bn import fold_frozen_batchnorm


def _randomise_bn(net: nn.Module) -> None:
    """Non-trivial BN statistics and affine parameters (fresh ones are the identity)."""
    gen = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


@pytest.mark.parametrize("channels_last", [False, True])
def test_fold_keeps_outputs(channels_last):
    net = build_smp("r18", overrides={**TINY_OVERRIDES, "channels_last": channels_last}).eval()
    _randomise_bn(net)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = net(x)
        # r18: stem 1 + 8 blocks x 2 + 3 downsample branches; offset head's reduce: 1
        assert fold_frozen_batchnorm(net) == 21
        out = net(x)
    bns = [m for m in net.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns == []
    stem = net.backbone.stem[0].weight
    assert stem.is_contiguous(memory_format=torch.channels_last) is channels_last
    for name in ("center", "offsets", "mask_feat"):
        torch.testing.assert_close(
            getattr(out, name), getattr(expected, name), atol=1e-4, rtol=1e-3
        )
    for a, b in zip(out.cate + out.kernels, expected.cate + expected.kernels):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


def test_fold_refuses_training_mode():
    block = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))
    with pytest.raises(RuntimeError, match="eval mode"):
        fold_frozen_batchnorm(block.train())
    assert fold_frozen_batchnorm(block.eval()) == 1
    assert isinstance(block[1], nn.Identity)
