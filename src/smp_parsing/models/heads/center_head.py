"""Human-center head (paper section 3.1) and the S x S multi-level fusion it shares."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smp_parsing.models.layers.blocks import ConvGNReLU, ConvTower, bias_for_prior, init_conv_normal
from smp_parsing.models.layers.coordconv import add_coord_channels
from smp_parsing.models.losses import center_loss
from smp_parsing.models.targets.center import CenterTargets, build_center_targets
from smp_parsing.models.targets.instances import BatchInstances


def resize_concat(feats: Sequence[Tensor], grid: int) -> Tensor:
    """Resize every pyramid level to ``grid x grid`` (bilinear) and concatenate them.

    The paper resizes first and fuses after (section 3.1); fusing at stride 4 as the
    authors' release does costs ~180 GFLOPs at 800x1216 for one conv, so the fusion convs
    of the center and offset heads run on this ``S x S`` tensor, computed once.

    Args:
        feats: ``[P2, ..., P6]``, each ``(B, C, H_i, W_i)``.
        grid: S_c.

    Returns:
        ``(B, len(feats) * C, S_c, S_c)``.
    """
    return torch.cat(
        [F.interpolate(f, size=(grid, grid), mode="bilinear", align_corners=False) for f in feats],
        dim=1,
    )


class CenterHead(nn.Module):
    """``fused (5C ch) -> conv3x3 fusion -> CoordConv -> tower -> conv3x3 -> 1 logit``.

    Args:
        in_channels: channels of the fused input (5 x 256 = 1280).
        fusion_channels: output of the fusion conv (256).
        tower_width: tower conv width (512 in the paper).
        num_convs: tower depth (4).
        num_groups: GroupNorm groups.
        prior_prob: initial center probability (0.01).
        grid: S_c, the grid of its targets (SMP passes its scaled ``center_grid``).
        epsilon: center-region scale of its targets (SMP passes ``epsilon``).
        loss_weight: lambda_c of eq. 2 (SMP passes ``loss.center_weight``).
        focal_alpha: focal alpha (SMP passes ``loss.focal_alpha``).
        focal_gamma: focal gamma (SMP passes ``loss.focal_gamma``).

    Shapes:
        ``(B, in_channels, S_c, S_c)`` -> ``(B, 1, S_c, S_c)`` logits.
    """

    loss_names = ("loss_center",)

    def __init__(
        self,
        *,
        in_channels: int = 1280,
        fusion_channels: int = 256,
        tower_width: int = 512,
        num_convs: int = 4,
        num_groups: int = 32,
        prior_prob: float = 0.01,
        grid: int = 40,
        epsilon: float = 0.2,
        loss_weight: float = 1.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        self.grid = int(grid)
        self.epsilon = float(epsilon)
        self.loss_weight = float(loss_weight)
        self.focal_alpha = float(focal_alpha)
        self.focal_gamma = float(focal_gamma)
        self.fusion = ConvGNReLU(in_channels, fusion_channels, num_groups=num_groups)
        self.tower = ConvTower(fusion_channels + 2, tower_width, num_convs, num_groups)
        self.out = nn.Conv2d(self.tower.out_channels, 1, 3, padding=1)
        init_conv_normal(self)
        nn.init.constant_(self.out.bias, bias_for_prior(prior_prob))

    def forward(self, fused: Tensor) -> Tensor:
        """Center logits.

        Args:
            fused: ``(B, in_channels, S_c, S_c)`` from :func:`resize_concat`.

        Returns:
            ``(B, 1, S_c, S_c)``.
        """
        x = add_coord_channels(self.fusion(fused))
        return self.out(self.tower(x))

    def build_targets(self, parsing_list: list[Tensor], instances: BatchInstances) -> CenterTargets:
        """Center heatmap targets on the S_c grid (:func:`build_center_targets`, no gradient)."""
        return build_center_targets(instances, grid=self.grid, epsilon=self.epsilon)

    def loss(self, output: Tensor, targets: CenterTargets) -> dict[str, Tensor]:
        """``loss_center``: weighted focal loss of the ``(B, 1, S_c, S_c)`` center logits."""
        center = center_loss(
            output, targets.heatmap, targets.num_pos, alpha=self.focal_alpha, gamma=self.focal_gamma
        )
        return {"loss_center": self.loss_weight * center}
