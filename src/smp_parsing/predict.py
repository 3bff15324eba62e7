"""Parse images with a checkpoint:
``python -m smp_parsing.predict ckpt_path=<.ckpt> input=<image or folder> output=<folder>``.

Runs Lightning's predict loop (``SMPLitModule.predict_step``, each image alone as in evaluation)
over the images; a ``BasePredictionWriter`` (utils/callbacks/prediction_writer.py) writes, for every
image, the person maps in the MHP v2 layout (``<id>_<NN>_<kk>.png``, class id in the R channel) and
one ``scores.json``, so that ``python -m smp_parsing.metrics.evaluate_dirs`` can score the folder;
plus, under ``overlays/``, a picture for a person to look at (parts coloured by class, each person
outlined, a legend), drawn by :mod:`smp_parsing.visualization`. The test transform the run was evaluated with (resize,
normalise, pad), stored in the checkpoint, is applied: no ``experiment=`` needed;
``data.test_transforms.<key>=...`` changes it (logged).

The images are read by the data sets' reader (:func:`smp_parsing.data.image_files.read_image`:
header and pixel-limit checks, ``data.max_image_pixels``, errors naming the file), turned upright
by their EXIF orientation (``exif_transpose=true``: a phone photo is parsed and its maps written
as a person sees it; the data sets read the stored pixel grid, which their annotations index).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

import smp_parsing.utils  # noqa: F401  (registers the config resolvers)
from smp_parsing.data.collate import collate_parsing
from smp_parsing.data.image_files import (
    DEFAULT_MAX_IMAGE_PIXELS,
    PREDICT_IMAGE_SUFFIXES,
    read_image,
)
from smp_parsing.models.deploy import inference_options, prepare_for_inference
from smp_parsing.train import CONFIG_DIR
from smp_parsing.utils.callbacks.prediction_writer import PredictionDirWriter
from smp_parsing.utils.checkpoint import inference_data_config, load_lit_module, read_checkpoint
from smp_parsing.utils.task_wrapper import apply_extras, task_wrapper

log = logging.getLogger(__name__)


def list_images(input_path: str | Path) -> list[Path]:
    """The image files of ``input_path`` (one file, or a folder's images sorted by name).

    Raises:
        FileNotFoundError: the path does not exist or the folder holds no image.
        ValueError: an image name is not a regular file (a FIFO, a folder), or two images
            share a file stem (``a.jpg`` and ``a.png``): their predictions would be written
            under one image id, the second silently replacing the first.
    """
    path = Path(input_path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"input={path}: no such image or folder")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in PREDICT_IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(
            f"input={path}: no image ({'/'.join(PREDICT_IMAGE_SUFFIXES)}) in the folder"
        )
    special = [p.name for p in files if not p.is_file()]  # a FIFO would block the reader
    if special:
        raise ValueError(f"input={path}: not regular files, refused: {special[:5]}")
    by_stem: dict[str, list[str]] = {}
    for file in files:
        by_stem.setdefault(file.stem, []).append(file.name)
    clashes = [names for names in by_stem.values() if len(names) > 1]
    if clashes:
        raise ValueError(
            f"input={path}: images share a name without extension, so their predictions would "
            f"overwrite each other (the image id is the stem): {clashes[:5]}; rename them"
        )
    return files


class ImageFiles(Dataset):
    """Image files through the test transform: the samples of ``predict``'s loader.

    Args:
        files: the images (:func:`list_images`).
        transforms: the test :class:`~smp_parsing.data.transforms.ParsingTransforms`.
        exif_transpose: turn each image upright by its EXIF orientation first.
        max_pixels: largest ``width * height`` decoded, checked on the file header.
    """

    def __init__(
        self,
        files: list[Path],
        transforms: Any,
        exif_transpose: bool = True,
        max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        self.files = files
        self.transforms = transforms
        self.exif_transpose = exif_transpose
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """The transformed sample (id = file stem, no person) and the original ``rgb``.

        Raises:
            BadSampleError: (a ``ValueError``) naming a file that is not a readable image or
                whose header claims more than ``max_pixels`` pixels.
        """
        file = self.files[index]
        rgb = read_image(file, self.max_pixels, exif_transpose=self.exif_transpose)
        empty = np.zeros((0, *rgb.shape[:2]), np.uint8)
        sample = self.transforms({"image": rgb, "parsing": empty, "image_id": file.stem})
        return {**sample, "rgb": rgb}


def collate_images(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`~smp_parsing.data.collate.collate_parsing` plus the originals as ``rgbs``."""
    batch = collate_parsing(samples, pad_parsing=False)
    batch["rgbs"] = [s["rgb"] for s in samples]
    return batch


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@task_wrapper
def predict(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Parse ``cfg.input`` with ``cfg.ckpt_path`` and write the results to ``cfg.output``.

    Returns:
        ``({"num_images": n, "num_persons": p, "output": str}, objects)``.
    """
    files = list_images(cfg.input)
    out_dir = Path(cfg.output)
    ckpt = read_checkpoint(cfg.ckpt_path)
    # the trained test transform (resize, normalisation, padding) unless overridden
    data_cfg = inference_data_config(ckpt, cfg.ckpt_path, cfg)
    fallback = OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=True))
    model = load_lit_module(cfg.ckpt_path, fallback, cfg.get("model_overrides"), checkpoint=ckpt)
    device = resolve_device(cfg.device)
    model.to(device)
    # cfg.inference (deploy: BN folding, Winograd; channels_last): same outputs, faster
    done = prepare_for_inference(model.net.eval(), **inference_options(cfg))
    log.info("Inference network: %s", done)
    transforms = hydra.utils.instantiate(data_cfg.test_transforms)
    dataset = data_cfg.get("dataset_name", "mhp")
    log.info("Test transform of %s: resize %s", dataset,
             OmegaConf.select(data_cfg, "test_transforms.resize"))  # fmt: skip

    images = ImageFiles(
        files,
        transforms,
        exif_transpose=cfg.get("exif_transpose", True),
        max_pixels=data_cfg.get("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS),
    )
    loader = DataLoader(images, batch_size=cfg.batch_size, shuffle=False,
                        collate_fn=collate_images)  # fmt: skip
    writer = PredictionDirWriter(out_dir, overlays=cfg.overlays, dataset=dataset)
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=[device.index or 0] if device.type == "cuda" else 1,
        callbacks=[writer], logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=cfg.paths.output_dir,
    )  # fmt: skip
    # written batch by batch by the writer: nothing kept, memory flat whatever the folder size
    trainer.predict(model, dataloaders=loader, return_predictions=False)
    num_persons = writer.num_persons
    overlay_dir = writer.overlay_dir
    log.info("Parsed %d images (%d persons) into %s", len(files), num_persons, out_dir)
    print(f"Predictions: {out_dir} ({len(files)} images, {num_persons} persons)")
    if cfg.overlays:
        print(f"Overlays:    {overlay_dir}")
    metric_dict = {"num_images": len(files), "num_persons": num_persons, "output": str(out_dir)}
    return metric_dict, {"cfg": cfg, "model": model}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict.yaml")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    apply_extras(cfg)
    predict(cfg)


if __name__ == "__main__":
    main()
