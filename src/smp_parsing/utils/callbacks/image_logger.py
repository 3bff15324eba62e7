"""Log predicted parsing overlays and center heatmaps to the loggers that take images.

Every ``every_n_epochs`` validation epochs, the first ``num_images`` images of the first
validation batch are decoded again with intermediates, drawn by :mod:`smp_parsing.visualization`
(the same pictures as ``predict``) and sent to W&B (``log_image``) and TensorBoard
(``add_image``). Other loggers are skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import cv2
import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch import Callback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from smp_parsing import visualization as vis

log = logging.getLogger(__name__)


def input_to_original(image: torch.Tensor, meta: dict[str, Any], mean, std) -> np.ndarray:
    """Turn one normalised, resized, padded network input back into the original image.

    Args:
        image: ``3 x Hp x Wp`` normalised input.
        meta: the sample's ``meta`` (``img_size`` = resized content, ``ori_size``).
        mean: normalisation mean (RGB, 0..255).
        std: normalisation std.

    Returns:
        ``H0 x W0 x 3`` uint8 RGB.
    """
    rgb = vis.denormalize_image(image, mean, std)
    h, w = (int(v) for v in meta["img_size"])
    h0, w0 = (int(v) for v in meta["ori_size"])
    rgb = rgb[:h, :w]
    if (h, w) != (h0, w0):
        rgb = cv2.resize(rgb, (w0, h0), interpolation=cv2.INTER_LINEAR)
    return rgb


class ParsingImageLogger(Callback):
    """Periodic prediction pictures during validation.

    Args:
        every_n_epochs: log on validation epochs whose index is a multiple of this.
        num_images: images of the first validation batch to draw.
        mean: normalisation mean of the data pipeline (RGB, 0..255).
        std: normalisation std of the data pipeline.
        key: name of the image panel in the loggers.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_images: int = 4,
        mean: Sequence[float] = (123.675, 116.28, 103.53),
        std: Sequence[float] = (58.395, 57.12, 57.375),
        key: str = "val/predictions",
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.key = key

    def _image_loggers(self, trainer: pl.Trainer) -> list:
        return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger | TensorBoardLogger)]

    @torch.no_grad()
    def render_batch(
        self, pl_module: pl.LightningModule, batch: dict[str, Any]
    ) -> list[np.ndarray]:
        """Draw ``[overlay + legend | center heatmap]`` for the first images of ``batch``."""
        n = min(self.num_images, batch["images"].shape[0])
        images = batch["images"][:n]
        metas = batch["metas"][:n]
        outputs = pl_module.net(images)
        preds = pl_module.net.predict(outputs, metas, return_intermediates=True)
        panels = []
        for image, meta, pred in zip(images, metas, preds):
            rgb = input_to_original(image, meta, self.mean, self.std)
            picture = vis.render_prediction(rgb, pred, dataset=meta.get("dataset", "mhp"))
            if "center_heatmap" in pred:
                heat = vis.render_heatmap(pred["center_heatmap"], size=(rgb.shape[0], rgb.shape[0]))
                picture = np.concatenate([picture, heat], axis=1)
            panels.append(picture)
        return panels

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: dict[str, Any],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx != 0 or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if trainer.current_epoch % self.every_n_epochs != 0:
            return
        targets = self._image_loggers(trainer)
        if not targets:
            return
        panels = self.render_batch(pl_module, batch)
        captions = [str(i) for i in batch["image_ids"][: len(panels)]]
        for logger in targets:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=self.key, images=panels, caption=captions,
                                 step=trainer.global_step)  # fmt: skip
            else:
                for caption, panel in zip(captions, panels):
                    logger.experiment.add_image(
                        f"{self.key}/{caption}", panel, trainer.global_step, dataformats="HWC"
                    )
