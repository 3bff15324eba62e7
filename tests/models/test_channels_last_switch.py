"""The ``channels_last`` switch of SMP (``model.net.channels_last``): same outputs, faster layout."""

from __future__ import annotations

import torch
from benchmarks.common import TINY_OVERRIDES, build_smp, person_maps


def test_channels_last_switch_same_outputs_and_trains():
    ref = build_smp("r18", overrides=TINY_OVERRIDES, seed=0).eval()
    net = build_smp("r18", overrides={**TINY_OVERRIDES, "channels_last": True}, seed=0).eval()
    net.load_state_dict(ref.state_dict())  # a contiguous checkpoint loads into the switch
    conv = net.backbone.stem[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    x = torch.randn(1, 3, 64, 96)  # a plain contiguous batch, as the loader gives
    with torch.no_grad():
        expected, out = ref(x), net(x)
    for name in ("center", "offsets", "mask_feat"):
        torch.testing.assert_close(
            getattr(out, name), getattr(expected, name), atol=1e-4, rtol=1e-3
        )
    for a, b in zip(out.cate + out.kernels, expected.cate + expected.kernels):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)

    net.train()
    parsing = [person_maps(2, 64, 96, num_classes=net.num_classes)]
    loss = net.loss(net(x), parsing)["loss"]
    loss.backward()
    assert torch.isfinite(loss) and net.part_head.cate_out.weight.grad is not None
