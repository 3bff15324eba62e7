"""Feature pyramid (torchvision ``FeaturePyramidNetwork``) producing P2..P6."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool


class FPN(nn.Module):
    """FPN over C2..C5 plus P6 = stride-2 subsampling of P5 (mmdet ``num_outs=5``).

    Args:
        in_channels: channels of C2..C5 (``ResNetBackbone.out_channels``).
        out_channels: channels of every pyramid level (256 in the paper).

    Shapes:
        C2..C5 ``(B, in_channels[i], H_i, W_i)`` -> P2..P6 ``(B, out_channels, H_i, W_i)``,
        strides 4, 8, 16, 32, 64. Upsampling in the top-down path uses the size of the
        lateral map, so inputs that are not multiples of 32 work too.
    """

    def __init__(self, *, in_channels: Sequence[int], out_channels: int = 256) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.fpn = FeaturePyramidNetwork(
            list(in_channels), out_channels, extra_blocks=LastLevelMaxPool()
        )

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        """Build the pyramid.

        Args:
            feats: ``[C2, C3, C4, C5]``.

        Returns:
            ``[P2, P3, P4, P5, P6]``.
        """
        named = OrderedDict((f"c{i + 2}", f) for i, f in enumerate(feats))
        return list(self.fpn(named).values())
