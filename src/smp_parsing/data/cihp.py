"""Reader for CIHP (Crowd Instance-level Human Parsing), in its two on-disk layouts.

1. The official release (``instance-level_human_parsing/``)::

       <root>/Training/train_id.txt                 one image id per line (Validation/val_id.txt)
       <root>/Training/Images/<id>.jpg
       <root>/Training/Category_ids/<id>.png        one channel: part class 0..19 of every pixel
       <root>/Training/Human_ids/<id>.png           one channel: 0 background, 1..K the person
       <root>/Training/{Categories,Humans,Instances}/<id>.png   colour renderings, never read

   A person's map is ``Category_ids`` where ``Human_ids == k``, else 0, persons in ascending id
   order; ids absent from the image (gaps) are skipped.

2. The per-person layout with a COCO-style json (what Parsing R-CNN's tools convert CIHP to, and
   what the SMP release reads)::

       <root>/annotations/CIHP_train.json           images (file_name, id, width, height) and
                                                    annotations (image_id, parsing, bbox, area,
                                                    iscrowd); ``parsing`` = a person PNG's name
       <root>/train_img/<file_name>
       <root>/train_parsing/<parsing>               one channel: that person's part classes

   Crowd annotations are left out; an image's persons come in annotation-id order; an image
   without annotations has no person.

Label PNGs are index images: stored as 8-bit grey (``L``) or as palette (``P``) PNGs, the label is
the stored index, never the palette colour. An RGB(A) label file is an error naming the file (its
colours are not class ids: those are the ``Categories/`` renderings). A labelled pixel whose human
id is 0 belongs to no person and is dropped; a person whose pixels are all class 0 is not ground
truth and is dropped (debug log), as the MHP reader does.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

import numpy as np

from smp_parsing.data.base import (
    ListedDataset,
    check_class_ids,
    drop_empty_persons,
    index_images,
)
from smp_parsing.data.densepose import safe_file_name
from smp_parsing.data.errors import BadSampleError, BadSampleTracker, DataRootError
from smp_parsing.data.image_files import (
    DEFAULT_MAX_IMAGE_PIXELS,
    read_image,
    read_label_png,
)
from smp_parsing.data.registry import register_dataset

log = logging.getLogger(__name__)

# The LIP label space: the ids of CIHP's Category_ids PNGs. Left/right are the person's own sides,
# as in MHP v2.
CIHP_CLASSES: tuple[str, ...] = (
    "Background",
    "Hat", "Hair", "Glove", "Sunglasses", "UpperClothes",
    "Dress", "Coat", "Socks", "Pants", "Torso-skin",
    "Scarf", "Skirt", "Face", "Left-arm", "Right-arm",
    "Left-leg", "Right-leg", "Left-shoe", "Right-shoe",
)  # fmt: skip

CIHP_FLIP_PAIRS: tuple[tuple[int, int], ...] = ((14, 15), (16, 17), (18, 19))

CIHPLayout = Literal["official", "coco"]
LAYOUTS: tuple[str, ...] = ("official", "coco")
OFFICIAL_SPLIT_DIRS: dict[str, str] = {"train": "Training", "val": "Validation"}

CIHP_LAYOUT_HELP = """expected CIHP in one of two layouts (data.train_dataset.layout=official|coco):
  official (the folder instance-level_human_parsing/ of the release):
    <root>/Training/train_id.txt, <root>/Validation/val_id.txt   (one image id per line)
    <root>/Training/Images/<id>.jpg
    <root>/Training/Category_ids/<id>.png    (one-channel part class 0..19, grey or palette PNG)
    <root>/Training/Human_ids/<id>.png       (one-channel person id, 0 = background)
  coco (Parsing R-CNN / SMP release):
    <root>/annotations/CIHP_train.json, CIHP_val.json
    <root>/train_img/, val_img/              (images named by the json's file_name)
    <root>/train_parsing/, val_parsing/      (one-channel person PNGs named by `parsing`)
Without the real data set: `data=synthetic_cihp` (generated on first use), or
`python -m smp_parsing.data.synthetic_cihp --root DIR --layout coco`."""


def _json_size(value: Any) -> int:
    """An image record's ``height``/``width`` as a positive int (``ValueError`` otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{value!r} is not a size")
    if not 0 < value < 2**31 or value != int(value):
        raise ValueError(f"{value!r} is not a size")
    return int(value)


def person_maps(category: np.ndarray, human: np.ndarray) -> np.ndarray:
    """Split an image-level class map into one map per person.

    Args:
        category: ``H x W`` uint8 part classes.
        human: ``H x W`` uint8 person ids, 0 = no person.

    Returns:
        ``N x H x W`` uint8, one map per person id present in ``human`` (ascending, gaps skipped):
        ``category`` where ``human == k``, else 0. Labelled pixels of human id 0 are in no map.
    """
    ids = np.unique(human)
    ids = ids[ids > 0]
    return np.where(human[None] == ids[:, None, None], category[None], 0).astype(np.uint8)


@register_dataset("cihp", CIHP_CLASSES, CIHP_FLIP_PAIRS)
class CIHPDataset(ListedDataset):
    """CIHP multi-human parsing, one item per image, from the official or the COCO-style layout.

    Args:
        root: The folder holding ``Training/`` + ``Validation/`` (official) or ``annotations/``
            (coco).
        split: ``train`` or ``val``.
        layout: ``official`` or ``coco`` (see the module docstring).
        transforms: Callable applied to the raw item (see :mod:`smp_parsing.data.transforms`).
        on_bad_sample: ``"error"`` raises :class:`BadSampleError` naming the file; ``"skip"`` logs a
            warning, counts the sample and returns ``None`` for it (the collate drops it).
        limit: Use only the first ``limit`` images; ``None`` for all.
        num_classes: Number of classes including background; larger ids are bad input.
        ann_file: coco only: the json (default ``<root>/annotations/CIHP_<split>.json``).
        image_dir: coco only: the image folder (default ``<root>/<split>_img``).
        parsing_dir: coco only: the person PNG folder (default ``<root>/<split>_parsing``).
        max_image_pixels: Largest ``width * height`` of an image or label file, checked on the
            file header before decoding (larger files are bad samples: decompression bombs).

    Raises:
        DataRootError: when the root, the id list / json or the image folder is missing.
        BadSampleError: an unreadable json; (``on_bad_sample="error"``) a listed id without image
            or label files, a malformed image record, an annotation of an image not in the json.

    A bad annotation of a listed image (no or an unsafe PNG name) makes that image a bad sample
    when it is read: leaving the person out would make the image's ground truth silently wrong.

    Items (without transforms) are dicts: ``image`` ``H x W x 3`` uint8 RGB, ``parsing``
    ``N x H x W`` uint8 (one map per person, all-zero persons removed) and ``image_id`` str (the
    listed id, or the image file's stem in the coco layout).
    """

    dataset_name = "cihp"
    layout_help = CIHP_LAYOUT_HELP

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        layout: str = "official",
        transforms: Any = None,
        on_bad_sample: str = "error",
        limit: int | None = None,
        num_classes: int = len(CIHP_CLASSES),
        ann_file: str | Path | None = None,
        image_dir: str | Path | None = None,
        parsing_dir: str | Path | None = None,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"CIHP layout must be one of {LAYOUTS}, got {layout!r}")
        self.root = Path(root)
        self.split = split
        self.layout = layout
        self.transforms = transforms
        self.num_classes = num_classes
        self.max_image_pixels = max_image_pixels
        self.tracker = BadSampleTracker(on_bad_sample, log)
        # image key -> the first bad annotation of that image (coco), raised when it is read
        self.broken: dict[int, BadSampleError] = {}
        if not self.root.is_dir():
            raise DataRootError(f"CIHP root {self.root} does not exist.\n{CIHP_LAYOUT_HELP}")
        # Each sample: (image_id, image path, [label paths], json size (H, W) or None). Official:
        # labels = [Category_ids, Human_ids]; coco: one PNG per person, annotation-id order.
        self.samples: list[tuple[str, Path, list[Path], tuple[int, int] | None]] = []
        if layout == "official":
            self._index_official(limit)
        else:
            self._index_coco(limit, ann_file, image_dir, parsing_dir)

    @classmethod
    def required_paths(  # type: ignore[override]
        cls,
        split: str = "train",
        root: str | Path = ".",
        layout: str = "official",
        ann_file: str | Path | None = None,
        image_dir: str | Path | None = None,
        parsing_dir: str | Path | None = None,
        **_: Any,
    ) -> list[Path]:
        """What a split needs on disk before any file is read (see
        :meth:`ParsingDataset.required_paths`).

        Official: the id list and the images folder; coco: the json and the images folder.
        """
        if layout == "official":
            return list(cls.official_paths(root, split))
        return list(cls.coco_paths(root, split, ann_file, image_dir, parsing_dir)[:2])

    # ------------------------------------------------------------------ official layout
    @staticmethod
    def official_paths(root: str | Path, split: str) -> tuple[Path, Path]:
        """``(id list, images folder)`` of a split of the official layout."""
        if split not in OFFICIAL_SPLIT_DIRS:
            raise ValueError(
                f"CIHP split must be one of {tuple(OFFICIAL_SPLIT_DIRS)}, got {split!r}"
            )
        split_dir = Path(root) / OFFICIAL_SPLIT_DIRS[split]
        return split_dir / f"{split}_id.txt", split_dir / "Images"

    def _index_official(self, limit: int | None) -> None:
        list_file, image_dir = self.official_paths(self.root, self.split)
        for needed, what in ((list_file, "id list"), (image_dir, "image folder")):
            if not needed.exists():
                raise DataRootError(f"CIHP {what} {needed} is missing.\n{CIHP_LAYOUT_HELP}")
        category_dir, human_dir = image_dir.parent / "Category_ids", image_dir.parent / "Human_ids"
        # One listing per folder (not one stat per id: CIHP train lists 28k ids).
        images = index_images(image_dir)
        labels = {
            folder: {p.stem for p in folder.iterdir() if p.suffix.lower() == ".png"}
            if folder.is_dir()
            else set()
            for folder in (category_dir, human_dir)
        }
        for image_id, image_path in self.listed_images(list_file, image_dir, images, limit):
            missing = [f / f"{image_id}.png" for f in labels if image_id not in labels[f]]
            if missing:
                self.tracker.report(
                    BadSampleError(missing[0], f"label file of listed id {image_id!r} is missing")
                )
                continue
            paths = [category_dir / f"{image_id}.png", human_dir / f"{image_id}.png"]
            self.samples.append((image_id, image_path, paths, None))

    # ------------------------------------------------------------------ coco layout
    @staticmethod
    def coco_paths(
        root: str | Path,
        split: str,
        ann_file: str | Path | None = None,
        image_dir: str | Path | None = None,
        parsing_dir: str | Path | None = None,
    ) -> tuple[Path, Path, Path]:
        """``(json, images folder, person PNG folder)`` of a split of the coco layout."""
        root = Path(root)
        return (
            Path(ann_file) if ann_file else root / "annotations" / f"CIHP_{split}.json",
            Path(image_dir) if image_dir else root / f"{split}_img",
            Path(parsing_dir) if parsing_dir else root / f"{split}_parsing",
        )

    def _index_coco(
        self,
        limit: int | None,
        ann_file: str | Path | None,
        image_dir: str | Path | None,
        parsing_dir: str | Path | None,
    ) -> None:
        self.ann_file, self.image_dir, self.parsing_dir = self.coco_paths(
            self.root, self.split, ann_file, image_dir, parsing_dir
        )
        for needed, what in ((self.ann_file, "annotation file"), (self.image_dir, "image folder")):
            if not needed.exists():
                raise DataRootError(f"CIHP {what} {needed} is missing.\n{CIHP_LAYOUT_HELP}")
        try:
            content = json.loads(self.ann_file.read_text())
            images, annotations = content["images"], content.get("annotations", [])
            if not isinstance(images, list) or not isinstance(annotations, list):
                raise TypeError("'images' and 'annotations' must be lists")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BadSampleError(self.ann_file, f"cannot read the CIHP json ({exc})") from exc

        entries: dict[Any, tuple[str, Path, tuple[int, int]]] = {}
        order: list[Any] = []
        for info in images:
            try:
                key, name = info["id"], info["file_name"]
                if isinstance(key, bool) or not isinstance(key, int | str):
                    raise TypeError(f"id {key!r} is not an int or a str")
                size = (_json_size(info["height"]), _json_size(info["width"]))
            except (KeyError, TypeError, ValueError) as exc:
                self.tracker.report(
                    BadSampleError(self.ann_file, f"image entry {info!r} is malformed ({exc!r})")
                )
                continue
            problem = safe_file_name(name)  # an absolute name or ".." would leave image_dir
            if problem is not None:
                self.tracker.report(BadSampleError(self.ann_file, f"image {key!r}: {problem}"))
                continue
            if key in entries:
                self.tracker.report(BadSampleError(self.ann_file, f"image id {key!r} is repeated"))
                continue
            entries[key] = (Path(name).stem, self.image_dir / name, size)
            order.append(key)

        persons: dict[Any, list[tuple[int, Path]]] = defaultdict(list)
        broken: dict[Any, BadSampleError] = {}
        for annotation in annotations:
            if not isinstance(annotation, dict):
                self.tracker.report(
                    BadSampleError(self.ann_file, f"annotation {annotation!r} is not an object")
                )
                continue
            if annotation.get("iscrowd", 0):
                continue  # a crowd region is not a person of the parsing GT (may have no PNG)
            key, ann_id, name = (annotation.get(k) for k in ("image_id", "id", "parsing"))
            if not isinstance(key, int | str) or isinstance(key, bool) or key not in entries:
                self.tracker.report(
                    BadSampleError(
                        self.ann_file,
                        f"annotation {ann_id!r} refers to image_id {key!r}, which is not in "
                        "'images'",
                    )
                )
                continue
            # The persons of an image come in annotation-id order: an id is needed to place one.
            problem = (
                f"has no integer id (id={ann_id!r})"
                if isinstance(ann_id, bool) or not isinstance(ann_id, int)
                else (safe_file_name(name) or "").replace("file_name", "parsing", 1) or None
            )
            if problem is not None:
                broken.setdefault(
                    key,
                    BadSampleError(
                        self.ann_file, f"annotation {ann_id!r} of image {key!r}: {problem}"
                    ),
                )
                continue
            persons[key].append((ann_id, self.parsing_dir / name))

        if limit is not None:
            order = order[:limit]
        for key in order:
            image_id, image_path, size = entries[key]
            if key in broken:
                self.broken[len(self.samples)] = broken[key]
            ordered = sorted(persons.get(key, []), key=lambda item: item[0])
            self.samples.append((image_id, image_path, [path for _, path in ordered], size))

    # ------------------------------------------------------------------ items
    def stored_size(self, index: int) -> tuple[int, int] | None:
        """The json's ``(height, width)`` of item ``index`` (coco), ``None`` (official)."""
        return self.samples[index][3]

    def _read_label(self, path: Path, image_path: Path, shape: tuple[int, int]) -> np.ndarray:
        """One label PNG, its size checked against the image's on the header."""
        if not path.exists():
            raise BadSampleError(path, f"label file of image {image_path.name} is missing")
        # One-channel index PNGs only: an RGB(A) file is a colour rendering, not labels.
        return read_label_png(
            path, shape, self.max_image_pixels, f"image {image_path.name}", "label file", None
        )

    def load_sample(self, index: int) -> dict[str, Any]:
        """Read and validate one raw sample (no transforms).

        Raises:
            BadSampleError: corrupt, missing or non-regular image or label file, a file over
                ``max_image_pixels``, an RGB label file, a label size different from the image
                (or the image from the json), a class id above ``num_classes - 1``, a bad
                annotation of the image (coco).
        """
        if index in self.broken:
            raise self.broken[index]
        image_id, image_path, label_paths, json_size = self.samples[index]
        if not image_path.exists():
            raise BadSampleError(image_path, f"image of {image_id!r} is missing")
        image = read_image(image_path, self.max_image_pixels)  # refuses a FIFO, a bomb ...
        shape = image.shape[:2]
        if json_size is not None and json_size != shape:
            raise BadSampleError(
                image_path,
                f"image size {shape[1]}x{shape[0]} (WxH) differs from "
                f"{json_size[1]}x{json_size[0]} in {self.ann_file.name}",
            )
        if self.layout == "official":
            category_path, human_path = label_paths
            category = self._read_label(category_path, image_path, shape)
            check_class_ids(category, category_path, self.num_classes)
            human = self._read_label(human_path, image_path, shape)
            parsing = person_maps(category, human)
            names = [f"human id {k}" for k in np.unique(human) if k > 0]
        else:
            maps = []
            for path in label_paths:
                label = self._read_label(path, image_path, shape)
                check_class_ids(label, path, self.num_classes)
                maps.append(label)
            parsing = np.stack(maps) if maps else np.zeros((0, *shape), np.uint8)
            names = [p.name for p in label_paths]
        parsing, _ = drop_empty_persons(parsing, image_id, names, log)
        return {"image": image, "parsing": parsing, "image_id": image_id}
