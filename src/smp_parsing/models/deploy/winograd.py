"""Winograd F(m x m, 3 x 3) convolution for inference on the CPU.

A stride-1, dilation-1, ungrouped 3 x 3 convolution computes every ``m x m`` output tile
from an ``(m + 2) x (m + 2)`` input tile ``d`` as ``Y = A^T [(G g G^T) * (B^T d B)] A``
(Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural Networks"): the
``(m + 2)^2`` element-wise products summed over the input channels are one batched matrix
product ``(a^2, tiles, C_in) @ (a^2, C_in, C_out)`` (MKL sgemm through :func:`torch.bmm`)
with ``(m + 2)^2 / m^2`` multiplies per output pixel instead of 9: 2.25x fewer for
``m = 2``, 4x fewer for ``m = 4`` (the default; its fp32 error stays ~1e-5 of the output
scale, see the tests). The transforms ``B^T d B`` and ``A^T M A`` are a few additions per
element, run as separable passes over strided views (no Python loop over tiles), and the
work is cut into blocks of tile rows so that the intermediates stay in the CPU caches.

The multiply-add count of the network is unchanged in meaning (same layer, same weights,
same result up to fp32 rounding); only the algorithm differs. oneDNN has no Winograd
kernel for fp32 on AVX2 CPUs, and its direct convolution runs near the sgemm peak, so the
win is the 4x cut in multiplies minus the transform cost: it pays off for many channels
(the 512-wide part / center towers, the 1282 -> 1276 offset conv) and not for thin layers;
:func:`convert_to_winograd` therefore only swaps layers above a channel threshold, and
:class:`WinogradConv2d` falls back to the stock convolution for other devices, dtypes, or
autograd.

Inference only: :func:`convert_to_winograd` refuses a module in training mode, and a
converted layer raises if it is put back into training mode and called.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Transform matrices (B^T, G, A^T) of F(2x2, 3x3) and F(4x4, 3x3), interpolation points
# 0, +-1 (m = 2) and 0, +-1, +-2 (m = 4) as in Lavin & Gray (2016).
_BT = {
    2: [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    4: [
        [4, 0, -5, 0, 1, 0],
        [0, -4, -4, 1, 1, 0],
        [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0],
        [0, 4, 0, -5, 0, 1],
    ],
}
_G = {
    2: [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
    4: [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ],
}
_AT = {
    2: [[1, 1, 1, 0], [0, 1, -1, -1]],
    4: [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
}
TILES = tuple(_BT)


def winograd_matrices(tile: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(B^T, G, A^T)`` of F(tile x tile, 3 x 3) in float64.

    Shapes: ``B^T (a, a)``, ``G (a, 3)``, ``A^T (tile, a)`` with ``a = tile + 2``.
    """
    if tile not in _BT:
        raise ValueError(f"Winograd tile must be one of {TILES}, got {tile}")
    return tuple(torch.tensor(t, dtype=torch.float64) for t in (_BT[tile], _G[tile], _AT[tile]))


def transform_weight(weight: Tensor, tile: int = 4) -> Tensor:
    """``U = G g G^T`` for every (out, in) channel pair, laid out for the batched matmul.

    Args:
        weight: ``(C_out, C_in, 3, 3)`` convolution weight.
        tile: output tile size ``m`` (2 or 4).

    Returns:
        ``(a^2, C_in, C_out)`` float tensor (``a = m + 2``), computed in float64.
    """
    if weight.dim() != 4 or tuple(weight.shape[-2:]) != (3, 3):
        raise ValueError(f"expected a (C_out, C_in, 3, 3) weight, got {tuple(weight.shape)}")
    _, g, _ = winograd_matrices(tile)
    g = g.to(weight.device)
    u = torch.einsum("ik,ockl,jl->ijco", g, weight.detach().double(), g)
    a = tile + 2
    return u.reshape(a * a, weight.shape[1], weight.shape[0]).to(weight.dtype).contiguous()


def _input_pass(d: list[Tensor], out: Tensor, tile: int) -> None:
    """``out[i] = sum_k B^T[i, k] d[k]`` with a few additions per element.

    ``d``: the ``a = tile + 2`` (strided) input views, each of the shape of ``out[0]``;
    ``out``: ``(a, ...)``.
    """
    if tile == 2:
        torch.sub(d[0], d[2], out=out[0])
        torch.add(d[1], d[2], out=out[1])
        torch.sub(d[2], d[1], out=out[2])
        torch.sub(d[1], d[3], out=out[3])
        return
    torch.add(d[4], d[0], alpha=4, out=out[0])
    out[0].add_(d[2], alpha=-5)
    t1 = torch.add(d[4], d[2], alpha=-4)
    t2 = torch.add(d[3], d[1], alpha=-4)
    torch.add(t1, t2, out=out[1])
    torch.sub(t1, t2, out=out[2])
    torch.sub(d[4], d[2], out=t1)
    torch.sub(d[3], d[1], out=t2)
    torch.add(t1, t2, alpha=2, out=out[3])
    torch.add(t1, t2, alpha=-2, out=out[4])
    torch.add(d[5], d[1], alpha=4, out=out[5])
    out[5].add_(d[3], alpha=-5)


def _output_pass(m: Tensor, out: list[Tensor], tile: int) -> None:
    """``out[i] = sum_k A^T[i, k] m[k]`` (``m``: ``(a, ...)``; ``out``: ``tile`` views)."""
    if tile == 2:
        torch.add(m[0], m[1], out=out[0]).add_(m[2])
        torch.sub(m[1], m[2], out=out[1]).sub_(m[3])
        return
    s12, d12 = m[1] + m[2], m[1] - m[2]
    s34, d34 = m[3] + m[4], m[3] - m[4]
    torch.add(m[0], s12, out=out[0]).add_(s34)
    torch.add(d12, d34, alpha=2, out=out[1])
    torch.add(s12, s34, alpha=4, out=out[2])
    torch.add(d12, d34, alpha=8, out=out[3]).add_(m[5])


def winograd_conv2d(
    x: Tensor,
    u: Tensor,
    bias: Tensor | None = None,
    *,
    tile: int = 4,
    padding: int = 1,
    block_bytes: int = 1 << 24,
    min_block_tiles: int = 256,
) -> Tensor:
    """3 x 3, stride-1 convolution of ``x`` by Winograd F(tile x tile, 3 x 3).

    Equals ``F.conv2d(x, weight, bias, padding=padding)`` up to float rounding when
    ``u = transform_weight(weight, tile)``.

    Args:
        x: ``(N, C_in, H, W)`` input (any memory format; NHWC is read without a copy of
            the layout).
        u: ``(a^2, C_in, C_out)`` transformed weight from :func:`transform_weight`.
        bias: ``(C_out,)`` or ``None``.
        tile: output tile size ``m`` (2 or 4).
        padding: zero padding on each side (``>= 0``; 1 keeps the size).
        block_bytes: target size of one block's transformed input; the tile rows are
            processed in blocks of about this size so the intermediates stay in cache...
        min_block_tiles: ...but with at least this many tiles per block (the rows of the
            matmul), so that the transformed weight is reused enough per read.

    Returns:
        ``(N, C_out, H + 2p - 2, W + 2p - 2)``, in the memory format of ``x``
        (``torch.channels_last`` unless ``x`` is NCHW-contiguous).
    """
    a = tile + 2
    n, c, h, w = x.shape
    k = u.shape[-1]
    if u.shape[0] != a * a or u.shape[1] != c:
        raise ValueError(f"transformed weight {tuple(u.shape)} does not fit tile {tile}, C_in {c}")
    ho, wo = h + 2 * padding - 2, w + 2 * padding - 2
    if ho < 1 or wo < 1:
        raise ValueError(f"input {h} x {w} with padding {padding} is too small for a 3x3 conv")
    th, tw = -(-ho // tile), -(-wo // tile)
    hp, wp = tile * th + 2, tile * tw + 2
    # zero-padded NHWC copy of the input, sized to whole tiles
    xp = x.new_empty(n, hp, wp, c)
    rows, cols = min(h, hp - padding), min(w, wp - padding)
    xp[:, :padding].zero_()  # zero only the border, not the whole buffer
    xp[:, padding + rows :].zero_()
    xp[:, padding : padding + rows, :padding].zero_()
    xp[:, padding : padding + rows, padding + cols :].zero_()
    xp[:, padding : padding + rows, padding : padding + cols] = x.permute(0, 2, 3, 1)[
        :, :rows, :cols
    ]
    y = x.new_empty(n, th, tile, tw, tile, k)  # output tiles, NHWC once reshaped
    row_tiles = n * tw
    block = max(
        block_bytes // (a * a * row_tiles * c * x.element_size()), -(-min_block_tiles // row_tiles)
    )
    block = min(th, max(1, block))
    for r0 in range(0, th, block):
        r1 = min(th, r0 + block)
        nb = r1 - r0
        xr = xp[:, tile * r0 : tile * r1 + 2]  # (n, tile * nb + 2, wp, c)
        # rows: (a, n, nb, wp, c); then columns: V (a, a, n, nb, tw, c)
        rt = x.new_empty(a, n, nb, wp, c)
        _input_pass([xr[:, i : i + tile * nb : tile] for i in range(a)], rt, tile)
        v = x.new_empty(a, a, n, nb, tw, c)
        _input_pass(
            [rt[:, :, :, j : j + tile * tw : tile] for j in range(a)], v.transpose(0, 1), tile
        )
        mt = torch.bmm(v.view(a * a, n * nb * tw, c), u).view(a, a, n, nb, tw, k)
        # rows: (tile, a, n, nb, tw, k); then columns into the output tiles
        m1 = x.new_empty(tile, a, n, nb, tw, k)
        _output_pass(mt, list(m1), tile)
        yb = y[:, r0:r1]  # (n, nb, tile, tw, tile, k)
        _output_pass(
            m1.transpose(0, 1),
            [yb[:, :, :, :, j].permute(2, 0, 1, 3, 4) for j in range(tile)],
            tile,
        )
    out = y.view(n, th * tile, tw * tile, k)[:, :ho, :wo].permute(0, 3, 1, 2)
    nchw = x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    exact = ho == th * tile and wo == tw * tile
    if not nchw and exact and bias is None:
        return out
    fmt = torch.contiguous_format if nchw else torch.channels_last
    dest = torch.empty(n, k, ho, wo, dtype=x.dtype, device=x.device, memory_format=fmt)
    if bias is None:
        return dest.copy_(out)
    return torch.add(out, bias.view(1, k, 1, 1), out=dest)


def is_winograd_eligible(conv: nn.Module, min_channels: int = 0) -> bool:
    """A plain ``nn.Conv2d`` that :class:`WinogradConv2d` computes exactly.

    3 x 3 kernel, stride 1, dilation 1, no groups, symmetric integer zero padding, float32
    weights, and ``min(C_in, C_out) >= min_channels`` (thin layers are faster direct).
    Subclasses (e.g. deformable convolutions) are never eligible.
    """
    if type(conv) is not nn.Conv2d:
        return False
    padding = conv.padding
    if isinstance(padding, str):
        padding = (1, 1) if padding == "same" else (0, 0)
    return (
        conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and padding[0] == padding[1]
        and conv.weight.dtype == torch.float32
        and min(conv.in_channels, conv.out_channels) >= min_channels
    )


class WinogradConv2d(nn.Module):
    """Inference replacement of a 3 x 3, stride-1 ``nn.Conv2d`` computed by Winograd.

    Holds the original ``weight`` / ``bias`` (frozen, same names as the conv, so the
    state dict is unchanged) and the transformed weight ``u`` (a non-persistent buffer).
    The Winograd path runs for float32 CPU tensors without autograd; anything else (CUDA,
    bf16 autocast, a graph that needs gradients) falls back to ``F.conv2d`` with the same
    weights.

    Args:
        conv: an eligible convolution (:func:`is_winograd_eligible`), already trained.
        tile: output tile size ``m`` (2 or 4; 4 cuts the multiplies 4x).

    Shapes:
        ``(N, C_in, H, W) -> (N, C_out, H + 2p - 2, W + 2p - 2)``.
    """

    def __init__(self, conv: nn.Conv2d, tile: int = 4):
        super().__init__()
        if not is_winograd_eligible(conv):
            raise ValueError(f"not a 3x3 stride-1 dense float32 nn.Conv2d: {conv}")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.padding = (
            1
            if isinstance(conv.padding, str) and conv.padding == "same"
            else (0 if isinstance(conv.padding, str) else conv.padding[0])
        )
        self.tile = tile
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        self.bias = (
            None
            if conv.bias is None
            else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        )
        self.register_buffer("u", transform_weight(self.weight, tile), persistent=False)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size=(3, 3), padding={self.padding}, "
            f"bias={self.bias is not None}, tile={self.tile}"
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            raise RuntimeError(
                "WinogradConv2d is for inference only: keep the network in eval mode"
            )
        if (
            x.device.type != "cpu"
            or x.dtype != torch.float32
            or torch.is_autocast_enabled("cpu")
            or (torch.is_grad_enabled() and x.requires_grad)
        ):
            return F.conv2d(x, self.weight, self.bias, padding=self.padding)
        return winograd_conv2d(x, self.u, self.bias, tile=self.tile, padding=self.padding)


def convert_to_winograd(module: nn.Module, *, tile: int = 4, min_channels: int = 128) -> int:
    """Swap every eligible ``nn.Conv2d`` of ``module`` for :class:`WinogradConv2d`, in place.

    Eligible: :func:`is_winograd_eligible` (3 x 3, stride 1, no dilation / groups, plain
    ``nn.Conv2d``) with at least ``min_channels`` input and output channels. On this
    2-core AVX2 CPU the Winograd layer took 0.4-0.7x the time of oneDNN's direct
    convolution from 128 channels up and lost below (64 -> 64 at 200 x 304:
    ``benchmarks/README.md``).

    Args:
        module: a network in eval mode (the conversion is for inference only).
        tile: output tile size ``m`` (2 or 4).
        min_channels: channel threshold (``conf/*.yaml: winograd.min_channels``).

    Returns:
        The number of converted convolutions.

    Raises:
        RuntimeError: ``module`` is in training mode.
    """
    if module.training:
        raise RuntimeError("convert_to_winograd needs the network in eval mode (net.eval())")
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if is_winograd_eligible(child, min_channels):
                wino = WinogradConv2d(child, tile).eval()
                if child.weight.is_contiguous(memory_format=torch.channels_last):
                    wino.weight.data = wino.weight.data.contiguous(
                        memory_format=torch.channels_last
                    )
                setattr(parent, name, wino)
                count += 1
    return count


__all__ = [
    "TILES",
    "WinogradConv2d",
    "convert_to_winograd",
    "is_winograd_eligible",
    "transform_weight",
    "winograd_conv2d",
    "winograd_matrices",
]
