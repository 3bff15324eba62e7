"""Mask of Interest Reclassify (MIR) module (paper section 3.3).

Built from the paper (the release's version is switched off and broken):

* a semantic branch: the fused FPN feature (F_mask, already a stride-4 fusion of
  P2..P5) -> ``num_convs`` conv-GN-ReLU -> ``mir_feat``; a 1x1 conv on it gives
  ``C_P + 1`` semantic logits supervised by the semantic labels (cross entropy);
* a RoI classifier: every part mask (predicted by the part head) defines a region of
  interest = its bounding box; ``roi_align`` (14 x 14) of ``mir_feat`` over the box,
  multiplied by the ``roi_align`` of the mask itself (the mask *is* the region of
  interest), a conv with a 14 x 14 kernel, two fully connected layers -> C_P logits.

MIR is a head on the protocol of :mod:`smp_parsing.models.heads.base`: its settings come at
construction (``model.net.mir_loss`` and ``test_cfg.mir_score_thr``, handed by SMP), its targets
(:meth:`MIRHead.build_targets`: the positive part cells of the part head's targets, RoIs sampled,
their classes, and the semantic labels of :func:`semantic_targets`) and its loss
(:meth:`MIRHead.loss`: sigmoid focal on the RoI classes plus the semantic cross entropy) read
:class:`MIROutput`; its ``decode`` hook re-scores and relabels the decoded parts
(:meth:`MIRHead.relabel`). It trains as a plug-in stage with the rest of SMP frozen
(``SMP.freeze_for_mir``). Everything MIR is here; ``SMP`` only wires it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align, sigmoid_focal_loss

from smp_parsing.models.layers.blocks import ConvTower, bias_for_prior, init_conv_normal
from smp_parsing.models.layers.precision import autocast_off, autocast_restored
from smp_parsing.models.losses import positive_mask_logits
from smp_parsing.models.targets.instances import BatchInstances


class MIROutput(NamedTuple):
    """What MIR's loss and decode read: its own maps and the part head's kernels and F_mask.

    The RoIs of the loss are the part head's predicted masks (its kernels convolved with
    F_mask), so SMP hands those next to MIR's maps.

    Attributes:
        feat: ``(B, C, h, w)`` MIR feature map (``mir_feat``).
        semantic: ``(B, C_P + 1, h, w)`` semantic logits (``mir_semantic``).
        kernels: per level ``(B, C_K, S_l, S_l)`` dynamic kernels of the part head.
        mask_feat: F_mask, ``(B, C_K, h, w)``.
    """

    feat: Tensor
    semantic: Tensor
    kernels: list[Tensor]
    mask_feat: Tensor


class MIRTargets(NamedTuple):
    """MIR's targets: the sampled RoIs (positive part cells) and the semantic labels.

    Attributes:
        batch_idx: ``(R,)`` long image of each RoI.
        level: ``(R,)`` long part level of its cell.
        cell: ``(R,)`` long flat cell index on its level's grid.
        labels: ``(R,)`` long class of the part owning the cell, ``0..C_P - 1``.
        semantic: ``(B, h, w)`` long semantic labels at the mask stride (0 = background).
    """

    batch_idx: Tensor
    level: Tensor
    cell: Tensor
    labels: Tensor
    semantic: Tensor


def mask_boxes(masks: Tensor, threshold: float = 0.5) -> Tensor:
    """Tight boxes of binarised masks, all at once.

    Args:
        masks: ``(R, h, w)`` probabilities (or 0/1).
        threshold: a pixel belongs to the mask when ``> threshold``.

    Returns:
        ``(R, 4)`` float ``(x1, y1, x2, y2)`` in mask pixels, x2/y2 exclusive; an empty mask
        gets the whole map (its RoI feature is zeroed by the mask anyway).
    """
    r, h, w = masks.shape
    fg = masks > threshold
    cols = fg.any(dim=1)  # (R, w)
    rows = fg.any(dim=2)  # (R, h)
    xs = torch.arange(w, device=masks.device)
    ys = torch.arange(h, device=masks.device)
    big = torch.iinfo(torch.long).max
    x1 = torch.where(cols, xs, big).amin(dim=1)
    x2 = torch.where(cols, xs, -1).amax(dim=1) + 1
    y1 = torch.where(rows, ys, big).amin(dim=1)
    y2 = torch.where(rows, ys, -1).amax(dim=1) + 1
    empty = ~cols.any(dim=1)
    boxes = torch.stack((x1, y1, x2, y2), dim=1).float()
    whole = torch.tensor([0.0, 0.0, float(w), float(h)], device=masks.device)
    return torch.where(empty[:, None], whole, boxes)


class MIRHead(nn.Module):
    """Semantic branch + mask-RoI classifier.

    Args:
        num_classes: C_P.
        in_channels: channels of the input feature (F_mask, C_K = 256).
        feat_channels: width of the semantic-branch convs.
        num_convs: depth of the semantic branch.
        roi_size: RoIAlign output size (14).
        fc_channels: width of the 14x14 conv and the first FC layer.
        num_groups: GroupNorm groups.
        sampling_ratio: RoIAlign samples per bin.
        prior_prob: initial class probability of the RoI logits (focal-loss init).
        loss_weight: weight of the RoI focal term (SMP passes ``mir_loss.weight``).
        semantic_weight: weight of the semantic cross entropy (``mir_loss.semantic_weight``).
        focal_alpha: focal alpha (``mir_loss.focal_alpha``).
        focal_gamma: focal gamma (``mir_loss.focal_gamma``).
        max_rois: RoIs sampled per batch, at random when there are more positives
            (``mir_loss.max_rois``).
        mask_stride: stride of ``mir_feat`` (= F_mask's, 4; SMP passes ``mask_stride``).
        score_thr: MIR relabels a part when its probability exceeds this (SMP passes
            ``test_cfg.mir_score_thr``).

    Shapes:
        ``features``: ``(B, in_channels, h, w)`` -> ``mir_feat`` ``(B, feat_channels, h, w)``
        and semantic logits ``(B, C_P + 1, h, w)``. ``classify``: ``R`` masks ``(R, h, w)``
        -> ``(R, C_P)`` logits.
    """

    loss_names = ("loss_mir",)

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 256,
        feat_channels: int = 256,
        num_convs: int = 4,
        roi_size: int = 14,
        fc_channels: int = 1024,
        num_groups: int = 32,
        sampling_ratio: int = 2,
        prior_prob: float = 0.01,
        loss_weight: float = 1.0,
        semantic_weight: float = 1.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        max_rois: int = 512,
        mask_stride: int = 4,
        score_thr: float = 0.5,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.roi_size = roi_size
        self.sampling_ratio = sampling_ratio
        self.loss_weight = float(loss_weight)
        self.semantic_weight = float(semantic_weight)
        self.focal_alpha = float(focal_alpha)
        self.focal_gamma = float(focal_gamma)
        self.max_rois = int(max_rois)
        self.mask_stride = int(mask_stride)
        self.score_thr = float(score_thr)
        self.tower = ConvTower(in_channels, feat_channels, num_convs, num_groups)
        c = self.tower.out_channels
        self.semantic_out = nn.Conv2d(c, num_classes + 1, 1)
        self.roi_conv = nn.Conv2d(c, fc_channels, roi_size)
        self.fc = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(fc_channels, fc_channels),
            nn.ReLU(inplace=True),
            nn.Linear(fc_channels, num_classes),
        )
        init_conv_normal(self)
        nn.init.constant_(self.fc[-1].bias, bias_for_prior(prior_prob))

    def features(self, feat: Tensor) -> tuple[Tensor, Tensor]:
        """Semantic branch.

        Args:
            feat: ``(B, in_channels, h, w)``.

        Returns:
            ``mir_feat`` ``(B, C, h, w)`` and semantic logits ``(B, C_P + 1, h, w)``.
        """
        mir_feat = self.tower(feat)
        return mir_feat, self.semantic_out(mir_feat)

    def classify(self, mir_feat: Tensor, masks: Tensor, batch_idx: Tensor) -> Tensor:
        """Class logits of part masks used as regions of interest.

        Args:
            mir_feat: ``(B, C, h, w)``.
            masks: ``(R, h, w)`` mask probabilities at the same stride as ``mir_feat``.
            batch_idx: ``(R,)`` long image of each mask.

        Returns:
            ``(R, C_P)`` logits (``R`` may be 0).
        """
        r = masks.shape[0]
        if r == 0:
            return mir_feat.new_zeros((0, self.num_classes))
        masks = masks.to(mir_feat.dtype)
        boxes = mask_boxes(masks.detach())
        rois = torch.cat((batch_idx.to(boxes).unsqueeze(1), boxes), dim=1).to(mir_feat.dtype)
        size = (self.roi_size, self.roi_size)
        roi_feat = roi_align(
            mir_feat,
            rois,
            size,
            spatial_scale=1.0,
            sampling_ratio=self.sampling_ratio,
            aligned=True,
        )
        own = torch.arange(r, device=masks.device, dtype=rois.dtype).unsqueeze(1)
        roi_mask = roi_align(
            masks.unsqueeze(1),
            torch.cat((own, rois[:, 1:]), dim=1),
            size,
            spatial_scale=1.0,
            sampling_ratio=self.sampling_ratio,
            aligned=True,
        )
        return self.fc(self.roi_conv(roi_feat * roi_mask))

    def build_targets(
        self,
        parsing_list: list[Tensor],
        instances: BatchInstances,
        built: Mapping[str, Any],
    ) -> MIRTargets:
        """The RoIs (positive part cells, at most ``max_rois``, sampled at random), their
        classes and the semantic labels (no gradient).

        Args:
            parsing_list: per image ``(N_i, H, W)`` person maps (unused: the instances hold all).
            instances: the persons and parts of the batch.
            built: the targets of the heads before MIR; MIR reads the part head's (``"part"``,
                :class:`~smp_parsing.models.targets.parts.PartTargets`), whose positive cells
                are its RoIs.
        """
        parts = built["part"]
        idx = torch.arange(parts.pos_batch.numel(), device=parts.pos_batch.device)
        if idx.numel() > self.max_rois:
            idx = idx[torch.randperm(idx.numel(), device=idx.device)[: self.max_rois]]
        return MIRTargets(
            batch_idx=parts.pos_batch[idx],
            level=parts.pos_level[idx],
            cell=parts.pos_cell[idx],
            labels=instances.parts.labels[parts.pos_instance[idx]] - 1,
            semantic=semantic_targets(instances, instances.parts.masks.shape[-2:]),
        )

    def loss(self, output: MIROutput, targets: MIRTargets) -> dict[str, Tensor]:
        """``loss_mir``: sigmoid focal on the classes of the RoIs + semantic cross entropy.

        The RoIs are the *predicted* masks of the sampled positive part cells (detached: MIR
        must not move the part head), labelled with the class of the part that owns the cell.
        SMP calls it in full precision; the RoI masks and the RoI classifier, parts of the
        network, run in the network's precision (:func:`autocast_restored`).

        Args:
            output: float32 MIR maps, kernels and F_mask.
            targets: :meth:`build_targets`.

        Returns:
            ``{"loss_mir": weighted 0-dim loss}``.
        """
        with autocast_restored():
            with torch.no_grad():
                masks = positive_mask_logits(
                    output.kernels, output.mask_feat, targets.batch_idx, targets.level, targets.cell
                ).sigmoid()
            logits = self.classify(output.feat, masks, targets.batch_idx)
        with autocast_off():  # the loss terms in fp32
            logits = logits.float()
            classes = torch.arange(self.num_classes, device=targets.labels.device)
            onehot = (targets.labels[:, None] == classes).to(logits.dtype)  # F.one_hot syncs
            cls = sigmoid_focal_loss(
                logits, onehot, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="sum"
            ) / max(int(targets.labels.numel()), 1)
            # Every MIR parameter in the graph even with no RoI (DDP).
            cls = cls + sum(p.sum() * 0 for p in self.parameters())
            sem = F.cross_entropy(output.semantic.float(), targets.semantic)
            return {"loss_mir": self.loss_weight * cls + self.semantic_weight * sem}

    def decode(self, output: MIROutput, preds: list[dict], metas: list[dict]) -> list[dict]:
        """The decode hook: every image's parts relabelled by MIR (:meth:`relabel`).

        Args:
            output: float32 MIR maps (``feat`` ``(B, C, h, w)``).
            preds: the decoded images (``parsing`` ``(P, H0, W0)`` uint8).
            metas: their metas.

        Returns:
            ``preds`` with relabelled ``parsing``.
        """
        return [
            self.relabel(output.feat[i : i + 1], pred, meta)
            for i, (pred, meta) in enumerate(zip(preds, metas))
        ]

    def relabel(
        self,
        mir_feat: Tensor,
        pred: dict,
        meta: dict,
        *,
        mask_stride: int | None = None,
        score_thr: float | None = None,
    ) -> dict:
        """Reclassify every decoded part of one image with MIR (all parts at once).

        Each (person, class) region of the decoded maps is a mask of interest; it is
        brought back to the F_mask grid (nearest), classified, and repainted with the MIR
        class when MIR's probability for it exceeds ``score_thr``.

        Args:
            mir_feat: ``(1, C, h, w)``.
            pred: one decoded image (``parsing`` ``(P, H0, W0)`` uint8).
            meta: its meta (``img_size``).
            mask_stride: stride of ``mir_feat``; default: the head's ``mask_stride``.
            score_thr: MIR relabels a part when its probability exceeds this; default: the
                head's ``score_thr``.

        Returns:
            ``pred`` with relabelled ``parsing``.
        """
        parsing = pred["parsing"]
        if parsing.shape[0] == 0:
            return pred
        h_img, w_img = meta["img_size"]
        hf, wf = mir_feat.shape[-2:]
        s = self.mask_stride if mask_stride is None else mask_stride
        score_thr = self.score_thr if score_thr is None else score_thr
        small = F.interpolate(
            parsing[:, None].float(), size=(max(1, h_img // s), max(1, w_img // s)), mode="nearest"
        )[:, 0].long()
        grid = small.new_zeros((parsing.shape[0], hf, wf))
        grid[:, : small.shape[1], : small.shape[2]] = small[:, :hf, :wf]
        # (person, class) pairs present, without a (P, C, h, w) one-hot: flat keys p * C + c.
        num_persons, c = grid.shape[0], self.num_classes + 1
        keys = (torch.arange(num_persons, device=grid.device)[:, None, None] * c + grid).flatten()
        present = torch.zeros(num_persons * c, dtype=torch.bool, device=grid.device)
        present[keys] = True
        person, cls = present.view(num_persons, c)[:, 1:].nonzero(as_tuple=True)
        if person.numel() == 0:
            return pred
        masks = (grid.to(torch.uint8)[person] == (cls + 1).to(torch.uint8)[:, None, None]).float()
        logits = self.classify(mir_feat, masks, torch.zeros_like(person))
        prob, new_cls = logits.float().sigmoid().max(dim=1)
        new_cls = torch.where(prob > score_thr, new_cls, cls)
        # Lookup table per person: old label -> new label, applied at full resolution.
        table = torch.arange(c, device=parsing.device).repeat(parsing.shape[0], 1)
        table[person, cls + 1] = new_cls + 1
        relabelled = torch.gather(table, 1, parsing.long().flatten(1)).view_as(parsing)
        return {**pred, "parsing": relabelled.to(parsing.dtype)}


def semantic_targets(instances: BatchInstances, size: Sequence[int]) -> Tensor:
    """Semantic labels at the mask stride from the part instances of the batch.

    Args:
        instances: the batch's instances; ``parts.masks`` ``(M, h, w)`` at the mask stride.
        size: ``(h, w)`` of the semantic logits.

    Returns:
        ``(B, h, w)`` long class map (0 = background; overlapping persons: the larger class
        id wins, a deterministic rule for the rare overlap pixels).
    """
    parts = instances.parts
    h, w = int(size[0]), int(size[1])
    sem = torch.zeros((instances.batch_size, h * w), dtype=torch.long, device=parts.labels.device)
    m = parts.labels.numel()
    if m == 0:
        return sem.view(-1, h, w)
    values = parts.masks[:, :h, :w].reshape(m, -1).long() * parts.labels[:, None]
    sem.scatter_reduce_(0, parts.batch_idx[:, None].expand(-1, h * w), values, "amax")
    return sem.view(-1, h, w)
