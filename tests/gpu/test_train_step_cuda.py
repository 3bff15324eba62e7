"""One training step of SMP-R50* (ResNet-50 + DCNv2, paper widths) on CUDA, fp32 and bf16.

The losses of a step must be finite (every term), the gradients finite and the update must
change the weights; in fp32 (TF32 off) the losses equal the CPU's for the same weights and batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
from benchmarks.bench_training import make_batch
from benchmarks.common import build_smp

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CUDA = torch.device("cuda")


def _step(net, images, parsing, amp: bool) -> dict[str, torch.Tensor]:
    """Forward (autocast when ``amp``), losses, backward; returns the detached loss terms."""
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        outputs = net(images)
    losses = net.loss(outputs, parsing)
    losses["loss"].backward()
    return {k: v.detach() for k, v in losses.items()}


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16"])
def test_r50_dcn_training_step_is_finite(amp):
    net = build_smp("r50_dcn", seed=0).to(CUDA).train()
    images, parsing = make_batch(2, 512, 640, 3, num_classes=net.num_classes, device=CUDA)
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01,
                                momentum=0.9)  # fmt: skip
    before = net.part_head.cate_out.weight.detach().clone()
    for _ in range(2):  # the second step runs on updated weights and momentum
        optimizer.zero_grad(set_to_none=True)
        losses = _step(net, images, parsing, amp)
        for name, value in losses.items():
            assert value.dtype == torch.float32, name  # losses stay fp32 under autocast
            assert torch.isfinite(value), f"{name} = {value}"
        assert losses["loss"] > 0
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        optimizer.step()
    assert not torch.equal(before, net.part_head.cate_out.weight)
    assert all(torch.isfinite(p).all() for p in net.parameters())


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """True fp32 on CUDA: TF32 convolutions would differ from the CPU by ~1e-3."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@no_tf32()
def test_r50_dcn_fp32_losses_equal_cpu():
    net_cpu = build_smp("r50_dcn", seed=0).train()
    net_gpu = build_smp("r50_dcn", seed=0).to(CUDA).train()
    net_gpu.load_state_dict(net_cpu.state_dict())
    images, parsing = make_batch(2, 256, 320, 2, num_classes=net_cpu.num_classes,
                                 device=torch.device("cpu"))  # fmt: skip
    cpu = _step(net_cpu, images, parsing, amp=False)
    gpu = _step(net_gpu, images.to(CUDA), [p.to(CUDA) for p in parsing], amp=False)
    assert set(cpu) == set(gpu)
    for name in cpu:
        torch.testing.assert_close(gpu[name].cpu(), cpu[name], rtol=1e-3, atol=1e-5, msg=name)
    # the gradient of a late layer: the backward of both paths agrees too
    g_cpu = net_cpu.part_head.cate_out.weight.grad
    g_gpu = net_gpu.part_head.cate_out.weight.grad.cpu()
    torch.testing.assert_close(g_gpu, g_cpu, rtol=1e-2, atol=1e-5 * float(g_cpu.abs().max()))
