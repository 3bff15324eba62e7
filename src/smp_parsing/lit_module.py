"""``SMPLitModule``: the training, validation and test logic around the SMP network.

The network (:class:`smp_parsing.models.SMP`) owns forward, targets + losses and decoding; this
module wires the steps: which loss is optimised (the full eq. 2 sum, or only the MIR term in the
plug-in stage, paper section 4.3), the optimiser and its schedule (paper appendix), logging, and
the metrics (separate objects per stage so that validation and test never share state). Which
parameters train in the MIR stage is a ``BaseFinetuning`` callback (utils/callbacks/mir_freeze.py);
the random streams in checkpoints, the DDP buffer broadcast and the FPS timing are callbacks too
(conf/callbacks/default.yaml: rng_state, buffer_broadcast, inference_timer).

Evaluation: ``validation_step`` / ``test_step`` return the decoded predictions and the module's
``on_{validation,test}_batch_end`` feeds them to the metric. Lightning runs the callbacks'
batch-end hooks before the module's, so ``InferenceTimer`` (utils/callbacks/inference_timer.py)
times the step without the metric update.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import MaxMetric, Metric

from smp_parsing.utils.callbacks.mir_freeze import MIRStageFreeze
from smp_parsing.utils.checkpoint import INFERENCE_KEY, MODEL_CONFIG_KEY

log = logging.getLogger(__name__)

STAGES = ("main", "mir")
# Shown in the progress bar; every value of ParsingMetrics.compute() is logged.
PROGRESS_BAR_METRICS = ("APp50", "APpvol")


class SMPLitModule(LightningModule):
    """Lightning wrapper of SMP.

    Args:
        net: the SMP network (``conf/model/net/smp.yaml``).
        optimizer: partial optimiser taking ``params`` (``lr`` is the rate for ``base_batch_size``).
        scheduler: partial scheduler taking ``optimizer`` and ``steps_per_epoch``
            (:class:`~smp_parsing.utils.lr_schedule.WarmupMultiStepLR`), or ``None``.
        metrics: factory of the parsing metric (``ParsingMetrics`` partial); called once per
            evaluation stage so that val and test keep separate state.
        batch_size: images per device and step (``${data.batch_size}``).
        base_batch_size: total batch the optimiser's ``lr`` is given for (paper: 0.02 @ 32).
        scale_lr: scale ``lr`` linearly to ``devices x batch_size x accumulate_grad_batches``.
        stage: ``"main"`` trains the whole network on the summed loss; ``"mir"`` trains only the
            modules in ``mir_modules`` on ``loss_mir`` with everything else frozen (eval mode).
        mir_modules: attribute paths inside ``net`` trained in the MIR stage.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., LRScheduler] | None,
        metrics: Callable[[], Metric],
        batch_size: int,
        base_batch_size: int = 32,
        scale_lr: bool = True,
        stage: str = "main",
        mir_modules: Sequence[str] = ("mir_head",),
    ) -> None:
        super().__init__()
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        mir_modules = [str(m) for m in mir_modules]  # not a ListConfig: see below
        # Only plain values become hyper-parameters, so that checkpoints load with
        # torch.load(weights_only=True) (Lightning's default). The net's weights are in the state
        # dict; the factories' settings travel in the checkpoint through `model_config`.
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler", "metrics"])
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.val_metrics = metrics()
        self.test_metrics = metrics()
        self.val_appvol_best = MaxMetric()
        # In the checkpoint, so that a resumed run keeps its best value.
        self.val_appvol_best.persistent(True)
        # Resolved config of this module, stored in checkpoints so that evaluate/predict can
        # rebuild the network without the training command line (set by smp_parsing.train).
        self.model_config: dict[str, Any] | None = None
        # What inference needs (data set, classes, test transform, data config), stored in
        # checkpoints as `smp_inference` (set by smp_parsing.train; utils/checkpoint.py).
        self.inference_config: dict[str, Any] | None = None
        # Last loss terms (detached), read by the non-finite loss guard for its message.
        self.last_loss_terms: dict[str, Tensor] = {}
        # images fed to the metric this epoch (this rank): `<split>/num_images`
        self._scored_images = 0
        # The MIR stage's freeze is a BaseFinetuning callback (utils/callbacks/mir_freeze.py),
        # brought by the module (configure_callbacks) since the stage is its hyper-parameter;
        # applied here too, so that a stage-"mir" module is frozen as built (also outside a
        # Trainer, e.g. when rebuilt from a checkpoint).
        self.mir_freeze = MIRStageFreeze(mir_modules) if stage == "mir" else None
        if self.mir_freeze is not None:
            self.mir_freeze.freeze_net(self.net)

    def configure_callbacks(self) -> list[Callback]:
        """The MIR stage's freeze (``BaseFinetuning``); nothing in the main stage."""
        return [self.mir_freeze] if self.mir_freeze is not None else []

    # ---------------------------------------------------------------- training
    def forward(self, images: Tensor):
        """Raw head outputs (:class:`~smp_parsing.models.outputs.SMPOutputs`) for ``B x 3 x H x W``."""
        return self.net(images)

    def training_step(self, batch: dict[str, Any] | None, batch_idx: int) -> Tensor | None:
        """Forward, targets and losses; logs every term as ``train/<term>``.

        Args:
            batch: ``images`` ``B x 3 x H x W`` and ``parsing`` (list of ``N_i x H x W`` uint8);
                ``None`` when every sample of the batch was skipped as bad (the step is skipped).
        """
        if self._skip_step(batch):
            return None
        images = batch["images"]
        outputs = self.net(images)
        losses: dict[str, Tensor] = self.net.loss(outputs, batch["parsing"])
        if self.hparams.stage == "mir":
            if "loss_mir" not in losses:
                raise KeyError(
                    f"stage='mir' optimises loss_mir, but the network returned only {sorted(losses)}"
                )
            loss = losses["loss_mir"]
        else:
            loss = losses["loss"]
        self.last_loss_terms = {k: v.detach() for k, v in losses.items()}
        bs = images.shape[0]
        for name, value in losses.items():
            self.log(f"train/{name}", value, on_step=True, on_epoch=True, batch_size=bs,
                     prog_bar=name == "loss")  # fmt: skip
        return loss

    def _skip_step(self, batch: dict[str, Any] | None) -> bool:
        """Skip this step: its batch is ``None`` (every sample bad, ``on_bad_sample=skip``).

        Under DDP every rank must skip the same step: a rank that returned ``None`` alone would
        leave the others waiting in the gradient all-reduce forever. The ranks agree through a
        flag all-reduce (any rank's empty batch skips the step everywhere), paid only when the
        data can skip samples (``on_bad_sample`` not ``"error"``).
        """
        skip = batch is None
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            return skip
        if getattr(trainer.datamodule, "on_bad_sample", None) == "error":
            return skip  # never None: a bad sample raises
        return bool(trainer.strategy.reduce_boolean_decision(skip, all=False))

    # -------------------------------------------------------------- evaluation
    def predict_images(
        self, images: Tensor, metas: list[dict], return_intermediates: bool = False
    ) -> list[dict[str, Tensor]]:
        """Decoded predictions of a collated batch, each image on its own (the paper's protocol).

        The collate pads a batch to its largest image, and the S x S grids span the padded
        tensor: batched, an image's cells (hence its persons) would depend on its batch mates.
        Each image is cropped back to its own ``pad_size`` and run alone, so that the metrics do
        not depend on the batch size, the worker count or the number of devices (batched
        kernels may also round differently from single-image ones).

        Args:
            images: ``B x 3 x H x W`` (collated, zero-padded to the batch maximum).
            metas: per image ``pad_size`` (its own padded size; the whole tensor when absent),
                ``img_size`` and ``ori_size`` for the decode.
            return_intermediates: add the maps a visualiser needs (see ``SMP.predict``).

        Returns:
            Per image the network's ``predict`` output (``parsing`` ``P x H0 x W0``, ``scores``).
        """
        preds = []
        for image, meta in zip(images, metas):
            height, width = meta.get("pad_size", image.shape[-2:])
            single = image[None, :, :height, :width]
            preds += self.net.predict(self.net(single), [meta], return_intermediates)
        return preds

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Tensor]]:
        """``predict``'s step: per image ``parsing`` ``P x H0 x W0`` and ``scores`` on the CPU
        (written by utils/callbacks/prediction_writer.PredictionDirWriter)."""
        preds = self.predict_images(batch["images"], batch["metas"])
        return [{"parsing": p["parsing"].cpu(), "scores": p["scores"].cpu()} for p in preds]

    def _evaluate_batch(self, batch: dict[str, Any] | None) -> list[dict[str, Tensor]]:
        """Decoded predictions of one evaluation batch (nothing when every sample was skipped as
        bad). The metric update is in :meth:`_score_batch`, outside the timed step."""
        if batch is None:
            return []
        return self.predict_images(batch["images"], batch["metas"])

    def _score_batch(
        self, preds: list[dict[str, Tensor]], batch: dict[str, Any] | None, metric: Metric
    ) -> None:
        """Feed ``metric`` one batch's predictions against its ground truth."""
        if batch is None:
            return
        metric.update(
            [{"parsing": p["parsing"], "scores": p["scores"]} for p in preds],
            # image ids make the global tie-break independent of how images are split over ranks
            [
                {"parsing": gt, "image_id": image_id}
                for gt, image_id in zip(batch["parsing"], batch["image_ids"])
            ],
        )
        self._scored_images += len(preds)

    def _reset_eval(self, metric: Metric) -> None:
        # ddp_spawn may start torchmetrics states shared between processes: always start clean.
        metric.reset()
        self._scored_images = 0

    def _log_eval(self, prefix: str, metric: Metric) -> dict[str, float]:
        values = metric.compute()  # synchronised across ranks by torchmetrics
        for name, value in values.items():
            # Already reduced over ranks: logging with sync_dist would average equal values.
            self.log(f"{prefix}/{name}", float(value), sync_dist=False,
                     prog_bar=name in PROGRESS_BAR_METRICS)  # fmt: skip
        # Collectives only here, at the epoch end: under DDP the ranks' step counts may differ
        # by one (data/sampler.ShardSampler repeats no image), so no step may wait for the others.
        # Images evaluated over all ranks: each once (a repeated one would also count twice).
        self.log(f"{prefix}/num_images", float(self._scored_images), sync_dist=True,
                 reduce_fx="sum")  # fmt: skip
        metric.reset()
        return {k: float(v) for k, v in values.items()}

    def on_validation_epoch_start(self) -> None:
        # (under DDP, utils/callbacks/buffer_broadcast.py gives every rank rank 0's BN statistics)
        self._reset_eval(self.val_metrics)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Tensor]]:
        """Per image ``parsing`` ``P x H0 x W0`` and ``scores`` (scored in the batch-end hook)."""
        return self._evaluate_batch(batch)

    def on_validation_batch_end(
        self, outputs: list[dict[str, Tensor]], batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._score_batch(outputs, batch, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        values = self._log_eval("val", self.val_metrics)
        # The running best only means something while fitting (not for `evaluate split=val`),
        # and the sanity check (a batch or two) must not count as a result.
        if (
            "APpvol" in values
            and self.trainer.state.fn == "fit"
            and not self.trainer.sanity_checking
        ):
            self.val_appvol_best.update(torch.tensor(values["APpvol"]))
            self.log(
                "val/APpvol_best", self.val_appvol_best.compute(), sync_dist=False, prog_bar=True
            )

    def on_test_epoch_start(self) -> None:
        self._reset_eval(self.test_metrics)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Tensor]]:
        """As :meth:`validation_step`, for the test split."""
        return self._evaluate_batch(batch)

    def on_test_batch_end(
        self, outputs: list[dict[str, Tensor]], batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._score_batch(outputs, batch, self.test_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", self.test_metrics)

    # --------------------------------------------------------------- optimiser
    def total_batch_size(self) -> int:
        """Images per optimiser step over all devices: world x batch x accumulation."""
        trainer = self.trainer
        return int(trainer.world_size * self.hparams.batch_size * trainer.accumulate_grad_batches)

    def configure_optimizers(self) -> dict[str, Any]:
        """SGD (by default) with the linearly scaled rate and the warmup + step-decay schedule."""
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError("No trainable parameter: check model.stage and model.mir_modules.")
        optimizer = self.optimizer_factory(params=params)
        if self.hparams.scale_lr:
            # Paper: lr 0.02 for 8 GPUs x 4 images; linear scaling rule (Goyal et al., 2017).
            factor = self.total_batch_size() / self.hparams.base_batch_size
            for group in optimizer.param_groups:
                group["lr"] *= factor
            log.info(
                "Learning rate scaled by %d/%d -> %.5g",
                self.total_batch_size(),
                self.hparams.base_batch_size,
                optimizer.param_groups[0]["lr"],
            )
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(
            optimizer=optimizer, steps_per_epoch=self._steps_per_epoch()
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    def _steps_per_epoch(self) -> int:
        trainer = self.trainer
        _ = trainer.estimated_stepping_batches  # loads the train dataloader, sets the batch count
        batches = trainer.num_training_batches
        if not math.isfinite(batches):
            raise ValueError("The step-decay schedule needs a sized training dataloader.")
        return max(1, math.ceil(batches / trainer.accumulate_grad_batches))

    # ------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # plain values only: checkpoints are read with torch.load(weights_only=True)
        if self.model_config is not None:
            checkpoint[MODEL_CONFIG_KEY] = self.model_config
        if self.inference_config is not None:
            checkpoint[INFERENCE_KEY] = self.inference_config
        # (the random streams: utils/callbacks/rng_state.py)
