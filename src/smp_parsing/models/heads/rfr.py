"""Refined Feature Retain (RFR) module (paper section 3.2, Fig. 3).

Not in the authors' release; built from the paper's description:

1. The kernel-branch feature of every cell is L2-normalised over channels, so the inner
   product of two cells is their cosine similarity; the dynamic kernels are produced from
   this feature, and a kernel is trained to have a high inner product with the mask
   features of its own instance, so cells of one instance end up similar.
2. Self-correlation of the normalised feature gives for every cell ``p`` an attention map
   over all cells ("mask attention"): ``A[p, q] = relu(cos(k_p, k_q))``, rows normalised
   to sum 1 (negative similarities carry no instance evidence and are clipped).
3. The category feature is multiplied by the attention of each position:
   ``R[:, p] = sum_q A[p, q] * F_cate[:, q]``, the refined feature.
4. ``R`` is the *offset input* of a deformable warp of the category feature: a conv on
   ``R`` predicts the DCNv2 offsets and mask, ``deform_conv2d`` samples ``F_cate`` with
   them, and the result is added back to ``F_cate`` (residual, GN + ReLU).

The module sits between the shared towers and the output convs of the part head
("after downsampling of the category and kernel branch", i.e. on the S x S level grid).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smp_parsing.models.layers.dcn import deform_conv2d_fp32


class RefinedFeatureRetain(nn.Module):
    """Mask-attention guided deformable warp of the part-category feature.

    Args:
        channels: width of the category and kernel tower features (512 in the paper).
        warp_groups: weight groups of the deformable warp conv. The warp's job is the
            adaptive sampling; the category output conv that follows mixes channels, so a
            grouped warp (32 groups: 9 GMAC -> 0.3 GMAC over the 1x grids at width 512)
            keeps the module cheap. ``1`` gives a dense 3x3 deformable conv.
        num_groups: GroupNorm groups of the warped branch.
        eps: floor of the attention row sums (guards an all-negative row).

    Shapes:
        ``cate_feat`` ``(B, C, S, S)``, ``kernel_feat`` ``(B, C, S, S)`` ->
        ``(B, C, S, S)`` refined category feature.
    """

    def __init__(
        self, *, channels: int, warp_groups: int = 32, num_groups: int = 32, eps: float = 1e-6
    ) -> None:
        super().__init__()
        if channels % warp_groups:
            raise ValueError(f"channels={channels} not divisible by warp_groups={warp_groups}")
        self.eps = eps
        # 9 (dy, dx) pairs + 9 modulation scalars of one 3x3 deformable kernel.
        self.offset_conv = nn.Conv2d(channels, 27, 3, padding=1)
        self.warp_weight = nn.Parameter(torch.empty(channels, channels // warp_groups, 3, 3))
        self.norm = nn.GroupNorm(num_groups, channels)
        nn.init.normal_(self.warp_weight, std=0.01)
        # Zero offsets at start: the warp begins as a plain (grouped) 3x3 conv on the grid.
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.zeros_(self.offset_conv.bias)

    def _correlation(self, kernel_feat: Tensor) -> tuple[Tensor, Tensor]:
        """Unnormalised attention ``relu(cos)`` ``(B, N, N)`` and its row sums ``(B, N)``."""
        k = F.normalize(kernel_feat.flatten(2).float(), dim=1)  # (B, C, N)
        # relu keeps only its output for backward: one N x N tensor saved per image.
        corr = torch.relu(torch.bmm(k.transpose(1, 2), k))
        return corr, corr.sum(dim=-1).clamp_min(self.eps)

    def mask_attention(self, kernel_feat: Tensor) -> Tensor:
        """Row-normalised cosine self-correlation of the kernel-branch feature.

        Args:
            kernel_feat: ``(B, C, S, S)``.

        Returns:
            ``(B, S*S, S*S)``: row ``p`` is the attention of cell ``p`` over all cells.
        """
        with torch.autocast(device_type=kernel_feat.device.type, enabled=False):
            corr, rows = self._correlation(kernel_feat)
            return corr / rows.unsqueeze(-1)

    def forward(self, cate_feat: Tensor, kernel_feat: Tensor) -> Tensor:
        """Refine the category feature with the kernel-branch mask attention.

        Args:
            cate_feat: ``(B, C, S, S)`` category tower output.
            kernel_feat: ``(B, C, S, S)`` kernel tower output.

        Returns:
            ``(B, C, S, S)``.
        """
        b, c, h, w = cate_feat.shape
        # float32 even under AMP: sums over S^2 cells lose precision in half. The row
        # normalisation is applied to the (C, N) product, not to the N x N attention, so
        # the 2x grids (N = 6400) keep a single N x N tensor per image in memory.
        with torch.autocast(device_type=cate_feat.device.type, enabled=False):
            corr, rows = self._correlation(kernel_feat)
            refined = torch.bmm(cate_feat.flatten(2).float(), corr.transpose(1, 2))
            refined = refined / rows.unsqueeze(1)
        refined = refined.view(b, c, h, w).to(cate_feat.dtype)
        off_mask = self.offset_conv(refined)
        offset, mask = off_mask[:, :18], off_mask[:, 18:].sigmoid()
        warped = deform_conv2d_fp32(cate_feat, offset, self.warp_weight, padding=(1, 1), mask=mask)
        return cate_feat + F.relu(self.norm(warped))
