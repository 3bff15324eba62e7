"""Scan a data set and print what it holds and what is wrong with it.

::

    python -m smp_parsing.data.check --dataset mhp --root data/LV-MHP-v2 --split val
    python -m smp_parsing.data.check --dataset densepose \\
        --ann-file data/densepose_coco/annotations/densepose_coco_2014_minival.json \\
        --image-root data/densepose_coco/val2014
    python -m smp_parsing.data.check --dataset cihp --root data/CIHP --split val [--layout coco]

Every sample is read and validated exactly as training reads it (same readers, same checks). The
summary gives images, persons, part instances per class and every problem with its file; the exit
code is 1 when there is any problem, 0 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from rich.console import Console
from rich.table import Table

from smp_parsing.data.cihp import LAYOUTS, CIHPDataset
from smp_parsing.data.densepose import DensePoseParsingDataset
from smp_parsing.data.errors import BadSampleError, DataRootError
from smp_parsing.data.mhp import MHPv2Dataset
from smp_parsing.metadata import get_dataset_meta


@dataclass
class ScanSummary:
    """What a scan found.

    Attributes:
        num_images: Images listed (readable or not).
        num_readable: Images read without a problem.
        persons_per_image: Persons of each readable image.
        part_instances: Part instances (person x class present) per class id, background excluded.
        part_pixels: Pixels per class id over all persons.
        problems: Every problem found, each naming its file.
    """

    num_images: int = 0
    num_readable: int = 0
    persons_per_image: list[int] = field(default_factory=list)
    part_instances: np.ndarray | None = None
    part_pixels: np.ndarray | None = None
    problems: list[BadSampleError] = field(default_factory=list)


def scan(
    dataset: MHPv2Dataset | DensePoseParsingDataset | CIHPDataset, num_classes: int
) -> ScanSummary:
    """Read every sample of ``dataset`` and collect statistics and problems.

    Args:
        dataset: A reader built with ``on_bad_sample="skip"`` (its construction problems are in
            ``dataset.tracker.problems``).
        num_classes: Classes including background.
    """
    summary = ScanSummary(
        num_images=len(dataset),
        part_instances=np.zeros(num_classes, np.int64),
        part_pixels=np.zeros(num_classes, np.int64),
    )
    summary.problems.extend(dataset.tracker.problems)
    summary.num_images += sum("no image for it" in p.problem for p in dataset.tracker.problems)
    for index in range(len(dataset)):
        try:
            sample = dataset.load_sample(index)
        except BadSampleError as error:
            summary.problems.append(error)
            continue
        parsing = sample["parsing"]
        summary.num_readable += 1
        summary.persons_per_image.append(len(parsing))
        if len(parsing):
            # Per person, which classes are present (one part instance each) and how many pixels.
            # One bincount for all persons: person k's ids are shifted by k * num_classes.
            shifted = parsing.reshape(len(parsing), -1).astype(np.int64)
            shifted += np.arange(len(parsing))[:, None] * num_classes
            counts = np.bincount(shifted.ravel(), minlength=len(parsing) * num_classes)
            counts = counts.reshape(len(parsing), num_classes)
            summary.part_instances += (counts > 0).sum(axis=0)
            summary.part_pixels += counts.sum(axis=0)
    return summary


def print_summary(
    summary: ScanSummary, class_names: Sequence[str], title: str, console: Console
) -> None:
    """Render a scan summary as rich tables."""
    persons = np.asarray(summary.persons_per_image or [0])
    overview = Table(title=title, show_header=False)
    overview.add_row("images listed", str(summary.num_images))
    overview.add_row("images read", str(summary.num_readable))
    overview.add_row("persons", str(int(persons.sum())))
    overview.add_row(
        "persons / image (min / mean / max)",
        f"{persons.min()} / {persons.mean():.2f} / {persons.max()}",
    )
    overview.add_row(
        "images without persons", str(int((persons == 0).sum()) if summary.persons_per_image else 0)
    )
    overview.add_row("problems", str(len(summary.problems)))
    console.print(overview)

    parts = Table(title="part instances per class")
    for column in ("id", "class", "instances", "pixels"):
        parts.add_column(column, justify="right" if column != "class" else "left")
    assert summary.part_instances is not None and summary.part_pixels is not None
    for class_id in range(1, len(class_names)):
        parts.add_row(
            str(class_id),
            class_names[class_id],
            str(int(summary.part_instances[class_id])),
            str(int(summary.part_pixels[class_id])),
        )
    console.print(parts)

    if summary.problems:
        # One line per problem, never wrapped or cut, so that file names can be copied and grepped.
        console.print(f"[bold red]{len(summary.problems)} problem(s):[/]")
        for error in summary.problems:
            console.print(
                f"  {error.path}: {error.problem}", soft_wrap=True, markup=False, highlight=False
            )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (1 when problems were found)."""
    parser = argparse.ArgumentParser(
        description="Scan a multi-human parsing data set for problems."
    )
    parser.add_argument(
        "--dataset", choices=("mhp", "synthetic", "densepose", "cihp"), required=True
    )
    parser.add_argument(
        "--root",
        help="MHP v2 / synthetic root (the folder holding list/); CIHP root (the folder holding "
        "Training/ + Validation/, or annotations/ with --layout coco)",
    )
    parser.add_argument(
        "--split", default="val", help="MHP list name: train, val, test_all ...; CIHP: train, val"
    )
    parser.add_argument(
        "--layout", choices=LAYOUTS, default="official", help="CIHP layout (default official)"
    )
    parser.add_argument("--ann-file", help="DensePose-COCO json; CIHP coco: overrides the json")
    parser.add_argument(
        "--image-root", help="DensePose-COCO image folder; CIHP coco: overrides <split>_img"
    )
    parser.add_argument("--parsing-dir", help="CIHP coco: overrides <split>_parsing")
    parser.add_argument("--limit", type=int, default=None, help="scan only the first K images")
    args = parser.parse_args(argv)
    console = Console()
    meta = get_dataset_meta(args.dataset)
    try:
        if args.dataset == "densepose":
            if not (args.ann_file and args.image_root):
                parser.error("--dataset densepose needs --ann-file and --image-root")
            dataset = DensePoseParsingDataset(
                args.ann_file, args.image_root, on_bad_sample="skip", limit=args.limit
            )
            title = f"DensePose-COCO {args.ann_file}"
        elif args.dataset == "cihp":
            if not args.root:
                parser.error("--dataset cihp needs --root")
            dataset = CIHPDataset(
                args.root,
                split=args.split,
                layout=args.layout,
                on_bad_sample="skip",
                limit=args.limit,
                num_classes=meta.num_classes,
                ann_file=args.ann_file,
                image_dir=args.image_root,
                parsing_dir=args.parsing_dir,
            )
            title = f"CIHP ({args.layout} layout) {args.root} [{args.split}]"
        else:
            if not args.root:
                parser.error(f"--dataset {args.dataset} needs --root")
            dataset = MHPv2Dataset(
                args.root,
                split=args.split,
                on_bad_sample="skip",
                limit=args.limit,
                num_classes=meta.num_classes,
            )
            title = f"{args.dataset} {args.root} [{args.split}]"
    except (DataRootError, BadSampleError, ValueError) as error:
        console.print(f"[bold red]error:[/] {error}")
        return 1
    summary = scan(dataset, meta.num_classes)
    print_summary(summary, meta.classes, title, console)
    return 1 if summary.problems else 0


if __name__ == "__main__":
    sys.exit(main())
