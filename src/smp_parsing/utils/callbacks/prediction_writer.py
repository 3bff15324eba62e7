"""Write ``predict``'s outputs batch by batch (Lightning's ``BasePredictionWriter``).

Per image: the person maps in the MHP v2 layout plus ``scores.json``
(:func:`smp_parsing.metrics.evaluate_dirs.write_prediction_dir`, scorable by
``python -m smp_parsing.metrics.evaluate_dirs``) and, under ``overlays/``, a picture for a person
to look at (:func:`smp_parsing.visualization.render_prediction`). Written as each batch ends, so
memory stays flat whatever the folder size (``trainer.predict(return_predictions=False)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter

from smp_parsing import visualization as vis
from smp_parsing.metrics.evaluate_dirs import write_prediction_dir


class PredictionDirWriter(BasePredictionWriter):
    """Write each batch's predictions into ``output_dir``.

    Args:
        output_dir: the prediction folder (created).
        overlays: also draw ``overlays/<image id>.png`` (needs the batch's ``rgbs``).
        dataset: data set name whose palette and class names the overlays use.

    Attributes:
        num_images, num_persons: counts written so far.
    """

    def __init__(self, output_dir: str | Path, overlays: bool = True, dataset: str = "mhp") -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.overlay_dir = self.output_dir / "overlays"
        self.overlays = overlays
        self.dataset = dataset
        self.num_images = 0
        self.num_persons = 0

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Sequence[dict[str, Any]],
        batch_indices: Sequence[int] | None,
        batch: dict[str, Any],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """``prediction``: per image ``parsing`` ``P x H0 x W0`` and ``scores`` ``(P,)``."""
        if self.overlays:
            self.overlay_dir.mkdir(parents=True, exist_ok=True)
        for i, (image_id, pred) in enumerate(zip(batch["image_ids"], prediction)):
            write_prediction_dir(self.output_dir, image_id, pred["parsing"], pred["scores"])
            self.num_images += 1
            self.num_persons += int(pred["parsing"].shape[0])
            if self.overlays:
                picture = vis.render_prediction(batch["rgbs"][i], pred, dataset=self.dataset)
                cv2.imwrite(str(self.overlay_dir / f"{image_id}.png"), picture[..., ::-1])
