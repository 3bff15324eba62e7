"""Single-stage decoding (paper section 4.1): :func:`decode_parsing` (``pipeline``) with the part
grouping rules (``grouping``: release, pointed_cell) apart from the windowed painting and
resampling machinery (``painting``)."""

from smp_parsing.models.decode.grouping import (
    GROUPINGS,
    group_parts_pointed_cell,
    group_parts_release,
    select_parts,
)
from smp_parsing.models.decode.painting import (
    crop_windows,
    mask_statistics,
    paint_persons,
    person_windows,
    to_original,
)
from smp_parsing.models.decode.pipeline import decode_parsing

__all__ = [
    "GROUPINGS",
    "crop_windows",
    "decode_parsing",
    "group_parts_pointed_cell",
    "group_parts_release",
    "mask_statistics",
    "paint_persons",
    "person_windows",
    "select_parts",
    "to_original",
]
