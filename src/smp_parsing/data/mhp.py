"""Reader for MHP v2.0 (LV-MHP-v2), exactly as laid out on disk.

Layout (see ``shared/spec/data_formats.md`` section 1)::

    <root>/list/<split>.txt                       one image id per line
    <root>/<split>/images/<id>.jpg
    <root>/<split>/parsing_annos/<id>_<NN>_<kk>.png   one PNG per person, kk counted from 1
    <root>/<split>/pose_annos/<id>.mat            optional, person_<kk-1>: 20 x 3 (x, y, flag)

The part id of a person PNG lives in its **R channel** (reading the PNG as grayscale would give
0.299 R + 0.587 G + 0.114 B, i.e. wrong ids). Persons whose map is all zero are not ground truth
(the official evaluation skips them) and are dropped here.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from smp_parsing.data.base import (
    ListedDataset,
    check_class_ids,
    drop_empty_persons,
    index_images,
)
from smp_parsing.data.errors import BadSampleError, BadSampleTracker, DataRootError
from smp_parsing.data.image_files import (
    DEFAULT_MAX_IMAGE_PIXELS,
    open_regular,
    read_image,
    read_label_png,
)
from smp_parsing.data.registry import register_dataset

log = logging.getLogger(__name__)

MHP_V2_CLASSES: tuple[str, ...] = (
    "background",
    "cap/hat", "helmet", "face", "hair",
    "left-arm", "right-arm", "left-hand", "right-hand",
    "protector", "bikini/bra", "jacket/windbreaker/hoodie", "t-shirt",
    "polo-shirt", "sweater", "singlet", "torso-skin",
    "pants", "shorts/swim-shorts", "skirt", "stockings",
    "socks", "left-boot", "right-boot", "left-shoe",
    "right-shoe", "left-highheel", "right-highheel", "left-sandal",
    "right-sandal", "left-leg", "right-leg", "left-foot",
    "right-foot", "coat", "dress", "robe",
    "jumpsuit", "other-full-body-clothes", "headwear", "backpack",
    "ball", "bats", "belt", "bottle",
    "carrybag", "cases", "sunglasses", "eyewear",
    "glove", "scarf", "umbrella", "wallet/purse",
    "watch", "wristband", "tie", "other-accessary",
    "other-upper-body-clothes", "other-lower-body-clothes",
)  # fmt: skip

MHP_V2_FLIP_PAIRS: tuple[tuple[int, int], ...] = (
    (5, 6), (7, 8), (22, 23), (24, 25), (26, 27), (28, 29), (30, 31), (32, 33),
)  # fmt: skip

ANNOTATION_NAME = re.compile(r"^(?P<image_id>.+)_(?P<num_persons>\d+)_(?P<person_index>\d+)\.png$")
NUM_POSE_ROWS = 20  # 16 MPII joints + face box corners + person box corners
MISSING_POINT = (-1.0, -1.0, 2.0)  # MHP marks a missing point as (-1, -1, flag=2 "outside")

MHP_LAYOUT_HELP = """expected MHP v2 layout:
  <root>/list/train.txt, val.txt, test_all.txt ...   (one image id per line)
  <root>/train/images/<id>.jpg
  <root>/train/parsing_annos/<id>_<NN>_<kk>.png       (part id in the R channel)
  <root>/train/pose_annos/<id>.mat                    (optional)
  <root>/val/...                                      (same as train)
Without the real data set, use the synthetic one: `data=synthetic` (generated on first use), or
`python -m smp_parsing.data.synthetic --root DIR --num-train 1000 --num-val 200 --size 384`."""


def split_directory(root: Path, split: str) -> Path:
    """Folder holding a split's files: ``test_*`` lists point into ``test/``."""
    return root / ("test" if split.startswith("test") else split)


def read_pose_mat(path: Path, person_indices: list[int]) -> np.ndarray:
    """Read the MHP pose file of one image.

    Args:
        path: ``pose_annos/<id>.mat``.
        person_indices: 1-based person indices (the ``kk`` of the parsing files) to read, in order.

    Returns:
        ``N x 20 x 3`` float32 (x, y, flag); a person absent from the file is all ``(-1, -1, 2)``.

    Raises:
        BadSampleError: when the file cannot be read or an entry is not a 20 x 3 array.
    """
    with os.fdopen(open_regular(path), "rb") as fh:  # a FIFO named .mat must not block
        try:
            content = scipy.io.loadmat(fh)
        except Exception as exc:  # scipy raises several unrelated types for a corrupt file
            raise BadSampleError(path, f"cannot read pose file ({exc})") from exc
    keypoints = np.tile(
        np.asarray(MISSING_POINT, np.float32), (len(person_indices), NUM_POSE_ROWS, 1)
    )
    for row, person_index in enumerate(person_indices):
        key = f"person_{person_index - 1}"
        if key not in content:
            log.debug("%s: no %s, keypoints marked missing", path, key)
            continue
        points = np.asarray(content[key], dtype=np.float32)
        if points.shape != (NUM_POSE_ROWS, 3):
            raise BadSampleError(path, f"{key} has shape {points.shape}, expected (20, 3)")
        keypoints[row] = points
    return keypoints


@register_dataset("mhp", MHP_V2_CLASSES, MHP_V2_FLIP_PAIRS)
class MHPv2Dataset(ListedDataset):
    """MHP v2.0 multi-human parsing, one item per image.

    Args:
        root: The ``LV-MHP-v2`` folder.
        split: Name of a list file in ``<root>/list`` (``train``, ``val``, ``test_all`` ...).
        transforms: Callable applied to the raw item (see :mod:`smp_parsing.data.transforms`).
        on_bad_sample: ``"error"`` raises :class:`BadSampleError` naming the file; ``"skip"`` logs a
            warning, counts the sample and returns ``None`` for it (the collate drops it).
        load_pose: Read ``pose_annos/<id>.mat`` when present into the ``keypoints`` key.
        limit: Use only the first ``limit`` ids of the list (fast validation); ``None`` for all.
        num_classes: Number of classes including background; larger ids are bad input.
        max_image_pixels: Largest ``width * height`` of an image or annotation, checked on the
            file header before decoding (larger files are bad samples: decompression bombs).

    Raises:
        DataRootError: when the root, the list file or the images folder is missing.
        BadSampleError: (``on_bad_sample="error"``) for an id of the list without an image, an
            annotation without an image, or a malformed annotation file name.

    Items (without transforms) are dicts: ``image`` ``H x W x 3`` uint8 RGB, ``parsing``
    ``N x H x W`` uint8 (one map per person, in person-index order, all-zero persons removed),
    ``image_id`` str and, when a pose file exists, ``keypoints`` ``N x 20 x 3`` float32.
    """

    dataset_name = "mhp"
    layout_help = MHP_LAYOUT_HELP

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transforms: Any = None,
        on_bad_sample: str = "error",
        load_pose: bool = True,
        limit: int | None = None,
        num_classes: int = len(MHP_V2_CLASSES),
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.transforms = transforms
        self.load_pose = load_pose
        self.num_classes = num_classes
        self.max_image_pixels = max_image_pixels
        self.tracker = BadSampleTracker(on_bad_sample, log)

        list_file = self.root / "list" / f"{split}.txt"
        split_dir = split_directory(self.root, split)
        self.image_dir = split_dir / "images"
        self.annotation_dir = split_dir / "parsing_annos"
        self.pose_dir = split_dir / "pose_annos"
        if not self.root.is_dir():
            raise DataRootError(f"MHP v2 root {self.root} does not exist.\n{MHP_LAYOUT_HELP}")
        if not list_file.is_file():
            raise DataRootError(f"MHP v2 list file {list_file} is missing.\n{MHP_LAYOUT_HELP}")
        if not self.image_dir.is_dir():
            raise DataRootError(
                f"MHP v2 image folder {self.image_dir} is missing.\n{MHP_LAYOUT_HELP}"
            )

        images = index_images(self.image_dir)
        annotations = self._index_annotations(images)
        poses = (
            {p.stem: p for p in self.pose_dir.iterdir() if p.suffix == ".mat"}
            if load_pose and self.pose_dir.is_dir()
            else {}
        )

        self.samples: list[tuple[str, Path, list[tuple[int, Path]], Path | None]] = []
        for image_id, image_path in self.listed_images(list_file, self.image_dir, images, limit):
            persons = annotations.get(image_id, [])
            self.samples.append((image_id, image_path, persons, poses.get(image_id)))

    @classmethod
    def required_paths(cls, split: str, root: str | Path = ".", **_: Any) -> list[Path]:
        """The list file and the images folder of ``split`` (see :meth:`ParsingDataset.required_paths`)."""
        return [Path(root) / "list" / f"{split}.txt", split_directory(Path(root), split) / "images"]

    def _index_annotations(self, images: dict[str, Path]) -> dict[str, list[tuple[int, Path]]]:
        """Group the person PNGs by image id, sorted by person index (``kk``).

        Reports malformed names, duplicated person indices and annotations without an image.
        """
        grouped: dict[str, list[tuple[int, Path]]] = defaultdict(list)
        if not self.annotation_dir.is_dir():
            return grouped
        for path in sorted(self.annotation_dir.iterdir()):
            if path.suffix.lower() != ".png":
                continue
            match = ANNOTATION_NAME.match(path.name)
            if match is None:
                self.tracker.report(
                    BadSampleError(path, "annotation name does not follow <id>_<NN>_<kk>.png")
                )
                continue
            image_id = match["image_id"]
            if image_id not in images:
                self.tracker.report(
                    BadSampleError(
                        path, f"annotation has no image {image_id}.jpg in {self.image_dir}"
                    )
                )
                continue
            grouped[image_id].append((int(match["person_index"]), path))
        for image_id, persons in grouped.items():
            persons.sort()
            indices = [k for k, _ in persons]
            if len(set(indices)) != len(indices):
                self.tracker.report(
                    BadSampleError(persons[0][1], f"image {image_id} has duplicated person indices")
                )
        return grouped

    def load_sample(self, index: int) -> dict[str, Any]:
        """Read and validate one raw sample (no transforms).

        Raises:
            BadSampleError: corrupt image or annotation, annotation size different from the image,
                class id above ``num_classes - 1``, malformed pose file.
        """
        image_id, image_path, persons, pose_path = self.samples[index]
        # Headers are checked before decoding: the image's pixel count, then each label's size
        # against the image (a label claiming 10000 x 10000 pixels is never decoded).
        image = read_image(image_path, self.max_image_pixels)
        height, width = image.shape[:2]
        reference = f"image {image_path.name}"
        maps = []
        for _, path in persons:
            label = read_label_png(path, (height, width), self.max_image_pixels, reference)
            check_class_ids(label, path, self.num_classes, " (R channel)")
            maps.append(label)
        parsing = np.stack(maps) if maps else np.zeros((0, height, width), np.uint8)
        parsing, keep = drop_empty_persons(
            parsing, image_id, [path.name for _, path in persons], log
        )
        sample: dict[str, Any] = {"image": image, "parsing": parsing, "image_id": image_id}
        if pose_path is not None:
            kept_indices = [persons[i][0] for i in np.flatnonzero(keep)]
            sample["keypoints"] = read_pose_mat(pose_path, kept_indices)
        return sample
