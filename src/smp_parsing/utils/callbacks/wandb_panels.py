"""W&B panels of a parsing run: per-class IoU, AP^p / PCP over thresholds, sortable best values.

Built with W&B's own table and plot types (not pictures of plots), from what the module's metric
(:class:`~smp_parsing.metrics.ParsingMetrics`) computed at the end of each evaluation, so the
dashboard shows exactly the numbers that were logged as scalars:

==============================  =============================================================
key                             what
==============================  =============================================================
``<stage>/class_iou``           ``wandb.Table`` (class_id, class, IoU): one row per class of
                                the label space; IoU empty for a class in neither map
``<stage>/class_iou_bar``       ``wandb.plot.bar`` of that table (class -> IoU)
``<stage>/thresholds``          ``wandb.Table`` (iou_threshold, APp, PCP): one row per IoU
                                threshold 0.1..0.9; AP^p_vol is the mean of the APp column
``<stage>/APp_curve``           ``wandb.plot.line`` iou_threshold -> APp
``<stage>/PCP_curve``           ``wandb.plot.line`` iou_threshold -> PCP
==============================  =============================================================

``<stage>`` is ``val`` (every validation, also ``evaluate split=val``) or ``test``. At setup the
run gets ``define_metric(summary="max")`` for ``val/{APp50, APpvol, PCP50, mIoU}`` (the runs
table shows the best, not the last, value), the config keys a sweep table groups by
(``backbone``, ``grid``, ``epsilon``, ``rfr``, ``mir``, ``dataset``; the nested
resolved config is logged by ``log_hyperparameters``) and the summary ``params`` /
``params_trainable``; after each evaluation the summary ``fps`` (images/s of that evaluation).
Other loggers are ignored; only rank 0 logs (every rank takes part in the metric's gather).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch import Callback
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

from smp_parsing.utils.callbacks.image_logger import class_labels

log = logging.getLogger(__name__)

# The x axis Lightning's WandbLogger defines for every key.
STEP_METRIC = "trainer/global_step"


def backbone_name(backbone: Mapping[str, Any]) -> str:
    """Short backbone name as in the paper's tables: ``r101_dcn``, ``r50``, ...

    Args:
        backbone: the ``model.net.backbone`` config (``depth``, ``dcn_stages``).
    """
    depth = backbone.get("depth", "?")
    dcn = any(bool(s) for s in backbone.get("dcn_stages") or ())
    return f"r{depth}" + ("_dcn" if dcn else "")


def sweep_keys(model_config: Mapping[str, Any] | None, dataset: str | None = None) -> dict:
    """Flat run-config keys a W&B sweep table groups by (the axes of the paper's tables).

    Args:
        model_config: resolved ``model`` config (``SMPLitModule.model_config``), or ``None``.
        dataset: data set name.

    Returns:
        ``backbone``, ``grid`` (grid scale), ``epsilon``, ``rfr``, ``mir`` (on in a MIR stage),
        ``dataset`` where known. (The job's ``stage`` plan is already a top-level config key.)
    """
    keys: dict[str, Any] = {}
    model_config = model_config or {}
    net = model_config.get("net") or {}
    if net.get("backbone"):
        keys["backbone"] = backbone_name(net["backbone"])
    for name, key in (("grid", "grid_scale"), ("epsilon", "epsilon"), ("rfr", "rfr"),
                      ("mir", "mir")):  # fmt: skip
        if key in net:
            keys[name] = net[key]
    if dataset:
        keys["dataset"] = dataset
    return keys


def class_iou_rows(iou: Tensor | Sequence[float], labels: Mapping[int, str]) -> list[list]:
    """``[class_id, class, IoU]`` per class; IoU ``None`` for a class in neither map (NaN)."""
    rows = []
    for cid, value in enumerate(float(v) for v in iou):
        rows.append([cid, labels.get(cid, f"class {cid}"), None if math.isnan(value) else value])
    return rows


def threshold_rows(values: Mapping[str, float]) -> list[list[float]]:
    """``[iou_threshold, APp, PCP]`` per threshold, from the ``APp@<t>`` / ``PCP@<t>`` keys."""
    thresholds = sorted({k.split("@", 1)[1] for k in values if k.startswith("APp@")}, key=float)
    return [
        [float(t), float(values[f"APp@{t}"]), float(values.get(f"PCP@{t}", math.nan))]
        for t in thresholds
    ]


class WandbPanels(Callback):
    """Per-class IoU, threshold curves, best-value summaries and sweep keys on W&B.

    Args:
        dataset: data set name (class names of the IoU table, ``dataset`` config key) when the
            trainer's datamodule has none (``dataset_name`` / ``meta`` of ``ParsingDataModule``).
        summary_max: metrics whose W&B summary is their best (max) value, per stage prefix.
        max_prefixes: stage prefixes ``summary_max`` applies to.
        metric_attrs: module attribute of the metric per stage.
    """

    def __init__(
        self,
        dataset: str | None = None,
        summary_max: Sequence[str] = ("APp50", "APpvol", "PCP50", "mIoU"),
        max_prefixes: Sequence[str] = ("val",),
        metric_attrs: Mapping[str, str] | None = None,
    ) -> None:
        self.dataset = dataset
        self.summary_max = tuple(summary_max)
        self.max_prefixes = tuple(max_prefixes)
        self.metric_attrs = dict(metric_attrs or {"val": "val_metrics", "test": "test_metrics"})

    @staticmethod
    def _wandb_loggers(trainer: pl.Trainer) -> list[WandbLogger]:
        return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]

    def _dataset(self, trainer: pl.Trainer) -> str | None:
        # the data actually evaluated (evaluate may take them from the checkpoint) first
        return getattr(trainer.datamodule, "dataset_name", None) or self.dataset

    def _class_labels(self, trainer: pl.Trainer, num_classes: int) -> dict[int, str]:
        meta = getattr(trainer.datamodule, "meta", None)
        if meta is not None and len(getattr(meta, "classes", ())) == num_classes:
            return dict(enumerate(meta.classes))
        return class_labels(self._dataset(trainer) or "", num_classes=num_classes)

    # ------------------------------------------------------------------ set-up
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        keys = sweep_keys(getattr(pl_module, "model_config", None), self._dataset(trainer))
        params = sum(p.numel() for p in pl_module.parameters())
        trainable = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        for logger in self._wandb_loggers(trainer):
            run = logger.experiment  # starts the run (and Lightning's step axis) if not yet
            for prefix in self.max_prefixes:
                for name in self.summary_max:
                    run.define_metric(f"{prefix}/{name}", summary="max", step_metric=STEP_METRIC)
            run.config.update(keys, allow_val_change=True)
            run.summary["params"] = params
            run.summary["params_trainable"] = trainable

    # ------------------------------------------------------------- evaluation
    def _log_panels(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prefix: str) -> None:
        loggers = self._wandb_loggers(trainer)
        metric = getattr(pl_module, self.metric_attrs.get(prefix, ""), None)
        if trainer.sanity_checking or not loggers or metric is None:
            return
        if not hasattr(metric, "class_iou"):
            return
        # Every rank: both gather the metric state under DDP. compute() is cached, so the
        # module's own compute() right after returns the same values.
        values = metric.compute()
        iou = metric.class_iou().cpu()
        if not trainer.is_global_zero:
            return
        import wandb

        labels = self._class_labels(trainer, len(iou))
        class_table = wandb.Table(
            columns=["class_id", "class", "IoU"], data=class_iou_rows(iou, labels)
        )
        curve_table = wandb.Table(
            columns=["iou_threshold", "APp", "PCP"], data=threshold_rows(values)
        )
        vol = values.get("APpvol", math.nan)
        panels = {
            f"{prefix}/class_iou": class_table,
            f"{prefix}/class_iou_bar": wandb.plot.bar(
                class_table, "class", "IoU", title=f"{prefix} IoU per class (mIoU = mean)"
            ),
            f"{prefix}/thresholds": curve_table,
            f"{prefix}/APp_curve": wandb.plot.line(
                curve_table, "iou_threshold", "APp",
                title=f"{prefix} AP^p over IoU threshold (AP^p_vol = mean = {vol:.3f})",
            ),
            f"{prefix}/PCP_curve": wandb.plot.line(
                curve_table, "iou_threshold", "PCP", title=f"{prefix} PCP over IoU threshold"
            ),
        }  # fmt: skip
        for logger in loggers:
            logger.log_metrics(panels, step=trainer.global_step)

    def _log_fps(self, trainer: pl.Trainer, prefix: str) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        fps = trainer.callback_metrics.get(f"{prefix}/fps")
        if fps is None:
            return
        for logger in self._wandb_loggers(trainer):
            logger.experiment.summary["fps"] = float(fps)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log_panels(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log_panels(trainer, pl_module, "test")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log_fps(trainer, "val")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log_fps(trainer, "test")
