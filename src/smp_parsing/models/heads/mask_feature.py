"""Mask feature branch F_mask (paper section 3.1, SOLOv2 ``MaskFeatModule``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from smp_parsing.models.layers.blocks import ConvGNReLU, init_conv_normal
from smp_parsing.models.layers.coordconv import add_coord_channels


class MaskFeatureBranch(nn.Module):
    """Fuse P2..P5 at stride 4 into the mask features the dynamic part kernels act on.

    Level ``i`` (0 = P2) goes through ``max(i, 1)`` conv3x3-GN-ReLU of width
    ``feat_channels``, each but the first-level one followed by a x2 bilinear upsampling,
    so every level reaches stride 4; the coarsest level gets CoordConv channels first
    (absolute position for the position-sensitive kernels). The levels are summed and
    a 1x1 conv-GN-ReLU gives ``out_channels`` = C_K channels.

    Args:
        in_channels: FPN channels (256).
        feat_channels: width of the per-level convs (128 in the paper).
        out_channels: C_K, the dynamic kernel length (256 in the paper).
        num_levels: number of pyramid levels used, from P2 up (4: P2..P5).
        num_groups: GroupNorm groups.

    Shapes:
        ``[P2, ..., P_{num_levels+1}]`` -> ``(B, out_channels, H/4, W/4)`` (P2's size).
    """

    def __init__(
        self,
        *,
        in_channels: int = 256,
        feat_channels: int = 128,
        out_channels: int = 256,
        num_levels: int = 4,
        num_groups: int = 32,
    ) -> None:
        super().__init__()
        self.num_levels = num_levels
        self.out_channels = out_channels
        self.levels = nn.ModuleList()
        for i in range(num_levels):
            extra = 2 if i == num_levels - 1 and i > 0 else 0
            convs = [
                ConvGNReLU(
                    (in_channels + extra) if j == 0 else feat_channels,
                    feat_channels,
                    num_groups=num_groups,
                )
                for j in range(max(i, 1))
            ]
            self.levels.append(nn.ModuleList(convs))
        self.fuse = ConvGNReLU(feat_channels, out_channels, kernel_size=1, num_groups=num_groups)
        init_conv_normal(self)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        """Fuse the levels.

        Args:
            feats: pyramid maps, at least ``num_levels`` of them, finest first.

        Returns:
            ``(B, out_channels, H2, W2)`` with ``H2 x W2`` the size of P2.
        """
        out = None
        for i, convs in enumerate(self.levels):
            x = feats[i]
            if i == self.num_levels - 1 and i > 0:
                x = add_coord_channels(x)
            for j, conv in enumerate(convs):
                x = conv(x)
                if i > 0:
                    # Upsample to the next finer level's exact size (odd inputs round up).
                    target = feats[i - 1 - j].shape[-2:]
                    x = F.interpolate(x, size=target, mode="bilinear", align_corners=False)
            out = x if out is None else out + x
        return self.fuse(out)
