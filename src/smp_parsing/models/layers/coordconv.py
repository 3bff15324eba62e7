"""CoordConv: append normalised (x, y) coordinate channels to a feature map.

SMP adds the relative position to the fused center/offset features and to the
part-kernel input (paper section 3.1, Liu et al. 2018) so that translation
invariant convolutions can tell *where* a cell is.
"""

from __future__ import annotations

import torch
from torch import Tensor


def coord_channels(x: Tensor) -> Tensor:
    """Coordinate maps matching ``x``.

    Args:
        x: ``(B, C, H, W)`` feature map; only its shape, dtype and device are used.

    Returns:
        ``(B, 2, H, W)``: channel 0 is x and channel 1 is y, both linearly spaced
        in ``[-1, 1]`` (a single row/column gets ``-1``).
    """
    b, _, h, w = x.shape
    xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
    ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((xx, yy)).unsqueeze(0).expand(b, -1, -1, -1)


def add_coord_channels(x: Tensor) -> Tensor:
    """Concatenate :func:`coord_channels` to ``x``.

    Args:
        x: ``(B, C, H, W)`` feature map.

    Returns:
        ``(B, C + 2, H, W)``, the coordinates last.
    """
    # Keep the memory format of the input so channels_last runs stay channels_last.
    out = torch.cat((x, coord_channels(x)), dim=1)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        out = out.contiguous(memory_format=torch.channels_last)
    return out
