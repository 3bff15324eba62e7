"""Builders of tiny on-disk data sets in the exact real layouts, for tests of any part.

Import from tests: ``from tests.data.builders import write_mhp_tree, write_densepose_json``
(or ``from data.builders import ...`` when ``tests/`` is on ``sys.path``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
from PIL import Image
from pycocotools import mask as mask_utils


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A random ``H x W x 3`` uint8 RGB image."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def label_png_rgb(label: np.ndarray, person_index: int) -> np.ndarray:
    """Encode a part-id map like a real MHP PNG: ids in R, *different* values in G and B.

    G and B are chosen so that reading the PNG as grayscale, or reading G/B, gives wrong ids.
    """
    rgb = np.zeros((*label.shape, 3), np.uint8)
    rgb[..., 0] = label
    rgb[..., 1] = np.where(label > 0, (label.astype(np.int32) * 7 + 3) % 256, 0)
    rgb[..., 2] = np.where(label > 0, 200 + person_index, 0)
    return rgb


def write_mhp_tree(root: str | Path, samples: list[dict[str, Any]], split: str = "train") -> Path:
    """Write an MHP v2 tree (list file, JPEG images, per-person RGB PNGs, optional pose .mat).

    Args:
        root: Data set root (created).
        samples: Dicts with ``image_id`` (str), ``image`` (``H x W x 3`` uint8 RGB), ``parsing``
            (``N x H x W`` ids, person order) and optionally ``keypoints`` (``N x 20 x 3``),
            ``image_format`` (``"jpg"`` default, or ``"png"`` for a lossless image).
        split: ``train``, ``val`` or a ``test_*`` list (files then go to ``test/``).

    Returns:
        The root path.
    """
    root = Path(root)
    folder = root / ("test" if split.startswith("test") else split)
    for sub in ("images", "parsing_annos", "pose_annos"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (root / "list").mkdir(parents=True, exist_ok=True)
    ids = []
    for sample in samples:
        image_id = sample["image_id"]
        ids.append(image_id)
        suffix = sample.get("image_format", "jpg")
        Image.fromarray(sample["image"]).save(
            folder / "images" / f"{image_id}.{suffix}", quality=95
        )
        parsing = np.asarray(sample["parsing"], np.uint8)
        for k, label in enumerate(parsing, start=1):
            name = f"{image_id}_{len(parsing):02d}_{k:02d}.png"
            Image.fromarray(label_png_rgb(label, k)).save(folder / "parsing_annos" / name)
        if "keypoints" in sample:
            content = {
                f"person_{k}": np.asarray(p, np.float64) for k, p in enumerate(sample["keypoints"])
            }
            scipy.io.savemat(folder / "pose_annos" / f"{image_id}.mat", content)
    list_file = root / "list" / f"{split}.txt"
    list_file.write_text("".join(f"{i}\n" for i in ids))
    return root


def encode_dp_masks(parts_256: np.ndarray) -> list[Any]:
    """Encode a ``256 x 256`` part-id map as 14 DensePose ``dp_masks`` RLEs (``[]`` when absent)."""
    entries: list[Any] = []
    for part in range(1, 15):
        mask = np.asfortranarray((parts_256 == part).astype(np.uint8))
        if mask.any():
            rle = mask_utils.encode(mask)
            entries.append({"counts": rle["counts"].decode("ascii"), "size": list(rle["size"])})
        else:
            entries.append([])
    return entries


def write_densepose_json(
    ann_file: str | Path, image_root: str | Path, samples: list[dict[str, Any]]
) -> Path:
    """Write a DensePose-COCO json and its images.

    Args:
        ann_file: Json path (written).
        image_root: Image folder (created).
        samples: Dicts with ``id`` (int), ``file_name``, ``image`` (``H x W x 3`` uint8) and
            ``persons``: dicts with ``bbox`` ``[x, y, w, h]`` and either ``parts_256`` (a
            ``256 x 256`` id map, encoded with pycocotools) or ``dp_masks`` as-is; optional
            ``iscrowd``.

    Returns:
        The json path.
    """
    image_root = Path(image_root)
    image_root.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for sample in samples:
        height, width = sample["image"].shape[:2]
        Image.fromarray(sample["image"]).save(image_root / sample["file_name"], quality=95)
        images.append(
            {"id": sample["id"], "file_name": sample["file_name"], "height": height, "width": width}
        )
        for person in sample["persons"]:
            annotation = {
                "id": len(annotations) + 1,
                "image_id": sample["id"],
                "category_id": 1,
                "bbox": list(person["bbox"]),
                "area": float(person["bbox"][2] * person["bbox"][3]),
                "iscrowd": person.get("iscrowd", 0),
            }
            if "parts_256" in person:
                annotation["dp_masks"] = encode_dp_masks(person["parts_256"])
            elif "dp_masks" in person:
                annotation["dp_masks"] = person["dp_masks"]
            annotations.append(annotation)
    content = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person", "supercategory": "person"}],
    }
    Path(ann_file).parent.mkdir(parents=True, exist_ok=True)
    Path(ann_file).write_text(json.dumps(content))
    return Path(ann_file)
