"""The label space of a data set (class names, left/right flip pairs) and its mirror table.

Each data set defines its label space next to its reader and registers it in
:mod:`smp_parsing.data.registry`; :func:`get_dataset_meta` reads it from there for the
transforms (flip class swap), the visualiser and the checkpoint metadata. Ids follow the on-disk
annotations: 0 is background, parts are 1..C-1.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


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


# Names this module defined before the label spaces moved next to their readers (issue 15), and
# where they live now; resolved on first use so that importing this module imports no reader.
_MOVED: dict[str, tuple[str, str]] = {
    "MHP_V2_CLASSES": ("smp_parsing.data.mhp", "MHP_V2_CLASSES"),
    "MHP_V2_FLIP_PAIRS": ("smp_parsing.data.mhp", "MHP_V2_FLIP_PAIRS"),
    "DENSEPOSE_CLASSES": ("smp_parsing.data.densepose", "DENSEPOSE_CLASSES"),
    "DENSEPOSE_FLIP_PAIRS": ("smp_parsing.data.densepose", "DENSEPOSE_FLIP_PAIRS"),
    "CIHP_CLASSES": ("smp_parsing.data.cihp", "CIHP_CLASSES"),
    "CIHP_FLIP_PAIRS": ("smp_parsing.data.cihp", "CIHP_FLIP_PAIRS"),
}
_MOVED_META = {"MHP_V2": "mhp", "DENSEPOSE": "densepose", "CIHP": "cihp"}


def __getattr__(name: str) -> object:
    if name in _MOVED:
        module, attribute = _MOVED[name]
        return getattr(importlib.import_module(module), attribute)
    if name in _MOVED_META:
        return get_dataset_meta(_MOVED_META[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_dataset_meta(name: str) -> DatasetMeta:
    """Return the label space of a data set by config name (from :mod:`smp_parsing.data.registry`).

    Raises:
        KeyError: with the known names, when ``name`` is unknown.
    """
    from smp_parsing.data.registry import get_dataset_spec  # the registry imports this module

    return get_dataset_spec(name).meta
