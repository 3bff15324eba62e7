"""Refined Feature Retain: mask attention, refined feature, deformable warp."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from smp_parsing.models.heads.part_head import PartHead
from smp_parsing.models.heads.rfr import RefinedFeatureRetain


def _attention_loop(kernel_feat: torch.Tensor) -> torch.Tensor:
    """Reference: cosine similarity of every pair of cells, clipped at 0, rows normalised."""
    b, c, h, w = kernel_feat.shape
    n = h * w
    out = torch.zeros(b, n, n)
    for i in range(b):
        cells = kernel_feat[i].reshape(c, n)
        for p in range(n):
            for q in range(n):
                cos = F.cosine_similarity(cells[:, p], cells[:, q], dim=0, eps=1e-12)
                out[i, p, q] = max(cos.item(), 0.0)
            out[i, p] /= max(out[i, p].sum().item(), 1e-6)
    return out


def test_mask_attention_equals_a_loop():
    torch.manual_seed(0)
    rfr = RefinedFeatureRetain(channels=4, warp_groups=1, num_groups=2)
    k = torch.randn(2, 4, 3, 3)
    attn = rfr.mask_attention(k)
    torch.testing.assert_close(attn, _attention_loop(k), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 9))


def test_attention_groups_cells_of_one_instance():
    # two "instances" with orthogonal kernel features: a cell attends only to its own
    k = torch.zeros(1, 2, 1, 4)
    k[0, 0, 0, :2] = 1.0
    k[0, 1, 0, 2:] = 1.0
    attn = RefinedFeatureRetain(channels=2, warp_groups=1, num_groups=1).mask_attention(k)[0]
    expected = torch.tensor(
        [[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]]
    )
    torch.testing.assert_close(attn, expected)


def test_rfr_at_init_is_residual_plus_plain_conv():
    torch.manual_seed(0)
    rfr = RefinedFeatureRetain(channels=8, warp_groups=2, num_groups=4)
    cate, kern = torch.randn(2, 8, 5, 5), torch.randn(2, 8, 5, 5)
    # zero-initialised offsets and mask logits: regular 3x3 sampling with mask 0.5
    plain = F.conv2d(cate, rfr.warp_weight, padding=1, groups=2) * 0.5
    expected = cate + F.relu(rfr.norm(plain))
    torch.testing.assert_close(rfr(cate, kern), expected, atol=1e-5, rtol=1e-4)


def test_rfr_gradients_reach_both_branches_and_offsets():
    torch.manual_seed(0)
    rfr = RefinedFeatureRetain(channels=8, warp_groups=1, num_groups=4)
    cate = torch.randn(1, 8, 6, 6, requires_grad=True)
    kern = torch.randn(1, 8, 6, 6, requires_grad=True)
    rfr(cate, kern).square().sum().backward()
    assert cate.grad.abs().sum() > 0
    # the zero-initialised offset conv learns from the first step ...
    assert rfr.offset_conv.weight.grad.abs().sum() > 0
    # ... and once it is non-zero the kernel branch is steered through the attention
    torch.nn.init.normal_(rfr.offset_conv.weight, std=0.1)
    kern.grad = None
    rfr(cate, kern).square().sum().backward()
    assert kern.grad.abs().sum() > 0


def test_part_head_with_rfr_changes_only_the_category_branch():
    torch.manual_seed(0)
    kw = dict(num_classes=3, num_grids=[8, 6, 4, 4, 2], in_channels=8, kernel_channels=4,
              tower_width=8, num_convs=1, num_groups=4)  # fmt: skip
    plain = PartHead(**kw)
    with_rfr = PartHead(**kw, rfr=RefinedFeatureRetain(channels=8, warp_groups=1, num_groups=4))
    with_rfr.load_state_dict(plain.state_dict(), strict=False)
    feats = [torch.randn(1, 8, s, s) for s in (16, 8, 4, 2, 1)]
    c0, k0 = plain(feats)
    c1, k1 = with_rfr(feats)
    for a, b in zip(k0, k1):
        torch.testing.assert_close(a, b)
    assert [c.shape for c in c0] == [c.shape for c in c1]
    assert not torch.allclose(c0[0], c1[0])


def test_refined_feature_is_the_attention_weighted_category_feature():
    torch.manual_seed(0)
    rfr = RefinedFeatureRetain(channels=4, warp_groups=1, num_groups=2)
    cate, kern = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    seen = {}
    rfr.offset_conv.register_forward_pre_hook(lambda m, args: seen.update(refined=args[0]))
    rfr(cate, kern)
    attn = _attention_loop(kern)  # (B, N, N)
    expected = torch.einsum("bpq,bcq->bcp", attn, cate.flatten(2)).reshape(2, 4, 3, 3)
    torch.testing.assert_close(seen["refined"], expected, atol=1e-5, rtol=1e-4)
