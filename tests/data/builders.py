"""Builders of tiny on-disk data sets in the exact real layouts, for tests of any part.

Import from tests: ``from tests.data.builders import write_mhp_tree, write_densepose_json``
(CIHP: ``write_cihp_official``, ``write_cihp_coco``)
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


def save_label_png(path: Path, label: np.ndarray, mode: str = "L") -> None:
    """Write a one-channel label map as a CIHP-style index PNG.

    Args:
        path: PNG path (its folder is created).
        label: ``H x W`` ids.
        mode: ``"L"`` 8-bit grey; ``"P"`` palette whose colours differ from the indices (index i
            shows as ``(255 - i, 37 i mod 256, 91 i mod 256)``, so reading colours, or converting
            to grey, gives wrong ids); ``"RGB"`` the ids in all three channels (a bad label file).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    label = np.asarray(label, np.uint8)
    if mode == "P":
        image = Image.frombytes("P", label.shape[::-1], label.tobytes())  # bytes = indices
        image.putpalette([v for i in range(256) for v in (255 - i, 37 * i % 256, 91 * i % 256)])
    elif mode == "RGB":
        image = Image.fromarray(np.repeat(label[..., None], 3, axis=2))
    else:
        image = Image.fromarray(label)
    image.save(path)


def write_cihp_official(
    root: str | Path, samples: list[dict[str, Any]], split: str = "train", label_mode: str = "L"
) -> Path:
    """Write a split of the official CIHP layout (``Training/`` or ``Validation/``).

    Args:
        root: The ``instance-level_human_parsing`` folder (created).
        samples: Dicts with ``image_id``, ``image`` (``H x W x 3`` uint8), ``category`` (``H x W``
            part classes) and ``human`` (``H x W`` person ids, 0 = none); optional ``label_mode``
            overriding ``label_mode`` for this sample; ``image_format`` (``"jpg"`` / ``"png"``).
        split: ``train`` or ``val``.
        label_mode: How ``Category_ids`` / ``Human_ids`` are stored (see :func:`save_label_png`).

    The colour renderings ``Categories/`` and ``Humans/`` are written too, with colours that are
    not the ids, so that a reader which used them would fail.

    Returns:
        The root path.
    """
    root = Path(root)
    folder = root / {"train": "Training", "val": "Validation"}[split]
    (folder / "Images").mkdir(parents=True, exist_ok=True)
    for sample in samples:
        image_id = sample["image_id"]
        suffix = sample.get("image_format", "jpg")
        Image.fromarray(sample["image"]).save(
            folder / "Images" / f"{image_id}.{suffix}", quality=95
        )
        mode = sample.get("label_mode", label_mode)
        save_label_png(folder / "Category_ids" / f"{image_id}.png", sample["category"], mode)
        save_label_png(folder / "Human_ids" / f"{image_id}.png", sample["human"], mode)
        for sub, ids in (("Categories", sample["category"]), ("Humans", sample["human"])):
            colours = (np.asarray(ids, np.int32)[..., None] * [13, 101, 29] + 50) % 256
            (folder / sub).mkdir(exist_ok=True)
            Image.fromarray(colours.astype(np.uint8)).save(folder / sub / f"{image_id}.png")
    (folder / f"{split}_id.txt").write_text("".join(f"{s['image_id']}\n" for s in samples))
    return root


def write_cihp_coco(root: str | Path, samples: list[dict[str, Any]], split: str = "train") -> Path:
    """Write a split of the per-person CIHP layout with its COCO-style json.

    Args:
        root: Data root (``annotations/``, ``<split>_img/``, ``<split>_parsing/`` are created).
        samples: Dicts with ``id`` (int), ``file_name``, ``image`` (``H x W x 3`` uint8) and
            ``persons``: dicts with ``parsing`` (``H x W`` part classes), optional ``id`` (the
            annotation id; default: running count), ``iscrowd``, ``name`` (the PNG name; default
            ``<stem>_<kk>.png``), ``label_mode`` (see :func:`save_label_png`) and ``write``
            (``False`` leaves the PNG out). Annotations go into the json in the given order.

    Returns:
        The json path.
    """
    root = Path(root)
    (root / f"{split}_img").mkdir(parents=True, exist_ok=True)
    (root / f"{split}_parsing").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for sample in samples:
        height, width = sample["image"].shape[:2]
        Image.fromarray(sample["image"]).save(
            root / f"{split}_img" / sample["file_name"], quality=95
        )
        images.append(
            {"id": sample["id"], "file_name": sample["file_name"], "height": height, "width": width}
        )
        stem = Path(sample["file_name"]).stem
        for k, person in enumerate(sample["persons"], start=1):
            label = np.asarray(person["parsing"], np.uint8)
            name = person.get("name", f"{stem}_{k:02d}.png")
            if person.get("write", True):
                save_label_png(
                    root / f"{split}_parsing" / name, label, person.get("label_mode", "L")
                )
            ys, xs = np.nonzero(label)
            bbox = (
                [
                    int(xs.min()),
                    int(ys.min()),
                    int(xs.max() - xs.min() + 1),
                    int(ys.max() - ys.min() + 1),
                ]
                if len(xs)
                else [0, 0, 0, 0]
            )
            annotations.append(
                {
                    "id": person.get("id", len(annotations) + 1),
                    "image_id": sample["id"],
                    "category_id": 1,
                    "parsing": name,
                    "bbox": bbox,
                    "area": int(len(xs)),
                    "iscrowd": person.get("iscrowd", 0),
                }
            )
    content = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person", "supercategory": "person"}],
    }
    ann_file = root / "annotations" / f"CIHP_{split}.json"
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps(content))
    return ann_file


def write_synthetic_cihp(
    root: str | Path, layout: str, num_train: int = 4, num_val: int = 2
) -> Path:
    """A tiny synthetic CIHP set (~96 px images, 1-3 figures) in ``layout``, for training tests."""
    from smp_parsing.data.synthetic_cihp import SyntheticCIHPGenerator

    generator = SyntheticCIHPGenerator(
        layout=layout, size=96, max_persons=3, scale_range=(0.5, 0.95), occlusion=0.1
    )
    return generator.generate(root, num_train, num_val, seed=0)


def write_exif_rotated_jpeg(path: str | Path, stored: np.ndarray, orientation: int = 6) -> Path:
    """A JPEG whose pixels are ``stored`` (``H x W x 3``) and whose EXIF ``Orientation`` tag says
    how to turn them upright (6: 90 degrees clockwise, as a phone held upright writes it)."""
    exif = Image.Exif()
    exif[0x0112] = orientation  # ExifTags.Base.Orientation
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    return Path(path)
