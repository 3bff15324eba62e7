"""DCNv2 on CUDA (torchvision's ``deform_conv2d`` kernel) equals the CPU path (``grid_sample``).

``deform_conv2d_fp32`` picks its implementation by device, so the two paths are the CPU and
CUDA calls of the same function on the same numbers: values and the gradients of every input.
"""

from __future__ import annotations

import pytest
import torch

from smp_parsing.models.layers.dcn import ModulatedDeformConv2d, deform_conv2d_fp32

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

# float64 checks the maths to rounding; float32 is what training runs (no TF32 in these
# kernels: torchvision's CUDA deform_conv2d does its own im2col + a cuBLAS matmul, and
# matmul TF32 is off by default)
TOLERANCES = {torch.float64: dict(rtol=1e-9, atol=1e-9), torch.float32: dict(rtol=1e-4, atol=1e-4)}


def _inputs(c_in, c_out, w_groups, off_groups, stride, padding, dilation, dtype):
    gen = torch.Generator().manual_seed(0)
    h, w = 11, 13
    ho = (h + 2 * padding - dilation * 2 - 1) // stride + 1
    wo = (w + 2 * padding - dilation * 2 - 1) // stride + 1
    fan_in = 9 * c_in // w_groups
    return {
        "x": torch.randn(2, c_in, h, w, generator=gen, dtype=dtype),
        # large offsets: many taps fall outside the image or on its border
        "offset": 3 * torch.randn(2, 2 * off_groups * 9, ho, wo, generator=gen, dtype=dtype),
        "weight": torch.randn(c_out, c_in // w_groups, 3, 3, generator=gen, dtype=dtype)
        / fan_in**0.5,
        "bias": torch.randn(c_out, generator=gen, dtype=dtype),
        "mask": torch.rand(2, off_groups * 9, ho, wo, generator=gen, dtype=dtype),
    }


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    ("c_in", "c_out", "w_groups", "off_groups", "stride", "padding", "dilation"),
    [
        (4, 6, 1, 1, 1, 1, 1),
        (6, 4, 2, 2, 2, 1, 1),
        (6, 6, 3, 3, 1, 2, 2),
        (64, 32, 1, 1, 1, 1, 1),  # channel chunks in the CPU grid_sample
        (64, 8, 4, 2, 2, 1, 1),
    ],
)
def test_deform_conv_cuda_equals_cpu(c_in, c_out, w_groups, off_groups, stride, padding, dilation,
                                     dtype):  # fmt: skip
    cpu = {k: v.requires_grad_() for k, v in _inputs(
        c_in, c_out, w_groups, off_groups, stride, padding, dilation, dtype).items()}  # fmt: skip
    gpu = {k: v.detach().cuda().requires_grad_() for k, v in cpu.items()}
    kw = dict(stride=(stride, stride), padding=(padding, padding), dilation=(dilation, dilation))
    out_cpu = deform_conv2d_fp32(cpu["x"], cpu["offset"], cpu["weight"], cpu["bias"],
                                 mask=cpu["mask"], **kw)  # fmt: skip
    out_gpu = deform_conv2d_fp32(gpu["x"], gpu["offset"], gpu["weight"], gpu["bias"],
                                 mask=gpu["mask"], **kw)  # fmt: skip
    assert out_gpu.is_cuda and out_gpu.dtype == dtype
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, **TOLERANCES[dtype])
    upstream = torch.randn(out_cpu.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    names = list(cpu)
    g_cpu = torch.autograd.grad((out_cpu * upstream).sum(), [cpu[n] for n in names])
    g_gpu = torch.autograd.grad((out_gpu * upstream.cuda()).sum(), [gpu[n] for n in names])
    for name, a, b in zip(names, g_gpu, g_cpu):
        torch.testing.assert_close(a.cpu(), b, **TOLERANCES[dtype], msg=f"grad of {name}")


def test_dcn_layer_cuda_equals_cpu_with_learned_offsets():
    torch.manual_seed(0)
    layer = ModulatedDeformConv2d(32, 16, 3, stride=1, padding=1).double()
    # non-zero offset predictor: the layer samples off the regular grid, as after training
    torch.nn.init.normal_(layer.conv_offset.weight, std=0.2)
    torch.nn.init.normal_(layer.conv_offset.bias, std=0.5)
    layer_gpu = ModulatedDeformConv2d(32, 16, 3, stride=1, padding=1).double().cuda()
    layer_gpu.load_state_dict(layer.state_dict())
    x = torch.randn(2, 32, 17, 23, dtype=torch.double, requires_grad=True)
    x_gpu = x.detach().cuda().requires_grad_()
    out, out_gpu = layer(x), layer_gpu(x_gpu)
    torch.testing.assert_close(out_gpu.cpu(), out, rtol=1e-9, atol=1e-9)
    out.square().sum().backward()
    out_gpu.square().sum().backward()
    torch.testing.assert_close(x_gpu.grad.cpu(), x.grad, rtol=1e-9, atol=1e-9)
    for (name, p), p_gpu in zip(layer.named_parameters(), layer_gpu.parameters()):
        torch.testing.assert_close(p_gpu.grad.cpu(), p.grad, rtol=1e-8, atol=1e-9, msg=name)


def test_dcn_layer_under_bf16_autocast_runs_in_fp32():
    torch.manual_seed(0)
    layer = ModulatedDeformConv2d(16, 16, 3, padding=1).cuda()
    torch.nn.init.normal_(layer.conv_offset.weight, std=0.1)
    x = torch.randn(2, 16, 32, 32, device="cuda")
    reference = layer(x)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = layer(x.bfloat16())
    assert out.dtype == torch.bfloat16  # the caller's dtype back
    assert torch.isfinite(out).all()
    # only the bf16 rounding of the input and of the offset conv: no bf16 accumulation
    torch.testing.assert_close(out.float(), reference, rtol=5e-2, atol=5e-2)
