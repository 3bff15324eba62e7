"""Mask of Interest Reclassify (MIR) module (paper section 3.3).

Built from the paper (the release's version is switched off and broken):

* a semantic branch: the fused FPN feature (F_mask, already a stride-4 fusion of
  P2..P5) -> ``num_convs`` conv-GN-ReLU -> ``mir_feat``; a 1x1 conv on it gives
  ``C_P + 1`` semantic logits supervised by the semantic labels (cross entropy);
* a RoI classifier: every part mask (predicted by the part head) defines a region of
  interest = its bounding box; ``roi_align`` (14 x 14) of ``mir_feat`` over the box,
  multiplied by the ``roi_align`` of the mask itself (the mask *is* the region of
  interest), a conv with a 14 x 14 kernel, two fully connected layers -> C_P logits.

At inference the logits re-score and relabel the decoded parts; the module is trained as
a plug-in stage with the rest of SMP frozen (``SMP.freeze_for_mir``), with a sigmoid focal
loss on the RoI classes plus the semantic cross entropy.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align

from smp_parsing.models.layers.blocks import ConvTower, bias_for_prior, init_conv_normal


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

    Shapes:
        ``features``: ``(B, in_channels, h, w)`` -> ``mir_feat`` ``(B, feat_channels, h, w)``
        and semantic logits ``(B, C_P + 1, h, w)``. ``classify``: ``R`` masks ``(R, h, w)``
        -> ``(R, C_P)`` logits.
    """

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
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.roi_size = roi_size
        self.sampling_ratio = sampling_ratio
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
