"""Part head: category and kernel sub-heads shared over the five FPN levels (section 3.1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from smp_parsing.models.heads.rfr import RefinedFeatureRetain
from smp_parsing.models.layers.blocks import ConvTower, bias_for_prior, init_conv_normal
from smp_parsing.models.layers.coordconv import add_coord_channels
from smp_parsing.models.losses import dice_loss, part_category_loss, positive_mask_logits
from smp_parsing.models.targets.instances import BatchInstances
from smp_parsing.models.targets.parts import PartTargets, build_part_targets

# Table 1's scale ranges on sqrt(w h) of a part box, one per level P2..P6.
PAPER_SCALE_RANGES = ((1, 96), (48, 192), (96, 384), (192, 768), (384, 2048))


class PartLossInput(NamedTuple):
    """What the part head's loss reads: its own output and F_mask, which its kernels convolve.

    The mask feature branch has no loss of its own: F_mask is trained through the part head's
    Dice term, so SMP hands it to the part head's :meth:`PartHead.loss` next to the head output.

    Attributes:
        cate: per level ``(B, C_P, S_l, S_l)`` category logits.
        kernels: per level ``(B, C_K, S_l, S_l)`` dynamic kernels.
        mask_feat: F_mask, ``(B, C_K, h, w)`` at the mask stride.
    """

    cate: list[Tensor]
    kernels: list[Tensor]
    mask_feat: Tensor


def part_level_features(feats: Sequence[Tensor]) -> list[Tensor]:
    """Level inputs as in SOLOv2: P2 halved, P3, P4, P5, P6 resized to P5's size.

    This fixes the effective strides of the five part levels to 8, 8, 16, 32, 32 (the
    ``strides`` used for the mask-area filter at inference).

    Args:
        feats: ``[P2, P3, P4, P5, P6]``, each ``(B, C, H_i, W_i)``.

    Returns:
        Five maps ``(B, C, h_l, w_l)``.
    """
    if len(feats) != 5:
        raise ValueError(f"the part head needs the 5 pyramid levels P2..P6, got {len(feats)}")
    p2, p3, p4, p5, p6 = feats
    return [
        F.interpolate(p2, size=p3.shape[-2:], mode="bilinear", align_corners=False),
        p3,
        p4,
        p5,
        F.interpolate(p6, size=p5.shape[-2:], mode="bilinear", align_corners=False),
    ]


class PartHead(nn.Module):
    """Part category and part kernel sub-heads (shared weights across levels).

    Each level feature is resized to its grid ``S_l x S_l`` first (bilinear), so the towers
    run on ``sum_l S_l^2`` cells (3872 at 1x) and never at FPN resolution. The kernel
    branch gets two CoordConv channels; the category branch does not (categories are
    translation invariant, kernels must know where they are).

    The towers run once per level: the 5 grids have different sizes and GroupNorm must
    take its statistics per (sample, level), so a spatial packing of the levels into one
    canvas would need separator rows and per-level GN segments and waste at least ~20% of
    the conv FLOPs on gaps; five calls on exactly the needed cells do no redundant work.

    Args:
        num_classes: C_P, part classes (background excluded).
        num_grids: the five grid sizes ``S_l`` (already scaled by the grid factor).
        in_channels: FPN channels.
        kernel_channels: C_K, length of the dynamic kernels (= F_mask channels).
        tower_width: channels of the tower convs (512 in the paper).
        num_convs: depth of each tower (4 in the paper).
        num_groups: GroupNorm groups.
        prior_prob: initial foreground probability of the category logits (0.01).
        rfr: optional :class:`~smp_parsing.models.heads.rfr.RefinedFeatureRetain` applied
            between the towers and the category output conv.
        scale_ranges: five ``(lo, hi)`` ranges on ``sqrt(w h)`` of part boxes, the level
            assignment of its targets (SMP passes ``scale_ranges``).
        epsilon: center-region scale of its targets (SMP passes ``epsilon``).
        part_weight: lambda_p of eq. 2 (SMP passes ``loss.part_weight``).
        mask_weight: lambda_d of eq. 2 (SMP passes ``loss.mask_weight``).
        focal_alpha: focal alpha (SMP passes ``loss.focal_alpha``).
        focal_gamma: focal gamma (SMP passes ``loss.focal_gamma``).
        dice_eps: Dice smoothing (SMP passes ``loss.dice_eps``).

    Shapes:
        P2..P6 -> ``cate`` per level ``(B, C_P, S_l, S_l)`` and ``kernels`` per level
        ``(B, C_K, S_l, S_l)``.
    """

    loss_names = ("loss_part", "loss_mask")

    def __init__(
        self,
        *,
        num_classes: int,
        num_grids: Sequence[int],
        in_channels: int = 256,
        kernel_channels: int = 256,
        tower_width: int = 512,
        num_convs: int = 4,
        num_groups: int = 32,
        prior_prob: float = 0.01,
        rfr: RefinedFeatureRetain | None = None,
        scale_ranges: Sequence[Sequence[float]] = PAPER_SCALE_RANGES,
        epsilon: float = 0.2,
        part_weight: float = 1.0,
        mask_weight: float = 1.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        dice_eps: float = 0.002,
    ) -> None:
        super().__init__()
        if len(num_grids) != 5 or len(scale_ranges) != 5:
            raise ValueError(
                f"num_grids and scale_ranges need one entry per level P2..P6, got "
                f"{list(num_grids)} and {list(scale_ranges)}"
            )
        self.num_classes = num_classes
        self.num_grids = [int(s) for s in num_grids]
        self.scale_ranges = [tuple(float(v) for v in r) for r in scale_ranges]
        self.epsilon = float(epsilon)
        self.part_weight = float(part_weight)
        self.mask_weight = float(mask_weight)
        self.focal_alpha = float(focal_alpha)
        self.focal_gamma = float(focal_gamma)
        self.dice_eps = float(dice_eps)
        self.cate_tower = ConvTower(in_channels, tower_width, num_convs, num_groups)
        self.kernel_tower = ConvTower(in_channels + 2, tower_width, num_convs, num_groups)
        self.cate_out = nn.Conv2d(self.cate_tower.out_channels, num_classes, 3, padding=1)
        self.kernel_out = nn.Conv2d(self.kernel_tower.out_channels, kernel_channels, 3, padding=1)
        init_conv_normal(self.cate_tower)
        init_conv_normal(self.kernel_tower)
        init_conv_normal(self.cate_out)
        init_conv_normal(self.kernel_out)
        nn.init.constant_(self.cate_out.bias, bias_for_prior(prior_prob))
        self.rfr = rfr
        if rfr is not None and self.cate_tower.out_channels != self.kernel_tower.out_channels:
            raise ValueError("RFR needs category and kernel towers of the same width")

    def forward_level(self, feat: Tensor, grid: int) -> tuple[Tensor, Tensor]:
        """Category logits and kernels of one level.

        Args:
            feat: ``(B, C, h, w)`` level feature.
            grid: ``S``.

        Returns:
            ``(B, C_P, S, S)`` logits and ``(B, C_K, S, S)`` kernels.
        """
        x = F.interpolate(feat, size=(grid, grid), mode="bilinear", align_corners=False)
        kernel_feat = self.kernel_tower(add_coord_channels(x))
        cate_feat = self.cate_tower(x)
        if self.rfr is not None:
            cate_feat = self.rfr(cate_feat, kernel_feat)
        return self.cate_out(cate_feat), self.kernel_out(kernel_feat)

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Run both sub-heads on all levels.

        Args:
            feats: ``[P2, P3, P4, P5, P6]``.

        Returns:
            ``(cate, kernels)``, two lists of five tensors (finest level first).
        """
        cate, kernels = [], []
        for feat, grid in zip(part_level_features(feats), self.num_grids):
            c, k = self.forward_level(feat, grid)
            cate.append(c)
            kernels.append(k)
        return cate, kernels

    def build_targets(self, parsing_list: list[Tensor], instances: BatchInstances) -> PartTargets:
        """Per-level category targets, positive cells and their mask targets
        (:func:`build_part_targets`, no gradient)."""
        return build_part_targets(
            instances, grids=self.num_grids, scale_ranges=self.scale_ranges, epsilon=self.epsilon
        )

    def loss(self, output: PartLossInput, targets: PartTargets) -> dict[str, Tensor]:
        """``loss_part`` (focal, categories of all levels) and ``loss_mask`` (Dice of the
        positive cells' masks: their kernels convolved with F_mask), weighted."""
        part = part_category_loss(
            output.cate, targets.labels, alpha=self.focal_alpha, gamma=self.focal_gamma
        )
        mask_logits = positive_mask_logits(
            output.kernels, output.mask_feat, targets.pos_batch, targets.pos_level, targets.pos_cell
        )
        # With no positive, kernels and F_mask still get a (zero) gradient (DDP).
        untouched = sum(k.sum() for k in output.kernels) * 0 + output.mask_feat.sum() * 0
        mask = dice_loss(mask_logits, targets.mask_targets, eps=self.dice_eps) + untouched
        return {"loss_part": self.part_weight * part, "loss_mask": self.mask_weight * mask}
