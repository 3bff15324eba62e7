"""Log parsing predictions of a fixed set of evaluation images to the loggers that take images.

Every ``every_n_epochs`` validation epochs (and at every ``validate`` / ``test`` run, e.g.
``evaluate``), the first ``num_images`` images of the evaluation loader are decoded again with
intermediates. The loader is not shuffled, so these are the same images every time and epochs
compare. They go to

* **W&B** as interactive ``wandb.Image``s, one panel per image ``<stage>/<key>/<i>`` (``i`` its
  place in the fixed set, the caption its image id): mask layers ``prediction``
  and ``ground_truth`` (part classes, labelled with the data set's class names from
  :mod:`smp_parsing.metadata`), ``persons`` and ``gt_persons`` (one id per person, so instances
  stay apart) and one box per predicted person with its score (``boxes`` layer ``persons``: the
  dashboard's slider filters persons by score); the center heatmap as its own image
  ``<stage>/<heatmap_key>/<i>``;
* **TensorBoard** as the pictures ``predict`` draws (overlay + legend | center heatmap).

Other loggers are skipped. Only rank 0 draws (its shard of the loader, also fixed).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch import Callback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from smp_parsing import visualization as vis
from smp_parsing.metadata import get_dataset_meta

log = logging.getLogger(__name__)

# W&B stores mask layers as 8-bit PNGs: ids above this cannot be shown.
MAX_MASK_ID = 255


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


def class_labels(dataset: str, num_classes: int | None = None) -> dict[int, str]:
    """``{class id: name}`` of a data set's label space (what the W&B mask layers show).

    Args:
        dataset: data set name (``mhp``, ``synthetic``, ``densepose``, ...).
        num_classes: when given and different from the label space, ids are named by number.
    """
    try:
        names = get_dataset_meta(dataset).classes
    except KeyError:
        names = ()
    if num_classes is not None and len(names) != num_classes:
        return {i: f"class {i}" for i in range(num_classes)}
    return dict(enumerate(names))


def person_labels(count: int) -> dict[int, str]:
    """``{0: "no person", k: "person k"}`` for ``k = 1..count`` (ids of the person layers)."""
    count = min(count, MAX_MASK_ID)
    return {0: "no person", **{k: f"person {k}" for k in range(1, count + 1)}}


def parsing_layers(parsing: Any, scores: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """One image's person maps as a class layer and a person-id layer.

    Args:
        parsing: ``P x H x W`` integer class maps.
        scores: ``(P,)`` scores (the best-scored person is on top where persons overlap) or
            ``None`` (the later person is on top, as MHP paints its GT).

    Returns:
        ``(classes, persons)``: ``H x W`` uint8 class ids and ``H x W`` uint8 person ids
        (``k + 1`` for the k-th map, 0 where nobody is; ids above 255 are shown as 255).
    """
    class_map, owner = vis.merge_person_maps(parsing, scores)
    persons = np.clip(owner + 1, 0, MAX_MASK_ID)
    return class_map.astype(np.uint8), persons.astype(np.uint8)


def person_boxes(parsing: Any, scores: Any) -> list[dict[str, Any]]:
    """W&B ``box_data``: the pixel box of every non-empty predicted person with its score.

    Args:
        parsing: ``P x H x W`` integer class maps.
        scores: ``(P,)`` scores.

    Returns:
        One dict per person with ``position`` (pixel ``minX/minY/maxX/maxY``), ``class_id``
        ``k + 1`` (the id of the ``persons`` mask layer), ``box_caption`` and ``scores``.
    """
    maps = vis.to_numpy(parsing)
    score_arr = vis.to_numpy(scores).astype(np.float64).reshape(-1)
    boxes = []
    for k, (person, score) in enumerate(zip(maps, score_arr)):
        ys, xs = np.nonzero(person)
        if ys.size == 0:
            continue
        boxes.append(
            {
                "position": {"minX": int(xs.min()), "minY": int(ys.min()),
                             "maxX": int(xs.max()) + 1, "maxY": int(ys.max()) + 1},
                "domain": "pixel",
                "class_id": min(k + 1, MAX_MASK_ID),
                "box_caption": f"person {k + 1}: {score:.2f}",
                "scores": {"score": float(score)},
            }
        )  # fmt: skip
    return boxes


class ParsingImageLogger(Callback):
    """Prediction images of a fixed set of evaluation images.

    Args:
        every_n_epochs: during training, log on validation epochs whose index is a multiple of
            this (``validate`` / ``test`` runs always log).
        num_images: images taken from the first evaluation batches.
        mean: normalisation mean of the data pipeline (RGB, 0..255).
        std: normalisation std of the data pipeline.
        key: panel name of the prediction images (``<stage>/<key>/<i>``; TensorBoard:
            ``<stage>/<key>/<image id>``).
        heatmap_key: panel name of the W&B center heatmaps (``<stage>/<heatmap_key>/<i>``).
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_images: int = 4,
        mean: Sequence[float] = (123.675, 116.28, 103.53),
        std: Sequence[float] = (58.395, 57.12, 57.375),
        key: str = "predictions",
        heatmap_key: str = "center_heatmap",
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.key = key
        self.heatmap_key = heatmap_key
        self._items: list[dict[str, Any]] = []
        self._active = False
        self._person_ids = 0  # largest person id named so far (one label map per W&B layer)

    def _image_loggers(self, trainer: pl.Trainer) -> list:
        return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger | TensorBoardLogger)]

    # ----------------------------------------------------------------- drawing
    @torch.no_grad()
    def collect(
        self, pl_module: pl.LightningModule, batch: Mapping[str, Any], count: int
    ) -> list[dict[str, Any]]:
        """Decode the first ``count`` images of ``batch`` with intermediates.

        Returns:
            Per image ``image`` (``H0 x W0 x 3`` uint8), ``pred`` (``SMP.predict``'s dict with
            ``center_heatmap``), ``gt`` (``G x H0 x W0`` or ``None`` when the batch's GT is not
            at the original size), ``image_id`` and ``dataset``.
        """
        n = min(count, batch["images"].shape[0])
        if n <= 0:
            return []
        images = batch["images"][:n]
        metas = batch["metas"][:n]
        # each image alone, as it was scored (lit_module.predict_images)
        preds = pl_module.predict_images(images, metas, return_intermediates=True)
        gts = list(batch.get("parsing") or [None] * n)[:n]
        items = []
        for image, meta, pred, gt, image_id in zip(images, metas, preds, gts, batch["image_ids"]):
            rgb = input_to_original(image, meta, self.mean, self.std)
            gt_np = None if gt is None else vis.to_numpy(gt)
            if gt_np is not None and gt_np.shape[1:] != rgb.shape[:2]:
                gt_np = None  # GT at the padded size (a train pipeline): no layer rather than a wrong one
            items.append(
                {"image": rgb, "pred": {k: vis.to_numpy(v) for k, v in pred.items()}, "gt": gt_np,
                 "image_id": str(image_id), "dataset": meta.get("dataset", "mhp")}
            )  # fmt: skip
        return items

    def render_picture(self, item: Mapping[str, Any]) -> np.ndarray:
        """``[overlay + legend | center heatmap]``, the picture ``predict`` draws."""
        rgb, pred = item["image"], item["pred"]
        picture = vis.render_prediction(rgb, pred, dataset=item["dataset"])
        if "center_heatmap" in pred:
            heat = vis.render_heatmap(pred["center_heatmap"], size=(rgb.shape[0], rgb.shape[0]))
            picture = np.concatenate([picture, heat], axis=1)
        return picture

    def render_batch(
        self, pl_module: pl.LightningModule, batch: dict[str, Any]
    ) -> list[np.ndarray]:
        """Draw ``[overlay + legend | center heatmap]`` for the first images of ``batch``."""
        return [
            self.render_picture(item) for item in self.collect(pl_module, batch, self.num_images)
        ]

    def wandb_images(self, items: Sequence[Mapping[str, Any]]) -> tuple[list, list]:
        """The interactive W&B images (mask layers + person boxes) and the center heatmaps."""
        import wandb

        most = max((len(it["pred"]["parsing"]) for it in items), default=0)
        most = max([most, *(len(it["gt"]) for it in items if it["gt"] is not None)])
        self._person_ids = max(self._person_ids, most)
        persons = person_labels(self._person_ids)
        images, heatmaps = [], []
        for it in items:
            pred, labels = it["pred"], class_labels(it["dataset"])
            pred_classes, pred_persons = parsing_layers(pred["parsing"], pred["scores"])
            masks = {
                "prediction": {"mask_data": pred_classes, "class_labels": labels},
                "persons": {"mask_data": pred_persons, "class_labels": persons},
            }
            if it["gt"] is not None:
                gt_classes, gt_persons = parsing_layers(it["gt"])
                masks["ground_truth"] = {"mask_data": gt_classes, "class_labels": labels}
                masks["gt_persons"] = {"mask_data": gt_persons, "class_labels": persons}
            boxes = {
                "persons": {
                    "box_data": person_boxes(pred["parsing"], pred["scores"]),
                    "class_labels": persons,
                }
            }
            images.append(
                wandb.Image(it["image"], masks=masks, boxes=boxes, caption=it["image_id"])
            )
            if "center_heatmap" in pred:
                # the S x S grid covers the padded input: shown square, at the image height
                h = it["image"].shape[0]
                heat = vis.render_heatmap(pred["center_heatmap"], size=(h, h))
                heatmaps.append(wandb.Image(heat, caption=it["image_id"]))
        return images, heatmaps

    # ------------------------------------------------------------------- hooks
    def _start(self, trainer: pl.Trainer) -> None:
        self._items = []
        in_fit = trainer.state.fn == "fit"
        self._active = (
            not trainer.sanity_checking
            and trainer.is_global_zero
            and bool(self._image_loggers(trainer))
            and (not in_fit or trainer.current_epoch % self.every_n_epochs == 0)
        )

    def _collect(self, pl_module: pl.LightningModule, batch: Any) -> None:
        if self._active and batch is not None and len(self._items) < self.num_images:
            self._items += self.collect(pl_module, batch, self.num_images - len(self._items))

    def _send(self, trainer: pl.Trainer, prefix: str) -> None:
        items, self._items = self._items, []
        if not self._active or not items:
            return
        captions = [it["image_id"] for it in items]
        pictures = None
        for logger in self._image_loggers(trainer):
            if isinstance(logger, WandbLogger):
                # One panel per image of the fixed set (its step slider compares epochs); a list
                # under one key would need equal image sizes.
                images, heatmaps = self.wandb_images(items)
                panels = {f"{prefix}/{self.key}/{i}": image for i, image in enumerate(images)}
                panels.update(
                    {f"{prefix}/{self.heatmap_key}/{i}": heat for i, heat in enumerate(heatmaps)}
                )
                logger.log_metrics(panels, step=trainer.global_step)
            else:
                pictures = pictures or [self.render_picture(it) for it in items]
                for caption, picture in zip(captions, pictures):
                    logger.experiment.add_image(f"{prefix}/{self.key}/{caption}", picture,
                                                trainer.global_step, dataformats="HWC")  # fmt: skip

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer)

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: dict[str, Any],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._collect(pl_module, batch)

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: dict[str, Any],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._collect(pl_module, batch)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._send(trainer, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._send(trainer, "test")
