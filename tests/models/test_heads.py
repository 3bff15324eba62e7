"""Mask feature branch, part head, center head, offset head (grouped AdaptBlocks), CoordConv."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

from smp_parsing.models.heads.center_head import CenterHead, resize_concat
from smp_parsing.models.heads.mask_feature import MaskFeatureBranch
from smp_parsing.models.heads.offset_head import GroupedAdaptBlock, OffsetHead
from smp_parsing.models.heads.part_head import PartHead
from smp_parsing.models.layers.coordconv import add_coord_channels, coord_channels
from smp_parsing.models.smp import scale_grid

BASE_GRIDS = [40, 36, 24, 16, 12]
# grid factor -> (part grids, center grid): Table 5 (0.5x, 1x, 2x) and DensePose (base x 2)
GRID_CASES = {
    "0.5x": ([20, 18, 12, 8, 6], 20),
    "1x": (BASE_GRIDS, 40),
    "2x": ([80, 72, 48, 32, 24], 80),
}


def _pyramid(size=(64, 96), channels=32, batch=2):
    h, w = size
    return [torch.randn(batch, channels, -(-h // s), -(-w // s)) for s in (4, 8, 16, 32, 64)]


def test_scale_grid_matches_table5():
    for name, (parts, center) in GRID_CASES.items():
        factor = {"0.5x": 0.5, "1x": 1.0, "2x": 2.0}[name]
        assert [scale_grid(g, factor) for g in BASE_GRIDS] == parts
        assert scale_grid(40, factor) == center
    # DensePose doubles the base grids; its 1x equals our 2x shapes
    assert [scale_grid(2 * g, 1.0) for g in BASE_GRIDS] == GRID_CASES["2x"][0]


def test_coord_channels():
    x = torch.zeros(2, 3, 4, 5)
    c = coord_channels(x)
    assert c.shape == (2, 2, 4, 5)
    torch.testing.assert_close(c[0, 0, 0], torch.linspace(-1, 1, 5))
    torch.testing.assert_close(c[0, 1, :, 0], torch.linspace(-1, 1, 4))
    assert add_coord_channels(x).shape == (2, 5, 4, 5)


@pytest.mark.parametrize("size", [(64, 96), (97, 131)])
def test_mask_feature_branch_stride4(size):
    feats = _pyramid(size)
    branch = MaskFeatureBranch(in_channels=32, feat_channels=16, out_channels=24, num_groups=8)
    out = branch(feats[:4])
    assert out.shape == (2, 24, *feats[0].shape[-2:])


@pytest.mark.parametrize("grids", ["0.5x", "1x", "2x"])
def test_part_head_shapes(grids):
    parts, _ = GRID_CASES[grids]
    head = PartHead(
        num_classes=7, num_grids=parts, in_channels=32, kernel_channels=24,
        tower_width=16, num_convs=1, num_groups=8,
    )  # fmt: skip
    cate, kernels = head(_pyramid((64, 96)))
    assert [c.shape for c in cate] == [(2, 7, s, s) for s in parts]
    assert [k.shape for k in kernels] == [(2, 24, s, s) for s in parts]
    # focal prior: initial probability 0.01 everywhere (weights ~ N(0, 0.01))
    assert abs(torch.sigmoid(cate[0]).mean().item() - 0.01) < 0.005


def test_part_head_shares_weights_across_levels():
    head = PartHead(
        num_classes=3, num_grids=[8, 8, 8, 8, 8], in_channels=16, kernel_channels=8,
        tower_width=16, num_convs=2, num_groups=4,
    )  # fmt: skip
    feats = [torch.randn(1, 16, 8, 8)] * 5
    # identical level inputs -> identical outputs (one set of weights, resize is a no-op
    # for P3..P5 at 8x8; P2 and P6 are resized to P3/P5 sizes, also 8x8)
    cate, kernels = head(feats)
    for c in cate[1:]:
        torch.testing.assert_close(c, cate[0])


@pytest.mark.parametrize("grids", ["0.5x", "1x", "2x"])
def test_center_and_offset_head_shapes(grids):
    _, s = GRID_CASES[grids]
    fused = resize_concat(_pyramid((64, 96), channels=8), s)
    assert fused.shape == (2, 40, s, s)
    center = CenterHead(
        in_channels=40, fusion_channels=16, tower_width=16, num_convs=1, num_groups=8
    )(fused)
    assert center.shape == (2, 1, s, s)
    offsets = OffsetHead(num_classes=5, in_channels=40, branch_channels=4)(fused)
    assert offsets.shape == (2, 5, 2, s, s)
    head_1x1 = OffsetHead(num_classes=5, in_channels=40, branch_channels=4, reduce_kernel_size=1)
    assert head_1x1(fused).shape == (2, 5, 2, s, s)


def test_resize_concat_order_and_values():
    feats = [torch.full((1, 2, 8, 8), float(i)) for i in range(5)]
    fused = resize_concat(feats, 4)
    for i in range(5):
        assert torch.all(fused[:, 2 * i : 2 * i + 2] == i)


def _adapt_block_loop(block: GroupedAdaptBlock, x: torch.Tensor) -> torch.Tensor:
    """Reference: the C_P AdaptBlocks one at a time, offsets built tap by tap."""
    g, c = block.groups, x.shape[1] // block.groups
    outs = []
    w_aff, b_aff = block.affine_conv.weight, block.affine_conv.bias
    for i in range(g):
        xi = x[:, i * c : (i + 1) * c]
        pred = F.conv2d(xi, w_aff[i * 6 : (i + 1) * 6], b_aff[i * 6 : (i + 1) * 6], padding=1)
        offs = []
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                # (dy', dx') = D @ (dy, dx) + t, D = [[p0, p1], [p2, p3]], t = (p4, p5)
                offs.append(pred[:, 0] * dy + pred[:, 1] * dx + pred[:, 4])
                offs.append(pred[:, 2] * dy + pred[:, 3] * dx + pred[:, 5])
        off = torch.stack(offs, dim=1)
        outs.append(deform_conv2d(xi, off, block.weight[i * c : (i + 1) * c], padding=(1, 1)))
    out = torch.cat(outs, dim=1)
    return torch.relu(block.norm(out) + x)


def test_grouped_adapt_block_equals_a_loop_of_branches():
    torch.manual_seed(0)
    block = GroupedAdaptBlock(groups=3, channels=4).eval()
    torch.nn.init.normal_(block.affine_conv.weight, std=0.3)
    torch.nn.init.normal_(block.affine_conv.bias, std=0.3)
    torch.nn.init.normal_(block.weight, std=0.3)
    block.norm.running_mean.normal_()
    block.norm.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 12, 7, 9)
    torch.testing.assert_close(block(x), _adapt_block_loop(block, x), atol=1e-5, rtol=1e-4)


def test_adapt_block_starts_as_a_regular_grouped_conv():
    torch.manual_seed(0)
    block = GroupedAdaptBlock(groups=3, channels=4).eval()
    x = torch.randn(1, 12, 6, 6)
    plain = torch.relu(block.norm(F.conv2d(x, block.weight, padding=1, groups=3)) + x)
    torch.testing.assert_close(block(x), plain, atol=1e-5, rtol=1e-4)


def test_offset_branches_are_decoupled():
    torch.manual_seed(0)
    head = OffsetHead(num_classes=3, in_channels=8, branch_channels=4).eval()
    # perturb only branch 1's slice after the shared reduce conv: other branches unchanged
    x = torch.randn(1, 8, 6, 6)
    mid = head.reduce(add_coord_channels(x))
    bumped = mid.clone()
    bumped[:, 4:8] += 1.0
    a = head.out(head.blocks(mid)).view(1, 3, 2, 6, 6)
    b = head.out(head.blocks(bumped)).view(1, 3, 2, 6, 6)
    torch.testing.assert_close(a[:, [0, 2]], b[:, [0, 2]])
    assert not torch.allclose(a[:, 1], b[:, 1])
