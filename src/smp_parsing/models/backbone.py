"""ResNet backbone (torchvision) returning C2..C5, with frozen stages, frozen BN and DCNv2.

Matches the paper's backbone settings (appendix listing: ``frozen_stages=1``, ImageNet
``torchvision://resnet*`` weights, BN statistics frozen as mmdet's ``norm_eval``) and the
``*`` rows of Table 2 (DCNv2 in stages 2-4).
"""

from __future__ import annotations

import contextlib
import socket
import urllib.error
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import get_weight, resnet

from smp_parsing.models.layers.dcn import ModulatedDeformConv2d

_RESNETS = {
    18: (resnet.resnet18, "ResNet18_Weights.IMAGENET1K_V1"),
    34: (resnet.resnet34, "ResNet34_Weights.IMAGENET1K_V1"),
    50: (resnet.resnet50, "ResNet50_Weights.IMAGENET1K_V1"),
    101: (resnet.resnet101, "ResNet101_Weights.IMAGENET1K_V1"),
}


class PretrainedWeightsError(RuntimeError):
    """ImageNet weights were requested but cannot be obtained."""


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Default timeout of the sockets opened in the block (the hub download's)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def load_resnet_state_dict(
    depth: int, pretrained: str, download_timeout: float = 30.0
) -> dict[str, Tensor] | None:
    """Fetch ImageNet weights for a torchvision ResNet.

    Args:
        depth: 18, 34, 50 or 101.
        pretrained: ``"none"`` (random init), ``"torchvision"`` (download / torch hub
            cache) or a path to a ``.pth`` state dict (``torch.load(weights_only=True)``;
            a ``{"state_dict": ...}`` wrapper is accepted).
        download_timeout: seconds a download may wait on one connect or read before it
            fails (torch hub itself sets none, so a network that drops packets would
            hang the run).

    Returns:
        The state dict, or ``None`` for ``"none"``.

    Raises:
        PretrainedWeightsError: download impossible or file missing/unreadable; the
            message says how to pass a local file or ``pretrained: none``.
    """
    if pretrained is None or str(pretrained).lower() in ("none", "false", ""):
        return None
    hint = (
        f"Pass a local file with `model.net.backbone.pretrained=/path/to/resnet{depth}.pth` "
        "(a torchvision ImageNet state dict) or train from scratch with "
        "`model.net.backbone.pretrained=none`."
    )
    if str(pretrained).lower() == "torchvision":
        weights = get_weight(_RESNETS[depth][1])
        try:
            with _socket_timeout(download_timeout):
                return weights.get_state_dict(progress=False)
        except (urllib.error.URLError, OSError, RuntimeError) as err:
            raise PretrainedWeightsError(
                f"Cannot download ImageNet weights {weights.url} ({err!r}). {hint}"
            ) from err
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise PretrainedWeightsError(f"Backbone weights file {path} does not exist. {hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unpickling problem is reported the same way
        raise PretrainedWeightsError(
            f"Backbone weights file {path} is not a readable state dict ({err}). {hint}"
        ) from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise PretrainedWeightsError(
            f"Backbone weights file {path} holds {type(state)}, not a dict."
        )
    return state


def _rebuild_with_width(net: resnet.ResNet, width: int) -> None:
    """Rebuild a torchvision ResNet's stem and stages in place with ``width`` base channels.

    Uses torchvision's own block classes and ``_make_layer`` so the structure (blocks per
    stage, strides, downsample branches) is exactly that of the standard ResNet.
    """
    block = type(net.layer1[0])
    blocks = [len(layer) for layer in (net.layer1, net.layer2, net.layer3, net.layer4)]
    net.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    net.inplanes = width
    net.layer1 = net._make_layer(block, width, blocks[0])
    net.layer2 = net._make_layer(block, width * 2, blocks[1], stride=2)
    net.layer3 = net._make_layer(block, width * 4, blocks[2], stride=2)
    net.layer4 = net._make_layer(block, width * 8, blocks[3], stride=2)
    # torchvision's ResNet initialisation (He-normal convs, unit BN)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _set_norm_eval(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


class ResNetBackbone(nn.Module):
    """torchvision ResNet trunk returning the four stage outputs C2..C5.

    Args:
        depth: 18, 34, 50 or 101.
        pretrained: ``"none"``, ``"torchvision"`` or a path (see :func:`load_resnet_state_dict`).
        frozen_stages: ``-1`` nothing frozen, ``0`` the stem, ``k >= 1`` the stem and
            stages 1..k (parameters get ``requires_grad=False`` and stay in eval mode).
        norm_eval: keep every BatchNorm in eval mode (running statistics frozen) even in
            ``train()``; the BN affine parameters of unfrozen stages still learn.
        dcn_stages: four booleans, stage 1..4; in a ``True`` stage every 3x3 conv of every
            block (Bottleneck: ``conv2``; BasicBlock: ``conv1`` and ``conv2``) becomes a
            :class:`~smp_parsing.models.layers.dcn.ModulatedDeformConv2d`.
        base_width: channels of the stem and stage 1 (64 in every torchvision ResNet); stages
            2-4 double it each time. A smaller width (e.g. 32) gives a CPU-sized trunk with the
            same structure; it cannot load ImageNet weights, so it needs ``pretrained="none"``.
        download_timeout: seconds one connect or read of the ``"torchvision"`` download may
            wait before the run fails with :class:`PretrainedWeightsError`.

    Shapes:
        input ``(B, 3, H, W)`` -> C2..C5 ``(B, C_i, ceil(H / s), ceil(W / s))`` with
        strides 4, 8, 16, 32 (``H, W`` need not be multiples of 32).
    """

    def __init__(
        self,
        *,
        depth: int = 50,
        pretrained: str = "torchvision",
        frozen_stages: int = 1,
        norm_eval: bool = True,
        dcn_stages: Sequence[bool] = (False, False, False, False),
        base_width: int = 64,
        download_timeout: float = 30.0,
    ) -> None:
        super().__init__()
        if depth not in _RESNETS:
            raise ValueError(f"ResNet depth must be one of {sorted(_RESNETS)}, got {depth}")
        if len(dcn_stages) != 4:
            raise ValueError(f"dcn_stages needs 4 booleans (stages 1-4), got {list(dcn_stages)}")
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be in [-1, 4], got {frozen_stages}")
        self.depth = depth
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        if base_width != 64 and str(pretrained).lower() not in ("none", "false", ""):
            raise ValueError(
                f"base_width={base_width} has no ImageNet weights: set pretrained=none "
                "(or base_width=64)"
            )
        net = _RESNETS[depth][0](weights=None)
        if base_width != 64:
            _rebuild_with_width(net, base_width)
        state = load_resnet_state_dict(depth, pretrained, download_timeout)
        if state is not None:
            try:
                missing, unexpected = net.load_state_dict(state, strict=False)
            except RuntimeError as err:  # shape mismatch: weights of another depth
                raise PretrainedWeightsError(
                    f"Weights {pretrained} do not fit ResNet-{depth}: {str(err)[:300]}"
                ) from err
            bad = [k for k in unexpected if not k.startswith("fc.")]
            if missing or bad:
                raise PretrainedWeightsError(
                    f"Weights {pretrained} do not fit ResNet-{depth}: missing {missing[:5]}, "
                    f"unexpected {bad[:5]}"
                )
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        block = net.layer1[0]
        expansion = 4 if isinstance(block, resnet.Bottleneck) else 1
        self.out_channels = [base_width * m * expansion for m in (1, 2, 4, 8)]
        for stage, with_dcn in zip(self.stages, dcn_stages):
            if with_dcn:
                for blk in stage:
                    for name in ("conv1", "conv2"):
                        conv = getattr(blk, name)
                        if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3):
                            setattr(blk, name, ModulatedDeformConv2d.from_conv(conv))
        self._freeze()

    @property
    def stages(self) -> list[nn.Sequential]:
        """The four residual stages, C2..C5 producers."""
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        return [self.stem, *self.stages[: self.frozen_stages]]

    def _freeze(self) -> None:
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> ResNetBackbone:
        """Switch mode but keep frozen stages (and all BN if ``norm_eval``) in eval mode."""
        super().train(mode)
        if mode:
            for m in self._frozen_modules():
                m.eval()
            if self.norm_eval:
                _set_norm_eval(self)
        return self

    def forward(self, images: Tensor) -> list[Tensor]:
        """Run the trunk.

        Args:
            images: ``(B, 3, H, W)`` normalised images.

        Returns:
            ``[C2, C3, C4, C5]``, strides 4, 8, 16, 32.
        """
        x = self.stem(images)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats
