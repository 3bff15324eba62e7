"""SMP: Single-stage Multi-human Parsing (Chu et al. 2023), the network.

``forward`` returns the raw head outputs (:class:`SMPOutputs`); ``loss`` extracts the batch's
persons and parts once and loops over the heads: each builds its targets and its terms of eq. 2
(the center, part and offset heads call the pure builders of :mod:`smp_parsing.models.targets`
and the losses of :mod:`smp_parsing.models.losses`; MIR and extra heads bring their own);
``predict`` runs the single-stage decoding of section 4.1
(:func:`smp_parsing.models.decode.decode_parsing`), then the heads' decode hooks (MIR relabels).

Input size: ``forward`` accepts any ``H, W >= 32``; ``loss`` needs ``H, W`` multiples of
the mask stride (4) so that F_mask is exactly ``H/4 x W/4``; the data pipeline pads to a
multiple of 32, which is what the strides of P2..P6 and the paper assume.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn

from smp_parsing.models.decode import decode_parsing
from smp_parsing.models.fpn import FPN
from smp_parsing.models.heads.base import DecodingHead, SMPHead, wants_built_targets
from smp_parsing.models.heads.center_head import CenterHead, resize_concat
from smp_parsing.models.heads.mask_feature import MaskFeatureBranch
from smp_parsing.models.heads.mir import MIRHead, MIROutput
from smp_parsing.models.heads.offset_head import OffsetHead
from smp_parsing.models.heads.part_head import PartHead, PartLossInput
from smp_parsing.models.heads.rfr import RefinedFeatureRetain
from smp_parsing.models.layers.precision import autocast_off
from smp_parsing.models.outputs import SMPOutputs
from smp_parsing.models.targets import SMPTargets
from smp_parsing.models.targets.instances import extract_instances

ModuleSpec = Callable[..., nn.Module] | Mapping[str, Any] | None

# The ``loss`` settings of eq. 2 (keys of ``conf/model/net/smp.yaml``'s ``loss``) -> the built-in
# head and constructor argument each one goes to (focal alpha/gamma go to both focal terms).
LOSS_SETTINGS: dict[str, tuple[tuple[str, str], ...]] = {
    "center_weight": (("center", "loss_weight"),),
    "part_weight": (("part", "part_weight"),),
    "mask_weight": (("part", "mask_weight"),),
    "offset_weight": (("offset", "loss_weight"),),
    "focal_alpha": (("center", "focal_alpha"), ("part", "focal_alpha")),
    "focal_gamma": (("center", "focal_gamma"), ("part", "focal_gamma")),
    "offset_beta": (("offset", "beta"),),
    "dice_eps": (("part", "dice_eps"),),
}
# The ``mir_loss`` settings -> the MIR head's constructor arguments.
MIR_LOSS_SETTINGS: dict[str, str] = {
    "weight": "loss_weight",
    "semantic_weight": "semantic_weight",
    "focal_alpha": "focal_alpha",
    "focal_gamma": "focal_gamma",
    "max_rois": "max_rois",
}


def scale_grid(grid: int, grid_scale: float) -> int:
    """Grid size times the Table 5 factor, rounded to the nearest integer (at least 1)."""
    return max(1, int(round(grid * grid_scale)))


def _build(spec: ModuleSpec, default: type[nn.Module], **given: Any) -> nn.Module:
    """Instantiate a sub-module from a Hydra partial (callable) or a plain kwargs mapping.

    ``given`` holds the arguments SMP derives itself (classes, grids, channels); the spec
    holds everything else, from ``conf/model/net/smp.yaml``.
    """
    if spec is None:
        return default(**given)
    if isinstance(spec, Mapping):
        kwargs = {k: v for k, v in dict(spec).items() if not str(k).startswith("_")}
        clash = sorted(set(kwargs) & set(given))
        if clash:
            raise ValueError(f"{default.__name__}: {clash} are set by SMP, remove them from config")
        return default(**kwargs, **given)
    return spec(**given)


class SMP(nn.Module):
    """The SMP network (backbone, FPN, mask feature branch, part/center/offset heads, RFR, MIR).

    All arguments are keyword-only and come from ``conf/model/net/smp.yaml``.

    Args:
        num_classes: C, classes including background (59 for MHP v2, 15 for DensePose);
            the heads predict ``C_P = C - 1`` part classes.
        backbone: a :class:`~smp_parsing.models.backbone.ResNetBackbone` (or any module
            returning C2..C5 and exposing ``out_channels``).
        fpn_channels: channels of P2..P6 (256).
        num_grids: base part grids of P2..P6 (40, 36, 24, 16, 12; doubled for DensePose).
        center_grid: base grid of the center and offset heads (40; 80 for DensePose).
        grid_scale: Table 5 factor applied to all grids (0.5, 1, 2), rounded to int.
        kernel_channels: C_K, dynamic kernel length = F_mask channels (256).
        mask_feature: kwargs or partial of :class:`MaskFeatureBranch`.
        part_head: kwargs or partial of :class:`PartHead`.
        center_head: kwargs or partial of :class:`CenterHead`.
        offset_head: kwargs or partial of :class:`OffsetHead`.
        rfr: use the Refined Feature Retain module (section 3.2).
        rfr_module: kwargs or partial of :class:`RefinedFeatureRetain`.
        mir: build the Mask of Interest Reclassify module (section 3.3).
        mir_head: kwargs or partial of :class:`MIRHead`.
        extra_heads: name -> partial of a head added to SMP (:class:`~smp_parsing.models.heads.
            base.SMPHead`: module on the FPN levels + ``build_targets`` + ``loss``, optionally
            ``decode``), built with ``in_channels=fpn_channels``; its output goes to
            ``SMPOutputs.extra[name]``, its loss terms into :meth:`loss`, and its ``decode``
            hook adds to :meth:`predict`'s dicts.
        epsilon: center-region scale (the release's ``sigma``, 0.2).
        scale_ranges: five ``(lo, hi)`` ranges on ``sqrt(w h)`` of part boxes.
        strides: five level strides for the mask-area filter (8, 8, 16, 32, 32).
        mask_stride: stride of F_mask (4).
        loss: the settings of eq. 2 (``center_weight`` 1, ``part_weight`` 1, ``mask_weight`` 3,
            ``offset_weight`` 10, focal alpha/gamma, Smooth L1 beta, Dice eps), handed to the
            center, part and offset heads that compute the terms (``LOSS_SETTINGS``).
        mir_loss: MIR loss settings: ``weight`` (RoI focal), ``semantic_weight`` (CE),
            ``focal_alpha``, ``focal_gamma``, ``max_rois`` (RoIs sampled per batch), handed to
            the MIR head (``MIR_LOSS_SETTINGS``).
        test_cfg: keyword arguments of :func:`smp_parsing.models.decode.decode_parsing`
            (thresholds of the appendix) plus ``mir_score_thr`` (MIR relabel threshold, handed
            to the MIR head).
        channels_last: keep the weights and the input in ``torch.channels_last`` memory
            format (same outputs; oneDNN convolutions skip their layout reorders, which
            makes the backbone + FPN ~25% faster on the CPU, see ``benchmarks/``).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        backbone: nn.Module,
        fpn_channels: int = 256,
        num_grids: Sequence[int] = (40, 36, 24, 16, 12),
        center_grid: int = 40,
        grid_scale: float = 1.0,
        kernel_channels: int = 256,
        mask_feature: ModuleSpec = None,
        part_head: ModuleSpec = None,
        center_head: ModuleSpec = None,
        offset_head: ModuleSpec = None,
        rfr: bool = True,
        rfr_module: ModuleSpec = None,
        mir: bool = False,
        mir_head: ModuleSpec = None,
        extra_heads: Mapping[str, Callable[..., nn.Module]] | None = None,
        epsilon: float = 0.2,
        scale_ranges: Sequence[Sequence[float]] = (
            (1, 96),
            (48, 192),
            (96, 384),
            (192, 768),
            (384, 2048),
        ),
        strides: Sequence[int] = (8, 8, 16, 32, 32),
        mask_stride: int = 4,
        loss: Mapping[str, float] | None = None,
        mir_loss: Mapping[str, float] | None = None,
        test_cfg: Mapping[str, Any] | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes counts background and parts, got {num_classes}")
        if len(num_grids) != 5 or len(scale_ranges) != 5 or len(strides) != 5:
            raise ValueError("num_grids, scale_ranges and strides need 5 entries (P2..P6)")
        self.num_classes = num_classes
        self.num_parts = num_classes - 1
        self.part_grids = [scale_grid(g, grid_scale) for g in num_grids]
        self.center_grid = scale_grid(center_grid, grid_scale)
        self.epsilon = float(epsilon)
        self.scale_ranges = [tuple(float(v) for v in r) for r in scale_ranges]
        self.strides = [int(s) for s in strides]
        self.mask_stride = int(mask_stride)
        self.loss_cfg = dict(loss or {})
        head_loss = _split_loss_settings(self.loss_cfg)
        self.test_cfg = dict(test_cfg or {})
        self._mir_score_thr = float(self.test_cfg.pop("mir_score_thr", 0.5))

        self.backbone = backbone
        self.fpn = FPN(in_channels=list(backbone.out_channels), out_channels=fpn_channels)
        self.mask_feature = _build(
            mask_feature,
            MaskFeatureBranch,
            in_channels=fpn_channels,
            out_channels=kernel_channels,
        )
        self.part_head = _build(
            part_head,
            PartHead,
            num_classes=self.num_parts,
            num_grids=self.part_grids,
            in_channels=fpn_channels,
            kernel_channels=kernel_channels,
            scale_ranges=self.scale_ranges,
            epsilon=self.epsilon,
            **head_loss["part"],
        )
        if rfr:
            # built after the part head: its width is the tower width chosen in part_head.
            self.part_head.rfr = _build(
                rfr_module, RefinedFeatureRetain, channels=self.part_head.cate_tower.out_channels
            )
        fused_channels = 5 * fpn_channels
        self.center_head = _build(
            center_head,
            CenterHead,
            in_channels=fused_channels,
            grid=self.center_grid,
            epsilon=self.epsilon,
            **head_loss["center"],
        )
        self.offset_head = _build(
            offset_head,
            OffsetHead,
            num_classes=self.num_parts,
            in_channels=fused_channels,
            grid=self.center_grid,
            epsilon=self.epsilon,
            **head_loss["offset"],
        )
        self.mir_head = (
            _build(
                mir_head,
                MIRHead,
                num_classes=self.num_parts,
                in_channels=kernel_channels,
                mask_stride=self.mask_stride,
                score_thr=self._mir_score_thr,
                **_mir_loss_settings(mir_loss or {}),
            )
            if mir
            else None
        )
        self.extra_heads = nn.ModuleDict(
            {
                name: _build_head(name, spec, fpn_channels)
                for name, spec in (extra_heads or {}).items()
            }
        )
        # The heads whose terms train (None: all); the MIR stage trains ``mir`` alone.
        self._trained_heads: frozenset[str] | None = None
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ forward
    def forward(self, images: Tensor) -> SMPOutputs:
        """Run the network.

        Args:
            images: ``(B, 3, H, W)`` normalised images (any ``H, W >= 32``).

        Returns:
            :class:`SMPOutputs`: ``center`` ``(B, 1, S_c, S_c)``, ``offsets``
            ``(B, C_P, 2, S_c, S_c)``, ``cate``/``kernels`` per level, ``mask_feat``
            ``(B, C_K, ceil(H/4), ceil(W/4))`` and the MIR maps when MIR is on.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"SMP expects images of shape (B, 3, H, W), got {tuple(images.shape)}")
        if min(images.shape[-2:]) < 32:
            raise ValueError(f"SMP needs H, W >= 32, got {tuple(images.shape[-2:])}")
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        feats = self.fpn(self.backbone(images))
        mask_feat = self.mask_feature(feats[:4])
        cate, kernels = self.part_head(feats)
        fused = resize_concat(feats, self.center_grid)
        center = self.center_head(fused)
        offsets = self.offset_head(fused)
        mir_feat = mir_semantic = None
        if self.mir_head is not None:
            mir_feat, mir_semantic = self.mir_head.features(mask_feat)
        extra = {name: head(feats) for name, head in self.extra_heads.items()}
        return SMPOutputs(
            center=center,
            offsets=offsets,
            cate=cate,
            kernels=kernels,
            mask_feat=mask_feat,
            mir_feat=mir_feat,
            mir_semantic=mir_semantic,
            extra=extra,
        )

    # ------------------------------------------------------------------ training
    def build_targets(self, parsing_list: list[Tensor]) -> SMPTargets:
        """The shared instances (extracted once) and the built-in heads' targets (no gradient).

        Args:
            parsing_list: per image ``(N_i, H, W)`` integer person maps at the padded input size.
        """
        with torch.no_grad(), autocast_off():
            instances = extract_instances(
                parsing_list, self.num_classes, mask_stride=self.mask_stride
            )
            return SMPTargets(
                instances=instances,
                center=self.center_head.build_targets(parsing_list, instances),
                parts=self.part_head.build_targets(parsing_list, instances),
                offsets=self.offset_head.build_targets(parsing_list, instances),
            )

    def loss_heads(self, outputs: SMPOutputs) -> dict[str, tuple[nn.Module, Any]]:
        """Every head (:class:`SMPHead`) and the output its ``loss`` (and ``decode``) reads.

        The built-in heads first (``center``, ``part``, ``offset``), then MIR when it is on
        (``mir``), then ``extra_heads``; this is the order of the loss terms. The part head
        reads its output with F_mask (:class:`PartLossInput`): the mask feature branch is
        trained through the part head's Dice term; MIR reads its maps with the part head's
        kernels and F_mask (:class:`MIROutput`), whose masks are its RoIs.
        """
        heads: dict[str, tuple[nn.Module, Any]] = {
            "center": (self.center_head, outputs.center),
            "part": (
                self.part_head,
                PartLossInput(outputs.cate, outputs.kernels, outputs.mask_feat),
            ),
            "offset": (self.offset_head, outputs.offsets),
        }
        if self.mir_head is not None:
            heads["mir"] = (
                self.mir_head,
                MIROutput(
                    outputs.mir_feat, outputs.mir_semantic, outputs.kernels, outputs.mask_feat
                ),
            )
        heads.update({name: (head, outputs.extra[name]) for name, head in self.extra_heads.items()})
        return heads

    def loss(self, outputs: SMPOutputs, parsing_list: list[Tensor]) -> dict[str, Tensor]:
        """Weighted loss terms of eq. 2 (+ MIR when it is on, + the extra heads' terms).

        The persons and parts are extracted once (:meth:`build_targets`); each head then builds
        its targets from them (and from the targets of the heads before it, when it asks for
        them) and returns its terms (:meth:`loss_heads`).

        Args:
            outputs: the forward outputs of the batch.
            parsing_list: per image ``(N_i, H, W)`` integer person maps at the padded input
                size (``N_i`` may be 0).

        Returns:
            ``loss_center``, ``loss_part``, ``loss_mask``, ``loss_offset`` (and
            ``loss_mir`` when MIR is on, then the extra heads' terms) and ``loss`` = their
            sum; float32 scalars with a (possibly zero) gradient for every trainable parameter.
        """
        h, w = outputs.mask_feat.shape[-2:]
        if len(parsing_list) != outputs.center.shape[0]:
            raise ValueError(
                f"{len(parsing_list)} parsing maps for a batch of {outputs.center.shape[0]}"
            )
        for i, p in enumerate(parsing_list):
            if p.dim() != 3 or tuple(p.shape[-2:]) != (h * self.mask_stride, w * self.mask_stride):
                raise ValueError(
                    f"parsing_list[{i}] has shape {tuple(p.shape)}; expected (N, "
                    f"{h * self.mask_stride}, {w * self.mask_stride}) = the padded input size, "
                    f"which must be a multiple of {self.mask_stride}"
                )
        out = _float32(outputs)
        targets = self.build_targets(parsing_list)
        built: dict[str, Any] = {
            "center": targets.center,
            "part": targets.parts,
            "offset": targets.offsets,
        }
        builtin = set(built)
        # The MIR stage trains MIR alone: the built-in heads' terms are a zero attached to their
        # outputs (their losses are not computed), the other heads' terms are zeroed.
        frozen_stage = self._trained_heads is not None
        zero = _zero_like_graph(out) if frozen_stage else None
        losses: dict[str, Tensor] = {}
        for name, (head, output) in self.loss_heads(out).items():
            trains = not frozen_stage or name in self._trained_heads
            if name in builtin and not trains:
                terms = {k: zero.clone() for k in head.loss_names}
            else:
                if name not in built:
                    built[name] = self._head_targets(head, parsing_list, targets.instances, built)
                terms = self._head_losses(name, head, output, built[name], losses)
                if not trains:
                    terms = {k: v * 0 for k, v in terms.items()}
            losses.update(terms)
        losses["loss"] = sum(losses.values())
        return losses

    @staticmethod
    def _head_targets(
        head: nn.Module, parsing_list: list[Tensor], instances: Any, built: Mapping[str, Any]
    ) -> Any:
        """One head's targets (no gradient), with the earlier heads' when it asks for them."""
        with torch.no_grad():
            if wants_built_targets(head):
                return head.build_targets(parsing_list, instances, MappingProxyType(dict(built)))
            return head.build_targets(parsing_list, instances)

    def _head_losses(
        self, name: str, head: nn.Module, output: Any, targets: Any, taken: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        """One head's loss terms, in fp32, checked: named ``loss_<what>``, none taken twice."""
        with autocast_off():
            terms = dict(head.loss(output, targets))
        clash = sorted(set(terms) & ({*taken, "loss"}))
        if clash or not all(k.startswith("loss_") for k in terms):
            raise ValueError(f"head {name!r}: loss terms {sorted(terms)} must be named "
                             f"loss_<what> and not repeat {sorted(taken)}")  # fmt: skip
        return terms

    def freeze_for_mir(self) -> None:
        """Second training stage of the paper: train MIR only, everything else frozen.

        Parameters outside ``mir_head`` stop requiring gradients and their modules stay in
        eval mode (BatchNorm statistics frozen); ``loss`` then returns zero for the four
        SMP terms and the MIR loss as ``loss``.

        Raises:
            RuntimeError: MIR is off (``mir: false``).
        """
        if self.mir_head is None:
            raise RuntimeError("freeze_for_mir needs an SMP built with mir=true")
        for name, p in self.named_parameters():
            p.requires_grad_(name.startswith("mir_head."))
        self._trained_heads = frozenset({"mir"})
        self.train(self.training)

    def train(self, mode: bool = True) -> SMP:
        """Switch mode; in the MIR stage everything but ``mir_head`` stays in eval mode."""
        super().train(mode)
        if mode and self._trained_heads is not None:
            for name, child in self.named_children():
                if name != "mir_head":
                    child.eval()
        return self

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(
        self, outputs: SMPOutputs, metas: list[dict], return_intermediates: bool = False
    ) -> list[dict]:
        """Decode person parsing maps (section 4.1), then the heads' decode hooks.

        The heads with a ``decode`` (:class:`DecodingHead`) run in :meth:`loss_heads` order:
        MIR relabels the parts when it is on, an extra head may add keys of its own.

        Args:
            outputs: forward outputs of a batch.
            metas: per image ``img_size`` (h, w) and ``ori_size`` (H0, W0).
            return_intermediates: add the maps a visualiser needs.

        Returns:
            Per image ``parsing`` ``(P, H0, W0)`` uint8 and ``scores`` ``(P,)`` (see
            :func:`~smp_parsing.models.decode.decode_parsing`), plus the heads' keys.
        """
        out = _float32(outputs)
        preds = decode_parsing(
            out,
            metas,
            strides=self.strides,
            mask_stride=self.mask_stride,
            return_intermediates=return_intermediates,
            **self.test_cfg,
        )
        for head, output in self.loss_heads(out).values():
            if isinstance(head, DecodingHead):
                preds = head.decode(output, preds, metas)
        return preds

    def mir_relabel(self, mir_feat: Tensor, pred: dict, meta: dict) -> dict:
        """One decoded image relabelled by MIR (:meth:`MIRHead.relabel`) at ``mir_score_thr``."""
        return self.mir_head.relabel(mir_feat, pred, meta)

    @property
    def mir_score_thr(self) -> float:
        """MIR's relabel threshold (``test_cfg.mir_score_thr``), held by the MIR head."""
        return self._mir_score_thr if self.mir_head is None else self.mir_head.score_thr

    @mir_score_thr.setter
    def mir_score_thr(self, value: float) -> None:
        self._mir_score_thr = float(value)
        if self.mir_head is not None:
            self.mir_head.score_thr = float(value)

    # ------------------------------------------------------------------ helpers
    def num_parameters(self, trainable_only: bool = False) -> dict[str, int]:
        """Parameter counts per top-level component and in total.

        Args:
            trainable_only: count only parameters with ``requires_grad``.

        Returns:
            ``{"backbone": n, "fpn": n, ..., "total": n}``.
        """
        counts = {}
        for name, child in self.named_children():
            counts[name] = sum(
                p.numel() for p in child.parameters() if p.requires_grad or not trainable_only
            )
        counts["total"] = sum(counts.values())
        return counts


def _build_head(name: str, spec: Any, in_channels: int) -> nn.Module:
    """An extra head from its partial, checked against :class:`SMPHead`."""
    if not callable(spec):
        raise ValueError(f"extra_heads.{name}: expected a partial (_target_ + _partial_: true)")
    head = spec(in_channels=in_channels)
    if not isinstance(head, nn.Module) or not isinstance(head, SMPHead):
        raise TypeError(
            f"extra_heads.{name}: {type(head).__name__} must be an nn.Module with "
            "build_targets(parsing_list, instances) and loss(output, targets)"
        )
    return head


def _mir_loss_settings(mir_loss: Mapping[str, float]) -> dict[str, float]:
    """The ``mir_loss`` settings as constructor arguments of the MIR head (``MIR_LOSS_SETTINGS``)."""
    unknown = sorted(set(mir_loss) - set(MIR_LOSS_SETTINGS))
    if unknown:
        raise ValueError(
            f"mir_loss: unknown settings {unknown}; known: {sorted(MIR_LOSS_SETTINGS)}"
        )
    return {MIR_LOSS_SETTINGS[key]: value for key, value in mir_loss.items()}


def _split_loss_settings(loss: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """The ``loss`` settings as constructor arguments of the built-in heads (``LOSS_SETTINGS``)."""
    unknown = sorted(set(loss) - set(LOSS_SETTINGS))
    if unknown:
        raise ValueError(f"loss: unknown settings {unknown}; known: {sorted(LOSS_SETTINGS)}")
    per_head: dict[str, dict[str, float]] = {"center": {}, "part": {}, "offset": {}}
    for key, value in loss.items():
        for head, argument in LOSS_SETTINGS[key]:
            per_head[head][argument] = value
    return per_head


def _float32(outputs: SMPOutputs) -> SMPOutputs:
    """Outputs cast to float32 (losses and decoding stay in fp32 under AMP)."""
    return outputs.apply(Tensor.float)


def _zero_like_graph(outputs: SMPOutputs) -> Tensor:
    """A zero scalar attached to every output (keeps the graph shape in the MIR stage)."""
    total = outputs.center.sum() + outputs.offsets.sum() + outputs.mask_feat.sum()
    total = total + sum(t.sum() for t in outputs.cate) + sum(t.sum() for t in outputs.kernels)
    return total * 0


__all__ = ["SMP", "scale_grid"]
