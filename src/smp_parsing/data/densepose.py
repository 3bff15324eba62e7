"""Reader for DensePose-COCO used as 15-class multi-human parsing.

Each person annotation may carry ``dp_masks``: 14 COCO RLEs (or empty entries) on a 256 x 256 frame
that spans the annotation ``bbox``. The decoding follows ``shared/spec/data_formats.md`` section 2
to the letter: paint parts 1..14 in order (later parts overwrite), take the integer box clipped to
the image, resize the 256 x 256 map into it with nearest neighbour and paste it into an empty map.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from smp_parsing.data.base import ParsingDataset
from smp_parsing.data.errors import BadSampleError, BadSampleTracker, DataRootError
from smp_parsing.data.image_files import DEFAULT_MAX_IMAGE_PIXELS, read_image
from smp_parsing.data.registry import register_dataset

log = logging.getLogger(__name__)

DENSEPOSE_CLASSES: tuple[str, ...] = (
    "background",
    "torso", "right-hand", "left-hand", "left-foot", "right-foot",
    "upper-leg-right", "upper-leg-left", "lower-leg-right", "lower-leg-left",
    "upper-arm-left", "upper-arm-right", "lower-arm-left", "lower-arm-right",
    "head",
)  # fmt: skip

DENSEPOSE_FLIP_PAIRS: tuple[tuple[int, int], ...] = (
    (2, 3), (4, 5), (6, 7), (8, 9), (10, 11), (12, 13),
)  # fmt: skip

DP_FRAME = 256  # side of the frame the dp_masks RLEs are drawn on
NUM_DP_PARTS = 14

DENSEPOSE_LAYOUT_HELP = """expected DensePose-COCO files:
  ann_file:   densepose_coco_2014_train.json / densepose_coco_2014_minival.json (COCO format,
              person annotations with `dp_masks`)
  image_root: the COCO 2014 images the json's `file_name`s point to (train2014/ or val2014/)
Without the real data set, use the synthetic one: `data=synthetic`."""


def decode_dp_masks(dp_masks: list[Any], source: Path) -> np.ndarray:
    """Turn the 14 part RLEs of one person into one label map on the 256 x 256 frame.

    Args:
        dp_masks: 14 entries, each a COCO RLE dict or falsy when the part is absent.
        source: The annotation file, named in errors.

    Returns:
        ``256 x 256`` uint8 map with ids 0..14; where parts overlap the higher id wins, which is the
        "later parts overwrite" rule of the reference painter.

    Raises:
        BadSampleError: when there are not 14 entries or an RLE cannot be decoded.
    """
    if len(dp_masks) != NUM_DP_PARTS:
        raise BadSampleError(source, f"dp_masks has {len(dp_masks)} entries, expected 14")
    present = [i for i, rle in enumerate(dp_masks) if rle]
    label = np.zeros((DP_FRAME, DP_FRAME), np.uint8)
    if not present:
        return label
    try:
        masks = mask_utils.decode([dp_masks[i] for i in present]) > 0  # 256 x 256 x K
    except Exception as exc:  # pycocotools raises bare TypeError/ValueError on bad RLEs
        raise BadSampleError(source, f"cannot decode a dp_masks RLE ({exc})") from exc
    if masks.shape[:2] != (DP_FRAME, DP_FRAME):
        raise BadSampleError(source, f"dp_masks RLE size {masks.shape[:2]}, expected (256, 256)")
    ids = np.asarray(present, np.uint8) + 1
    # Highest painted id per pixel: ids are increasing, so take the last True along the part axis.
    last = masks.shape[2] - 1 - np.argmax(masks[:, :, ::-1], axis=2)
    painted = masks.any(axis=2)
    label[painted] = ids[last[painted]]
    return label


def bbox_problem(bbox: Any) -> str | None:
    """Why a COCO ``bbox`` cannot be used, or ``None`` when it is 4 finite numbers.

    ``json`` reads ``Infinity`` and ``NaN``, and ``int(inf)`` raises ``OverflowError``: a box is
    checked before any arithmetic on it (``x + w`` too, which can overflow to infinity).
    """
    if not isinstance(bbox, list | tuple) or len(bbox) != 4:
        return f"bbox {bbox!r} is not [x, y, w, h]"
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in bbox):
        return f"bbox {bbox!r} holds a value that is not a number"
    x, y, w, h = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h, x + w, y + h)):
        return f"bbox {bbox!r} is not finite"
    return None


def safe_file_name(file_name: Any) -> str | None:
    """Why an image ``file_name`` of the json must not be opened, or ``None`` when it may.

    The name is joined to the image root: an absolute name would replace the root and ``..``
    would climb out of it, so a json from elsewhere could make the reader open any file.
    """
    if not isinstance(file_name, str) or not file_name or "\0" in file_name:
        return f"file_name {file_name!r} is not a file name"
    path = PurePosixPath(file_name.replace("\\", "/"))
    if path.is_absolute() or file_name.startswith(("/", "\\")) or ".." in path.parts:
        return f"file_name {file_name!r} is absolute or climbs out of the image root: refused"
    return None


def paste_person_map(label: np.ndarray, bbox: list[float], height: int, width: int) -> np.ndarray:
    """Resize a 256 x 256 person map into its integer box and paste it into an image-sized map.

    Args:
        label: ``256 x 256`` uint8 part ids.
        bbox: COCO ``[x, y, w, h]``.
        height: Image height H.
        width: Image width W.

    Returns:
        ``H x W`` uint8 map (all zero when the clipped box is empty).
    """
    x, y, w, h = bbox
    x1, y1 = max(int(x), 0), max(int(y), 0)
    x2, y2 = min(int(x + w), width), min(int(y + h), height)
    person = np.zeros((height, width), np.uint8)
    if x2 <= x1 or y2 <= y1:
        return person
    person[y1:y2, x1:x2] = cv2.resize(label, (x2 - x1, y2 - y1), interpolation=cv2.INTER_NEAREST)
    return person


@register_dataset("densepose", DENSEPOSE_CLASSES, DENSEPOSE_FLIP_PAIRS)
class DensePoseParsingDataset(ParsingDataset):
    """DensePose-COCO persons as 15-class parsing maps, one item per image.

    Args:
        ann_file: DensePose-COCO json.
        image_root: Folder of the COCO images named by the json's ``file_name``.
        transforms: Callable applied to the raw item (see :mod:`smp_parsing.data.transforms`).
        on_bad_sample: ``"error"`` raises; ``"skip"`` warns, counts and returns ``None``.
        filter_empty: Leave out images without any DensePose person (training does, as SOLO/mmdet).
        limit: Use only the first ``limit`` images; ``None`` for all.
        max_image_pixels: Largest ``width * height`` of an image, checked on the file header
            before decoding.

    Raises:
        DataRootError: when the json or the image folder is missing.

    Items (without transforms): ``image`` ``H x W x 3`` uint8 RGB, ``parsing`` ``N x H x W`` uint8
    (one map per person with ``dp_masks``, json order; crowd and boxes under 1 px left out),
    ``image_id`` str (the COCO image id).
    """

    dataset_name = "densepose"
    layout_help = DENSEPOSE_LAYOUT_HELP

    def __init__(
        self,
        ann_file: str | Path,
        image_root: str | Path,
        transforms: Any = None,
        on_bad_sample: str = "error",
        filter_empty: bool = False,
        limit: int | None = None,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        self.ann_file = Path(ann_file)
        self.image_root = Path(image_root)
        self.transforms = transforms
        self.max_image_pixels = max_image_pixels
        self.tracker = BadSampleTracker(on_bad_sample, log)
        if not self.ann_file.is_file():
            raise DataRootError(
                f"DensePose annotation file {self.ann_file} does not exist.\n{DENSEPOSE_LAYOUT_HELP}"
            )
        if not self.image_root.is_dir():
            raise DataRootError(
                f"DensePose image folder {self.image_root} does not exist.\n{DENSEPOSE_LAYOUT_HELP}"
            )
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
                self.coco = COCO(str(self.ann_file))
        except Exception as exc:
            raise BadSampleError(self.ann_file, f"cannot load COCO json ({exc})") from exc
        image_ids = sorted(self.coco.getImgIds())
        if filter_empty:
            image_ids = [i for i in image_ids if self._person_annotations(i)]
        if limit is not None:
            image_ids = image_ids[:limit]
        self.coco_ids: list[int] = image_ids

    @classmethod
    def required_paths(
        cls, split: str, ann_file: str | Path = "", image_root: str | Path = "", **_: Any
    ) -> list[Path]:
        """The json and the image folder (see :meth:`ParsingDataset.required_paths`)."""
        return [Path(ann_file), Path(image_root)]

    def _person_annotations(self, coco_id: int) -> list[dict[str, Any]]:
        """GT persons of an image: with ``dp_masks``, not crowd, box at least 1 x 1 px.

        A box that is not 4 finite numbers is kept: :meth:`load_sample` reports it.
        """
        annotations = self.coco.loadAnns(self.coco.getAnnIds(imgIds=coco_id))
        return [
            a
            for a in annotations
            if a.get("dp_masks")
            and not a.get("iscrowd", 0)
            and (
                bbox_problem(a.get("bbox")) is not None or (a["bbox"][2] >= 1 and a["bbox"][3] >= 1)
            )
        ]

    def __len__(self) -> int:
        return len(self.coco_ids)

    @property
    def image_ids(self) -> list[str]:
        """Image ids (COCO ids as str) in item order."""
        return [str(i) for i in self.coco_ids]

    def read_image_sizes(self) -> np.ndarray:
        """``(N, 2)`` ``(height, width)`` from the json's image records (no file opened)."""
        infos = self.coco.loadImgs(self.coco_ids)
        return np.array(
            [(_size_value(info.get("height")), _size_value(info.get("width"))) for info in infos],
            np.int64,
        ).reshape(-1, 2)

    def load_sample(self, index: int) -> dict[str, Any]:
        """Read and decode one raw sample.

        Raises:
            BadSampleError: unreadable image (not a regular file, over ``max_image_pixels``),
                a ``file_name`` outside the image root, image size different from the json,
                a bbox that is not 4 finite numbers, bad ``dp_masks``.
        """
        coco_id = self.coco_ids[index]
        info = self.coco.loadImgs(coco_id)[0]
        problem = safe_file_name(info.get("file_name"))
        if problem is not None:
            raise BadSampleError(self.ann_file, f"image of COCO id {coco_id}: {problem}")
        image_path = self.image_root / info["file_name"]
        if not image_path.exists():
            raise BadSampleError(
                image_path, f"image of COCO id {coco_id} (in {self.ann_file.name}) is missing"
            )
        image = read_image(image_path, self.max_image_pixels)  # refuses a FIFO, a folder ...
        height, width = image.shape[:2]
        if (info.get("height", height), info.get("width", width)) != (height, width):
            raise BadSampleError(
                image_path,
                f"image size {width}x{height} (WxH) differs from {info['width']}x{info['height']} "
                f"in {self.ann_file.name}",
            )
        maps = []
        for annotation in self._person_annotations(coco_id):
            problem = bbox_problem(annotation.get("bbox"))
            if problem is not None:
                raise BadSampleError(
                    self.ann_file,
                    f"annotation {annotation.get('id')} of COCO id {coco_id}: {problem}",
                )
            label = decode_dp_masks(annotation["dp_masks"], self.ann_file)
            person = paste_person_map(label, annotation["bbox"], height, width)
            if person.any():
                maps.append(person)
            else:
                log.debug(
                    "%s: annotation %s has an empty parsing map, dropped",
                    coco_id,
                    annotation.get("id"),
                )
        parsing = np.stack(maps) if maps else np.zeros((0, height, width), np.uint8)
        return {"image": image, "parsing": parsing, "image_id": str(coco_id)}


def _size_value(value: Any) -> int:
    """An image record's ``height``/``width`` as an int; 0 (unknown) when it is not a sane one."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0
    return int(value) if 0 < value < 2**31 else 0
