"""``ParsingMetrics``: the MHP parsing metrics as a DDP-safe torchmetrics ``Metric``.

The heavy per-image work (pair IoUs, matching at every threshold, PCP, semantic confusion) runs in
``update`` through :func:`smp_parsing.metrics.functional.image_statistics`; the state keeps only
per-prediction results and counts, so a DDP sync moves kilobytes, not masks:

==================  ==============  ==========  ============================================
state               shape           reduction   holds
==================  ==============  ==========  ============================================
``scores``          (N,) float64    cat         score of every prediction
``image_keys``      (N,) int64      cat         tie-break key of its image (0 without ids)
``true_positive``   (N, T) uint8    cat         TP flag at each IoU threshold
``pcp``             (N, T) float64  cat         PCP value at each threshold (0 if not a TP)
``num_gt``          () int64        sum         number of GT persons (npos)
``confusion``       (C, C) int64    sum         semantic confusion (rows GT, columns pred)
==================  ==============  ==========  ============================================

``compute`` sorts all predictions globally by ``(-score, image key, arrival order)`` and integrates
the VOC all-point AP. After a DDP gather the arrival order is rank 0's predictions, then rank 1's,
...: with contiguous shards (or image ids given, see ``update``) the result equals the
single-process one exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from smp_parsing.metrics.functional import (
    DEFAULT_THRESHOLDS,
    aggregate_statistics,
    check_thresholds,
    image_key,
    image_statistics,
    semantic_class_iou,
)


class ParsingMetrics(Metric):
    """AP^p_50, AP^p_vol, PCP_50 and mIoU of multi-human parsing (official MHP v2 protocol).

    Args:
        num_classes: C, background included (59 for MHP v2, 15 for DensePose-COCO), at most 256.
        score_threshold_miou: Predicted persons scored below this are not painted into the
            semantic map of the mIoU (Parsing R-CNN's MHP setting: 0.05).
        thresholds: IoU thresholds of AP^p_vol and PCP; must contain 0.5.
        **kwargs: Passed to :class:`torchmetrics.Metric` (``dist_sync_on_step``, ...).

    ``compute()`` returns a dict of floats: ``APp50``, ``APpvol``, ``PCP50``, ``mIoU``,
    ``pixel_acc``, then ``APp@<t>`` and ``PCP@<t>`` for each threshold (``APp@0.1`` ...);
    ``class_iou()`` the per-class IoU behind ``mIoU``.

    Every rank must call ``update`` at least once before a DDP ``compute`` (an untouched rank has
    no typed state to gather); Lightning's distributed sampler guarantees that.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    scores: list[Tensor]
    image_keys: list[Tensor]
    true_positive: list[Tensor]
    pcp: list[Tensor]
    num_gt: Tensor
    confusion: Tensor

    def __init__(
        self,
        num_classes: int,
        score_threshold_miou: float = 0.05,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 2 <= num_classes <= 256:
            raise ValueError(f"num_classes must be in 2..256, got {num_classes}")
        self.num_classes = num_classes
        self.score_threshold_miou = float(score_threshold_miou)
        self.thresholds = check_thresholds(thresholds)
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("image_keys", default=[], dist_reduce_fx="cat")
        self.add_state("true_positive", default=[], dist_reduce_fx="cat")
        self.add_state("pcp", default=[], dist_reduce_fx="cat")
        self.add_state("num_gt", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state(
            "confusion",
            default=torch.zeros(num_classes, num_classes, dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def update(
        self, preds: Sequence[Mapping[str, Tensor]], target: Sequence[Mapping[str, Any]]
    ) -> None:
        """Score a batch of images.

        Args:
            preds: Per image ``{"parsing": P x H x W integer tensor, "scores": (P,) tensor}``
                (P may be 0), at the GT size.
            target: Per image ``{"parsing": G x H x W integer tensor}`` (file order; all-zero maps
                are not GT persons) and optionally ``"image_id"``: when given, score ties across
                images are broken by a hash of the id instead of the arrival order, so the result
                does not depend on how images are sharded over DDP ranks.

        Raises:
            ValueError: for mismatched list lengths or malformed images (see
                :func:`~smp_parsing.metrics.functional.image_statistics`).
        """
        if len(preds) != len(target):
            raise ValueError(f"got {len(preds)} predictions but {len(target)} targets")
        for index, (pred, gt) in enumerate(zip(preds, target)):
            where = f"image {index} of the batch" + (
                f" (id {gt['image_id']})" if "image_id" in gt else ""
            )
            missing = [f"preds[{key!r}]" for key in ("parsing", "scores") if key not in pred]
            missing += ["target['parsing']"] if "parsing" not in gt else []
            if missing:
                raise ValueError(f"{where}: missing {', '.join(missing)}")
            stats = image_statistics(
                torch.as_tensor(pred["parsing"], device=self.device),
                _scores_tensor(pred["scores"], self.device),
                torch.as_tensor(gt["parsing"], device=self.device),
                self.num_classes,
                self.thresholds,
                self.score_threshold_miou,
                where=where,
            )
            key = image_key(gt["image_id"]) if "image_id" in gt else 0
            self.scores.append(stats.scores)
            self.image_keys.append(
                torch.full_like(stats.scores, key, dtype=torch.long, device=self.device)
            )
            # uint8 rather than bool: a dtype every all_gather backend handles.
            self.true_positive.append(stats.true_positive.to(torch.uint8))
            self.pcp.append(stats.pcp)
            self.num_gt += stats.num_gt
            self.confusion += stats.confusion

    def compute(self) -> dict[str, float]:
        """Global metrics over everything seen (and gathered across ranks)."""
        num_thr = len(self.thresholds)
        return aggregate_statistics(
            _cat(self.scores, (0,), torch.float64, self.device),
            _cat(self.image_keys, (0,), torch.long, self.device),
            _cat(self.true_positive, (0, num_thr), torch.uint8, self.device),
            _cat(self.pcp, (0, num_thr), torch.float64, self.device),
            int(self.num_gt),
            self.confusion,
            self.thresholds,
        )

    def class_iou(self) -> Tensor:
        """Per-class IoU of the semantic maps seen so far (gathered across ranks like ``compute``).

        The terms whose mean (over the non-NaN entries) is ``compute()["mIoU"]``; dashboards show
        them per class. Under DDP every rank must call it (it gathers the metric state).

        Returns:
            ``(C,)`` float64 on the metric's device; NaN for a class in neither the predictions
            nor the GT.
        """
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn,
            should_sync=self._to_sync,
            should_unsync=self._should_unsync,
        ):
            return semantic_class_iou(self.confusion)


def _scores_tensor(scores: Any, device: torch.device) -> Tensor:
    """Scores as a tensor; Python / NumPy numbers become float64 (not torch's float32 default)."""
    if isinstance(scores, Tensor):
        return scores.to(device)
    return torch.as_tensor(scores, dtype=torch.float64, device=device)


def _cat(state: list[Tensor] | Tensor, empty_shape: tuple[int, ...], dtype, device) -> Tensor:
    """Concatenate a list state (a tensor after a DDP sync); an empty list gives an empty tensor."""
    if isinstance(state, Tensor):
        return state.to(dtype).reshape(-1, *empty_shape[1:])
    if not state:
        return torch.zeros(empty_shape, dtype=dtype, device=device)
    return torch.cat(state).to(dtype)
