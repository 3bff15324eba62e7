"""Class names and left/right flip pairs of the supported data sets.

This is the single place where label spaces are defined: the readers, the
transforms (flip class swap), the visualiser and the configs all read from here.
Ids follow the on-disk annotations: 0 is background, parts are 1..C-1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

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

# CIHP (Crowd Instance-level Human Parsing; the LIP label space): the ids of its Category_ids PNGs.
# Left/right are the person's own sides, as in MHP v2.
CIHP_CLASSES: tuple[str, ...] = (
    "Background",
    "Hat", "Hair", "Glove", "Sunglasses", "UpperClothes",
    "Dress", "Coat", "Socks", "Pants", "Torso-skin",
    "Scarf", "Skirt", "Face", "Left-arm", "Right-arm",
    "Left-leg", "Right-leg", "Left-shoe", "Right-shoe",
)  # fmt: skip

CIHP_FLIP_PAIRS: tuple[tuple[int, int], ...] = ((14, 15), (16, 17), (18, 19))


def mirror_lut(flip_pairs: Sequence[Sequence[int]], num_classes: int = 256) -> np.ndarray:
    """Lookup table class id -> mirrored class id, shape ``(num_classes,)`` uint8.

    The default 256 entries cover every uint8 id (what ``cv2.LUT`` needs); a label space's own
    table is :meth:`DatasetMeta.flip_lut`.
    """
    lut = np.arange(num_classes, dtype=np.uint8)
    for a, b in flip_pairs:
        lut[a], lut[b] = b, a
    return lut


@dataclass(frozen=True)
class DatasetMeta:
    """Label space of one data set.

    Attributes:
        name: Short name used in configs (``mhp``, ``densepose``, ``cihp``).
        classes: Class names, index = class id, 0 = background.
        flip_pairs: Pairs of class ids swapped by a horizontal flip.
    """

    name: str
    classes: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]

    @property
    def num_classes(self) -> int:
        """Number of classes including background (59 MHP v2, 15 DensePose, 20 CIHP)."""
        return len(self.classes)

    @property
    def num_part_classes(self) -> int:
        """Number of part classes C_P (background excluded)."""
        return len(self.classes) - 1

    def flip_lut(self) -> np.ndarray:
        """Lookup table mapping a class id to its mirror id, shape ``(num_classes,)`` uint8."""
        return mirror_lut(self.flip_pairs, self.num_classes)


MHP_V2 = DatasetMeta("mhp", MHP_V2_CLASSES, MHP_V2_FLIP_PAIRS)
DENSEPOSE = DatasetMeta("densepose", DENSEPOSE_CLASSES, DENSEPOSE_FLIP_PAIRS)
CIHP = DatasetMeta("cihp", CIHP_CLASSES, CIHP_FLIP_PAIRS)

DATASETS: dict[str, DatasetMeta] = {
    "mhp": MHP_V2,
    "synthetic": MHP_V2,
    "densepose": DENSEPOSE,
    "cihp": CIHP,
}


def get_dataset_meta(name: str) -> DatasetMeta:
    """Return the label space of a data set by config name.

    Raises:
        KeyError: with the known names, when ``name`` is unknown.
    """
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown data set {name!r}; known: {sorted(DATASETS)}") from None
