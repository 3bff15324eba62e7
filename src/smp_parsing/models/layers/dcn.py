"""Modulated deformable convolution (DCNv2, Zhu et al. 2019) and its two implementations.

Used in the backbone for the ``*`` rows of the paper's Table 2: it replaces the 3x3
convolutions of the ResNet blocks of stages 2-4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import deform_conv2d


def finite_offsets(offset: Tensor) -> Tensor:
    """Replace NaN/inf sampling offsets by 0.

    ``torchvision.ops.deform_conv2d`` turns a NaN offset into an out-of-bounds memory read
    (a segfault on CPU), so a NaN input image must not reach it with NaN offsets; the NaN
    still propagates through the sampled features, and the decoder drops it.

    Args:
        offset: any shape.

    Returns:
        Same shape and dtype, every non-finite entry 0.
    """
    return torch.nan_to_num(offset, nan=0.0, posinf=0.0, neginf=0.0)


def _channel_chunks(channels: int, target: int = 16) -> int:
    """Number of equal chunks of at least ``target`` channels (1 for few channels)."""
    best = 1
    for d in range(1, channels // target + 1):
        if channels % d == 0:
            best = d
    return best


def deform_conv2d_sampled(
    x: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    mask: Tensor | None = None,
) -> Tensor:
    """Deformable convolution as ``grid_sample`` + grouped 1x1 conv (same maths as torchvision).

    torchvision's CPU ``deform_conv2d`` samples in a scalar loop (~20x slower than a conv
    of the same size on this machine); here every tap of every output pixel is gathered by
    one bilinear ``F.grid_sample`` (zero outside the image, as torchvision) and the
    columns are contracted by a grouped 1x1 conv. Used on the CPU; on CUDA torchvision's
    kernel is fast and needs no ``9 x`` column buffer.

    Args:
        x: ``(B, C_in, H, W)``.
        offset: ``(B, 2 * G_off * kh * kw, H', W')``, per tap ``(dy, dx)``.
        weight: ``(C_out, C_in / G_w, kh, kw)``.
        bias: ``(C_out,)`` or ``None``.
        stride: conv stride.
        padding: zero padding.
        dilation: kernel dilation.
        mask: ``(B, G_off * kh * kw, H', W')`` modulation or ``None``.

    Returns:
        ``(B, C_out, H', W')``.
    """
    b, c_in, h, w = x.shape
    c_out, c_in_g, kh, kw = weight.shape
    taps = kh * kw
    g_off = offset.shape[1] // (2 * taps)
    ho, wo = offset.shape[-2:]
    dev, dt = x.device, x.dtype
    ky = (torch.arange(kh, device=dev, dtype=dt) * dilation[0]).repeat_interleave(kw)
    kx = (torch.arange(kw, device=dev, dtype=dt) * dilation[1]).repeat(kh)
    oy = torch.arange(ho, device=dev, dtype=dt) * stride[0] - padding[0]
    ox = torch.arange(wo, device=dev, dtype=dt) * stride[1] - padding[1]
    off = offset.reshape(b, g_off, taps, 2, ho, wo)
    py = ky[:, None, None] + oy[None, :, None] + off[:, :, :, 0]  # (B, G, K, ho, wo)
    px = kx[:, None, None] + ox[None, None, :] + off[:, :, :, 1]
    # align_corners=False: pixel i sits at normalised (2i + 1) / size - 1 (exact for size 1).
    grid = torch.stack(((2 * px + 1) / w - 1, (2 * py + 1) / h - 1), dim=-1)
    # grid_sample walks all channels per sampled point: chunks of ~16 channels in the batch
    # dimension keep the gathered pixels in cache and run ~2x faster on the CPU.
    cpg = c_in // g_off
    split = _channel_chunks(cpg)
    grid = grid.reshape(b * g_off, 1, taps * ho, wo, 2).expand(-1, split, -1, -1, -1)
    cols = F.grid_sample(
        x.reshape(b * g_off * split, cpg // split, h, w),
        grid.reshape(b * g_off * split, taps * ho, wo, 2),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    ).reshape(b, g_off, cpg, taps, ho, wo)
    if mask is not None:
        cols = cols * mask.reshape(b, g_off, 1, taps, ho, wo)
    # channel c * K + k of the columns meets weight[:, c % c_in_g, k]: one grouped 1x1 conv.
    return F.conv2d(
        cols.reshape(b, c_in * taps, ho, wo),
        weight.reshape(c_out, c_in_g * taps, 1, 1),
        bias,
        groups=c_in // c_in_g,
    )


def deform_conv2d_fp32(
    x: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    mask: Tensor | None = None,
) -> Tensor:
    """Deformable convolution in float32 (AMP-safe), result in ``x.dtype``.

    torchvision's CPU kernel has no half/bfloat16 path and its CUDA one autocasts to
    float32 anyway, so under AMP the op runs in float32 with autocast off; NaN/inf offsets
    are zeroed (:func:`finite_offsets`). CUDA tensors use ``torchvision.ops.deform_conv2d``,
    CPU tensors :func:`deform_conv2d_sampled` (same result, much faster there). Weight and
    offset groups are inferred from ``weight`` and ``offset``.

    Args:
        x: ``(B, C_in, H, W)``.
        offset: ``(B, 2 * G_off * kh * kw, H', W')``.
        weight: ``(C_out, C_in / G_w, kh, kw)``.
        bias: ``(C_out,)`` or ``None``.
        stride: conv stride.
        padding: zero padding.
        dilation: kernel dilation.
        mask: ``(B, G_off * kh * kw, H', W')`` modulation or ``None``.

    Returns:
        ``(B, C_out, H', W')`` in ``x.dtype``.
    """
    # float64 stays float64 (gradcheck); every half type goes to float32.
    dt = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    op = deform_conv2d if x.is_cuda else deform_conv2d_sampled
    with torch.autocast(device_type=x.device.type, enabled=False):
        out = op(
            x.to(dt).contiguous(),
            finite_offsets(offset.to(dt)).contiguous(),
            weight.to(dt),
            None if bias is None else bias.to(dt),
            stride=stride,
            padding=padding,
            dilation=dilation,
            mask=None if mask is None else mask.to(dt).contiguous(),
        )
    return out.to(x.dtype)


class ModulatedDeformConv2d(nn.Module):
    """3x3 (or k x k) DCNv2: a plain conv predicts per-pixel offsets and a modulation mask.

    The offset/mask predictor is zero-initialised, so at start the layer samples the
    regular grid with a uniform mask of ``sigmoid(0) = 0.5`` (as in DCNv2); the main
    ``weight`` keeps the name and shape of ``nn.Conv2d.weight`` so ImageNet ResNet
    weights load into it unchanged.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size.
        stride: convolution stride.
        padding: zero padding.
        dilation: kernel dilation.
        groups: weight groups of the main convolution.
        offset_groups: groups of input channels that share one offset field.
        bias: add a learnable bias to the main convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        padding: int = 1,
        dilation: int = 1,
        groups: int = 1,
        offset_groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.stride = (stride, stride)
        self.padding = (padding, padding)
        self.dilation = (dilation, dilation)
        self.offset_groups = offset_groups
        k = kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, k, k))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=1)
        # 2 offsets (dy, dx) + 1 mask value per kernel tap and offset group.
        self.conv_offset = nn.Conv2d(
            in_channels,
            3 * offset_groups * k * k,
            k,
            stride=stride,
            padding=padding,
            dilation=dilation,
            bias=True,
        )
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> ModulatedDeformConv2d:
        """Build a DCNv2 with the geometry (and current weights) of ``conv``.

        Args:
            conv: a square ``nn.Conv2d`` to replace.

        Returns:
            The deformable layer; it computes exactly ``conv`` (times the 0.5 mask) at init.
        """
        dcn = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size[0],
            stride=conv.stride[0],
            padding=conv.padding[0],
            dilation=conv.dilation[0],
            groups=conv.groups,
            bias=conv.bias is not None,
        )
        with torch.no_grad():
            dcn.weight.copy_(conv.weight)
            if conv.bias is not None:
                dcn.bias.copy_(conv.bias)
        return dcn

    def forward(self, x: Tensor) -> Tensor:
        """Deformable convolution.

        Args:
            x: ``(B, C_in, H, W)``.

        Returns:
            ``(B, C_out, H', W')`` with the usual conv output size.
        """
        out = self.conv_offset(x)
        n_off = 2 * self.offset_groups * self.weight.shape[-1] * self.weight.shape[-2]
        offset, mask = out[:, :n_off], out[:, n_off:].sigmoid()
        return deform_conv2d_fp32(
            x,
            offset,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            mask=mask,
        )
