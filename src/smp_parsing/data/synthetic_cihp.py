"""Synthetic CIHP: the synthetic figures written in either CIHP layout.

The figures are drawn by :class:`smp_parsing.data.synthetic.SyntheticMHPGenerator` (same knobs,
same images for the same ``(seed, split, index)``); their MHP v2 classes are mapped to CIHP's 20
(:data:`MHP_TO_CIHP`) and the files are written in the layout :class:`smp_parsing.data.cihp.
CIHPDataset` reads:

* ``official``: ``Training/`` and ``Validation/`` with ``Images/<id>.jpg``, ``Category_ids/`` and
  ``Human_ids/`` (8-bit grey PNGs), the colour rendering ``Categories/`` and ``<split>_id.txt``;
* ``coco``: ``annotations/CIHP_{train,val}.json``, ``{train,val}_img/`` and per-person
  ``{train,val}_parsing/<id>_<kk>.png``.

CLI::

    python -m smp_parsing.data.synthetic_cihp --root DIR --layout coco --num-train 100 --num-val 20
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from smp_parsing.data.cihp import CIHP_CLASSES, LAYOUTS, OFFICIAL_SPLIT_DIRS
from smp_parsing.data.mhp import MHP_V2_CLASSES
from smp_parsing.data.synthetic import (
    PNG_FLAGS,
    VAL_ID_OFFSET,
    SyntheticMHPGenerator,
    add_tree_arguments,
)

# MHP v2 class -> CIHP class (LIP label space). CIHP's arms and legs include the bare hands and
# feet; bags, belts' buckles and other carried objects are not labelled in CIHP (background).
_MHP_TO_CIHP_NAMES: dict[str, str] = {
    "cap/hat": "Hat", "helmet": "Hat", "headwear": "Hat",
    "hair": "Hair", "face": "Face", "glove": "Glove",
    "sunglasses": "Sunglasses", "eyewear": "Sunglasses", "scarf": "Scarf",
    "jacket/windbreaker/hoodie": "UpperClothes", "t-shirt": "UpperClothes",
    "polo-shirt": "UpperClothes", "sweater": "UpperClothes", "singlet": "UpperClothes",
    "bikini/bra": "UpperClothes", "other-upper-body-clothes": "UpperClothes",
    "coat": "Coat", "dress": "Dress", "robe": "Dress", "jumpsuit": "Dress",
    "other-full-body-clothes": "Dress",
    "pants": "Pants", "shorts/swim-shorts": "Pants", "belt": "Pants",
    "other-lower-body-clothes": "Pants", "skirt": "Skirt",
    "torso-skin": "Torso-skin", "socks": "Socks", "stockings": "Socks",
    "left-arm": "Left-arm", "left-hand": "Left-arm",
    "right-arm": "Right-arm", "right-hand": "Right-arm",
    "left-leg": "Left-leg", "left-foot": "Left-leg",
    "right-leg": "Right-leg", "right-foot": "Right-leg",
    "left-shoe": "Left-shoe", "left-boot": "Left-shoe", "left-highheel": "Left-shoe",
    "left-sandal": "Left-shoe",
    "right-shoe": "Right-shoe", "right-boot": "Right-shoe", "right-highheel": "Right-shoe",
    "right-sandal": "Right-shoe",
}  # fmt: skip

MHP_TO_CIHP = np.zeros(256, np.uint8)
for _mhp, _cihp in _MHP_TO_CIHP_NAMES.items():
    MHP_TO_CIHP[MHP_V2_CLASSES.index(_mhp)] = CIHP_CLASSES.index(_cihp)


class SyntheticCIHPGenerator(SyntheticMHPGenerator):
    """The synthetic figures with CIHP classes, written in the official or the coco layout.

    Args:
        layout: ``official`` or ``coco``.
        **kwargs: The drawing knobs of :class:`SyntheticMHPGenerator` (``write_pose`` is ignored:
            CIHP has no pose annotations).
    """

    def __init__(self, layout: str = "official", **kwargs: Any) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"CIHP layout must be one of {LAYOUTS}, got {layout!r}")
        super().__init__(**kwargs)
        self.layout = layout

    def render_cihp(self, seed: int, split: str, index: int) -> dict[str, np.ndarray]:
        """Draw one image with CIHP labels.

        Returns:
            ``image`` ``H x W x 3`` uint8 RGB and ``parsing`` ``N x H x W`` uint8 CIHP classes (the
            persons left with a CIHP part, back-to-front order).
        """
        sample = self.render(seed, split, index)
        parsing = MHP_TO_CIHP[sample["parsing"]]
        return {"image": sample["image"], "parsing": parsing[parsing.any(axis=(1, 2))]}

    @staticmethod
    def image_id(split: str, index: int) -> str:
        """CIHP-style 7-digit id; val ids are distinct from train ids."""
        return f"{index + 1 + (VAL_ID_OFFSET if split == 'val' else 0):07d}"

    def _write_image(self, path: Path, image: np.ndarray) -> None:
        cv2.imwrite(
            str(path),
            cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality],
        )

    def write_sample(self, root: Path, seed: int, split: str, index: int) -> Any:  # type: ignore[override]
        """Render image ``index`` of ``split`` and write its label files.

        Returns:
            official: the image id; coco: ``(image entry, annotation entries)`` for the json
            (annotation ids are filled in by :meth:`generate`).
        """
        sample = self.render_cihp(seed, split, index)
        image_id = self.image_id(split, index)
        parsing = sample["parsing"]
        if self.layout == "official":
            folder = root / OFFICIAL_SPLIT_DIRS[split]
            self._write_image(folder / "Images" / f"{image_id}.jpg", sample["image"])
            # Persons are disjoint: the image-level maps are their sum / their person ids.
            category = parsing.max(axis=0, initial=0)
            ids = np.arange(1, len(parsing) + 1, dtype=np.uint8)[:, None, None]
            human = (ids * (parsing > 0)).max(axis=0, initial=0).astype(np.uint8)
            cv2.imwrite(str(folder / "Category_ids" / f"{image_id}.png"), category, PNG_FLAGS)
            cv2.imwrite(str(folder / "Human_ids" / f"{image_id}.png"), human, PNG_FLAGS)
            # The colour rendering the release ships beside the ids (never read as labels).
            colours = (category[..., None].astype(np.int32) * [37, 91, 151] % 256).astype(np.uint8)
            cv2.imwrite(str(folder / "Categories" / f"{image_id}.png"), colours, PNG_FLAGS)
            return image_id
        name = f"{image_id}.jpg"
        self._write_image(root / f"{split}_img" / name, sample["image"])
        annotations = []
        for k, label in enumerate(parsing, start=1):
            person_name = f"{image_id}_{k:02d}.png"
            cv2.imwrite(str(root / f"{split}_parsing" / person_name), label, PNG_FLAGS)
            ys, xs = np.nonzero(label)
            box = [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]
            annotations.append(
                {"image_id": int(image_id), "category_id": 1, "parsing": person_name,
                 "bbox": box, "area": int(len(xs)), "iscrowd": 0}
            )  # fmt: skip
        height, width = sample["image"].shape[:2]
        entry = {"id": int(image_id), "file_name": name, "height": height, "width": width}
        return entry, annotations

    def is_complete(self, root: str | Path) -> bool:
        """Whether ``root`` holds a finished tree: both splits' id list (official) or json (coco),
        which :meth:`_write_tree` writes after the split's files."""
        root = Path(root)
        if self.layout == "official":
            return all(
                (root / folder / f"{split}_id.txt").is_file()
                for split, folder in OFFICIAL_SPLIT_DIRS.items()
            )
        return all((root / "annotations" / f"CIHP_{s}.json").is_file() for s in ("train", "val"))

    def _write_tree(
        self, root: Path, num_train: int, num_val: int, seed: int, workers: int
    ) -> None:
        """Write both splits in ``self.layout`` under ``root``.

        :meth:`generate` (inherited) calls it on a hidden sibling folder and renames the
        finished tree into place, so an interrupted generation leaves no half-written tree. The
        id list (official) or the json (coco) of a split is written after its files.
        """
        for split, count in (("train", num_train), ("val", num_val)):
            if self.layout == "official":
                folder = root / OFFICIAL_SPLIT_DIRS[split]
                subs = [folder / s for s in ("Images", "Category_ids", "Human_ids", "Categories")]
            else:
                subs = [root / f"{split}_img", root / f"{split}_parsing", root / "annotations"]
            for sub in subs:
                sub.mkdir(parents=True, exist_ok=True)
            results = self.write_split(root, seed, split, count, workers)
            if self.layout == "official":
                (folder / f"{split}_id.txt").write_text("".join(f"{i}\n" for i in results))
                continue
            annotations = [a for _, persons in results for a in persons]
            for number, annotation in enumerate(annotations, start=1):
                annotation["id"] = number
            content = {
                "images": [entry for entry, _ in results],
                "annotations": annotations,
                "categories": [{"id": 1, "name": "person", "supercategory": "person"}],
            }
            (root / "annotations" / f"CIHP_{split}.json").write_text(json.dumps(content))


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: write a synthetic CIHP tree in one of the two layouts."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_tree_arguments(parser, SyntheticMHPGenerator)
    parser.add_argument("--layout", choices=LAYOUTS, default="official")
    args = parser.parse_args(argv)
    generator = SyntheticCIHPGenerator(
        layout=args.layout, size=args.size, max_persons=args.max_persons, write_pose=False
    )
    generator.generate(args.root, args.num_train, args.num_val, args.seed, args.workers)
    print(f"wrote {args.num_train} + {args.num_val} images ({args.layout} layout) to {args.root}")


if __name__ == "__main__":
    main()
