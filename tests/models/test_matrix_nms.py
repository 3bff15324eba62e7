"""Matrix NMS against a plain double loop of the SOLOv2 definition."""

from __future__ import annotations

import math

import pytest
import torch

from smp_parsing.models.layers.matrix_nms import matrix_nms, pack_by_group


def loop_matrix_nms(masks, labels, scores, kernel, sigma):
    """decay_j = min over higher-scored same-label i of f(iou_ij) / f(comp_i)."""
    n = len(scores)
    order = sorted(range(n), key=lambda i: -float(scores[i]))
    flat = [masks[i].flatten().bool() for i in range(n)]

    def iou(a, b):
        inter = (flat[a] & flat[b]).sum().item()
        union = flat[a].sum().item() + flat[b].sum().item() - inter
        return inter / union if union else 0.0

    def f(x):
        return math.exp(-sigma * x * x) if kernel == "gaussian" else 1 - x

    comp = {}
    for rank, i in enumerate(order):
        higher = [k for k in order[:rank] if labels[k] == labels[i]]
        comp[i] = max((iou(k, i) for k in higher), default=0.0)
    out = torch.empty(n)
    for rank, j in enumerate(order):
        decay = 1.0
        for i in order[:rank]:
            if labels[i] == labels[j]:
                decay = min(decay, f(iou(i, j)) / f(comp[i]))
        out[j] = scores[j] * decay
    return out


@pytest.mark.parametrize("kernel", ["gaussian", "linear"])
def test_matrix_nms_matches_loop(kernel):
    generator = torch.Generator().manual_seed(0)
    n = 14
    masks = torch.zeros(n, 12, 12, dtype=torch.bool)
    for i in range(n):
        y, x = (int(v) for v in torch.randint(0, 6, (2,), generator=generator))
        masks[i, y : y + 6, x : x + 6] = True
    labels = torch.randint(0, 3, (n,), generator=generator)
    scores = torch.rand(n, generator=generator)
    got = matrix_nms(masks, labels, scores, kernel=kernel, sigma=2.0)
    want = loop_matrix_nms(masks, labels.tolist(), scores, kernel, 2.0)
    torch.testing.assert_close(got, want)
    assert (got <= scores + 1e-7).all() and (got < scores - 1e-3).any()


def test_matrix_nms_only_same_label_suppresses():
    masks = torch.ones(3, 4, 4, dtype=torch.bool)
    scores = torch.tensor([0.9, 0.8, 0.7])
    got = matrix_nms(masks, torch.tensor([1, 2, 1]), scores, sigma=2.0)
    # 0 and 1 differ in label: untouched; 2 duplicates 0: exp(-2 * 1)
    torch.testing.assert_close(got, torch.tensor([0.9, 0.8, 0.7 * math.exp(-2.0)]))


def test_matrix_nms_input_order_and_edge_cases():
    masks = torch.zeros(2, 4, 4)
    masks[:, :2] = 1
    # lower score first in the input: the output stays in the input order
    got = matrix_nms(masks, torch.tensor([0, 0]), torch.tensor([0.3, 0.6]))
    torch.testing.assert_close(got, torch.tensor([0.3 * math.exp(-2.0), 0.6]))
    empty = matrix_nms(torch.zeros(0, 4, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0))
    assert empty.shape == (0,)
    with pytest.raises(ValueError, match="unknown kernel"):
        matrix_nms(masks, torch.tensor([0, 0]), torch.tensor([0.3, 0.6]), kernel="box")
    with pytest.raises(ValueError, match="masks"):
        matrix_nms(masks, torch.tensor([0]), torch.tensor([0.3, 0.6]))


def test_pack_by_group_keeps_order():
    values = torch.arange(6.0).view(6, 1)
    group = torch.tensor([2, 0, 2, 2, 0, 3])
    packed, slot = pack_by_group(values, group, num_groups=5)
    assert packed.shape == (5, 3, 1)
    assert packed[2, :, 0].tolist() == [0.0, 2.0, 3.0]
    assert packed[0, :2, 0].tolist() == [1.0, 4.0] and packed[1].abs().sum() == 0
    assert torch.equal(packed[slot[:, 0], slot[:, 1]], values)


def test_matrix_nms_is_fp32_under_autocast():
    # Overlaps of ~1000 pixels: not representable in bf16 (spacing 4-8 there), so an IoU
    # product re-cast by autocast would move the decayed scores.
    generator = torch.Generator().manual_seed(5)
    n = 10
    masks = torch.zeros(n, 64, 64, dtype=torch.bool)
    for i in range(n):
        y, x = (int(v) for v in torch.randint(0, 20, (2,), generator=generator))
        masks[i, y : y + 37, x : x + 29] = True
    labels = torch.randint(0, 2, (n,), generator=generator)
    scores = torch.rand(n, generator=generator)
    want = matrix_nms(masks, labels, scores)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = matrix_nms(masks, labels, scores)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=0)
