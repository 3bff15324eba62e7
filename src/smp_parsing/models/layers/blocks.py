"""Small building blocks shared by the SMP heads: conv-GN-ReLU towers and SOLOv2 init."""

from __future__ import annotations

import math

from torch import nn


def bias_for_prior(prior_prob: float) -> float:
    """Bias that makes ``sigmoid(bias) == prior_prob`` (focal-loss init, Lin et al. 2017).

    Args:
        prior_prob: initial foreground probability in ``(0, 1)``.

    Returns:
        ``-log((1 - p) / p)``.
    """
    if not 0.0 < prior_prob < 1.0:
        raise ValueError(f"prior_prob must be in (0, 1), got {prior_prob}")
    return -math.log((1.0 - prior_prob) / prior_prob)


def init_conv_normal(module: nn.Module, std: float = 0.01) -> None:
    """SOLOv2 initialisation: every ``Conv2d``/``Linear`` weight ~ N(0, std), bias 0.

    Args:
        module: module whose sub-modules are re-initialised in place.
        std: standard deviation of the weights.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ConvGNReLU(nn.Sequential):
    """``conv(k x k) -> GroupNorm -> ReLU``; the conv has no bias because GN re-centres."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        num_groups: int = 32,
    ) -> None:
        if out_channels % num_groups:
            raise ValueError(
                f"out_channels={out_channels} must be divisible by num_groups={num_groups}"
            )
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.GroupNorm(num_groups, out_channels),
            nn.ReLU(inplace=True),
        )


class ConvTower(nn.Sequential):
    """``num_convs`` x :class:`ConvGNReLU` (3x3) of width ``width``.

    Args:
        in_channels: channels of the input.
        width: channels of every conv of the tower (512 in the paper).
        num_convs: depth of the tower (4 in the paper); 0 gives the identity.
        num_groups: GroupNorm groups (32 in the paper).
    """

    def __init__(self, in_channels: int, width: int, num_convs: int, num_groups: int = 32):
        layers = [
            ConvGNReLU(in_channels if i == 0 else width, width, num_groups=num_groups)
            for i in range(num_convs)
        ]
        super().__init__(*layers)
        self.out_channels = width if num_convs > 0 else in_channels
