"""Offset head: C_P decoupled AdaptBlock branches as grouped convolutions (section 3.1).

Each part class has its own small branch (DEKR's disentangled regression, Geng et al.
2021): a slice of ``branch_channels`` channels of the fused feature goes through an
AdaptBlock and a 1x1 conv to ``(dx, dy)``. The C_P branches are *one* set of grouped
convolutions (``groups = C_P``) and one ``deform_conv2d`` call with ``C_P`` weight and
offset groups, never a Python loop over classes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from smp_parsing.models.layers.blocks import init_conv_normal
from smp_parsing.models.layers.coordconv import add_coord_channels
from smp_parsing.models.layers.dcn import deform_conv2d_fp32
from smp_parsing.models.losses import offset_loss
from smp_parsing.models.targets.instances import BatchInstances
from smp_parsing.models.targets.offsets import OffsetTargets, build_offset_targets


def _regular_grid() -> Tensor:
    """``(2, 9)``: the ``(dy, dx)`` positions of the 3x3 kernel taps, row-major."""
    ys, xs = torch.meshgrid(torch.arange(-1.0, 2.0), torch.arange(-1.0, 2.0), indexing="ij")
    return torch.stack((ys.flatten(), xs.flatten()))


class GroupedAdaptBlock(nn.Module):
    """``groups`` independent DEKR AdaptBlocks of ``channels`` channels each, batched.

    Per group and pixel, a conv predicts a 2x2 matrix ``D`` and a translation ``t``; the
    3x3 taps are sampled at ``(I + D) r + t`` instead of the regular positions ``r``
    (an affine deformation of the kernel), i.e. deform offsets ``D r + t``. Both
    predicting convs are zero-initialised, so each block starts as a plain 3x3 conv
    (DEKR predicts ``I + D`` directly; with zero init all taps would collapse on the
    centre pixel). Then BatchNorm, residual, ReLU.

    Args:
        groups: number of branches (C_P).
        channels: channels per branch (22 in the release).

    Shapes:
        ``(B, groups * channels, S, S)`` -> same.
    """

    def __init__(self, *, groups: int, channels: int) -> None:
        super().__init__()
        self.groups = groups
        total = groups * channels
        # 4 entries of D and 2 of t per group, grouped so each branch only sees its slice.
        self.affine_conv = nn.Conv2d(total, groups * 6, 3, padding=1, groups=groups)
        self.weight = nn.Parameter(torch.empty(total, channels, 3, 3))
        self.norm = nn.BatchNorm2d(total)
        self.register_buffer("regular", _regular_grid(), persistent=False)
        nn.init.normal_(self.weight, std=0.01)
        nn.init.zeros_(self.affine_conv.weight)
        nn.init.zeros_(self.affine_conv.bias)

    def deform_offsets(self, x: Tensor) -> Tensor:
        """Per-group 3x3 sampling offsets from the predicted affine transforms.

        Args:
            x: ``(B, G * c, S, S)``.

        Returns:
            ``(B, G * 18, S, S)``, per group 9 ``(dy, dx)`` pairs (torchvision layout).
        """
        b, _, h, w = x.shape
        g = self.groups
        pred = self.affine_conv(x).float().view(b, g, 6, h, w)
        delta = pred[:, :, :4].view(b, g, 2, 2, h, w)  # D acting on (dy, dx)
        trans = pred[:, :, 4:]  # (B, G, 2, h, w) (dy, dx)
        # offsets[b, g, :, k] = D @ r_k + t
        offs = torch.einsum("bgijhw,jk->bgkihw", delta, self.regular.to(pred.dtype))
        offs = offs + trans.unsqueeze(2)
        return offs.reshape(b, g * 18, h, w)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the ``groups`` AdaptBlocks.

        Args:
            x: ``(B, G * c, S, S)``.

        Returns:
            ``(B, G * c, S, S)``.
        """
        # weight groups = offset groups = G: branch g only reads channels of group g.
        out = deform_conv2d_fp32(x, self.deform_offsets(x), self.weight, padding=(1, 1))
        return torch.relu(self.norm(out) + x)


class OffsetHead(nn.Module):
    """``fused + CoordConv -> conv3x3 to C_P * c -> C_P AdaptBlock branches -> C_P x (dx, dy)``.

    Args:
        num_classes: C_P.
        in_channels: channels of the fused input (5 x 256 = 1280).
        branch_channels: channels per part branch (22 in the release).
        num_blocks: AdaptBlocks per branch (1).
        reduce_kernel_size: kernel of the dense conv that splits the fused feature into the
            branches (3 as in the release; at 58 classes and 40 x 40 it costs ~24 GMAC, a 1
            here costs ~2.6 GMAC and leaves the spatial context to the AdaptBlocks).
        grid: S_c, the grid of its targets (SMP passes its scaled ``center_grid``).
        epsilon: center-region scale of its targets (SMP passes ``epsilon``).
        loss_weight: lambda_o of eq. 2 (SMP passes ``loss.offset_weight``).
        beta: Smooth L1 transition point (SMP passes ``loss.offset_beta``).

    Shapes:
        ``(B, in_channels, S_c, S_c)`` -> ``(B, C_P, 2, S_c, S_c)`` offsets in grid cells,
        ``(dx, dy)`` = human-center cell minus part barycenter cell.
    """

    loss_names = ("loss_offset",)

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 1280,
        branch_channels: int = 22,
        num_blocks: int = 1,
        reduce_kernel_size: int = 3,
        grid: int = 40,
        epsilon: float = 0.2,
        loss_weight: float = 1.0,
        beta: float = 1.0 / 9.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.grid = int(grid)
        self.epsilon = float(epsilon)
        self.loss_weight = float(loss_weight)
        self.beta = float(beta)
        total = num_classes * branch_channels
        self.reduce = nn.Sequential(
            nn.Conv2d(
                in_channels + 2,
                total,
                reduce_kernel_size,
                padding=reduce_kernel_size // 2,
                bias=False,
            ),
            nn.BatchNorm2d(total),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(
            *[
                GroupedAdaptBlock(groups=num_classes, channels=branch_channels)
                for _ in range(num_blocks)
            ]
        )
        self.out = nn.Conv2d(total, num_classes * 2, 1, groups=num_classes)
        init_conv_normal(self.reduce)
        init_conv_normal(self.out)

    def forward(self, fused: Tensor) -> Tensor:
        """Offsets for every part class at every cell.

        Args:
            fused: ``(B, in_channels, S_c, S_c)``.

        Returns:
            ``(B, C_P, 2, S_c, S_c)``.
        """
        x = self.blocks(self.reduce(add_coord_channels(fused)))
        out = self.out(x)
        b, _, h, w = out.shape
        return out.view(b, self.num_classes, 2, h, w)

    def build_targets(self, parsing_list: list[Tensor], instances: BatchInstances) -> OffsetTargets:
        """Offset targets and weights on the S_c grid (:func:`build_offset_targets`, no gradient)."""
        return build_offset_targets(instances, grid=self.grid, epsilon=self.epsilon)

    def loss(self, output: Tensor, targets: OffsetTargets) -> dict[str, Tensor]:
        """``loss_offset``: weighted scale-weighted Smooth L1 of the ``(B, C_P, 2, S_c, S_c)``
        offsets."""
        offset = offset_loss(output, targets.offsets, targets.weights, beta=self.beta)
        return {"loss_offset": self.loss_weight * offset}
