"""FPN: five levels P2..P6 of 256 (or configured) channels at strides 4..64."""

from __future__ import annotations

import pytest
import torch

from smp_parsing.models.backbone import ResNetBackbone
from smp_parsing.models.fpn import FPN


@pytest.mark.parametrize("size", [(64, 96), (97, 131)])
def test_fpn_levels_and_strides(size):
    bb = ResNetBackbone(depth=18, pretrained="none")
    fpn = FPN(in_channels=bb.out_channels, out_channels=32)
    with torch.no_grad():
        c = bb(torch.randn(1, 3, *size))
        p = fpn(c)
    assert len(p) == 5
    assert all(t.shape[1] == 32 for t in p)
    for ci, pi in zip(c, p[:4]):
        assert pi.shape[-2:] == ci.shape[-2:]
    # P6 = stride-2 subsampling of P5 (kernel 1, so ceil for odd sizes)
    assert p[4].shape[-2:] == tuple(-(-s // 2) for s in p[3].shape[-2:])
    torch.testing.assert_close(p[4], p[3][..., ::2, ::2])
