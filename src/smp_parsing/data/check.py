"""Scan a data set and print what it holds and what is wrong with it.

::

    python -m smp_parsing.data.check --dataset mhp --root data/LV-MHP-v2 --split val
    python -m smp_parsing.data.check --dataset densepose \\
        --ann-file data/densepose_coco/annotations/densepose_coco_2014_minival.json \\
        --image-root data/densepose_coco/val2014
    python -m smp_parsing.data.check --dataset cihp --root data/CIHP --split val [--layout coco]
    python -m smp_parsing.data.check --import my_project.toy --dataset toy --root data/toy \
        --arg some_reader_argument=3

Any registered data set is checkable (:mod:`smp_parsing.data.registry`, as the data module
builds it): its registered reader is built with the flags it takes (``--root``, ``--ann-file``,
``--image-root``, ``--parsing-dir``, ``--layout``, any other argument as ``--arg KEY=VALUE``),
its root checked first by the registry (missing paths and the layout the reader expects). A data
set registered outside ``smp_parsing`` is loaded with ``--import MODULE``.

Every sample is read and validated exactly as training reads it (same readers, same checks). The
summary gives images, persons, part instances per class and every problem with its file; the exit
code is 1 when there is any problem, 0 otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from smp_parsing.data.base import ParsingDataset
from smp_parsing.data.errors import BadSampleError, DataRootError
from smp_parsing.data.registry import DatasetSpec, get_dataset_spec


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


def scan(dataset: ParsingDataset, num_classes: int, limit: int | None = None) -> ScanSummary:
    """Read every sample of ``dataset`` and collect statistics and problems.

    Args:
        dataset: A reader built with ``on_bad_sample="skip"`` (its construction problems are in
            ``dataset.tracker.problems``).
        num_classes: Classes including background.
        limit: Read only the first ``limit`` samples (for a reader that takes no ``limit``).
    """
    count = len(dataset) if limit is None else min(len(dataset), limit)  # type: ignore[arg-type]
    summary = ScanSummary(
        num_images=count,
        part_instances=np.zeros(num_classes, np.int64),
        part_pixels=np.zeros(num_classes, np.int64),
    )
    summary.problems.extend(dataset.tracker.problems)
    summary.num_images += sum("no image for it" in p.problem for p in dataset.tracker.problems)
    for index in range(count):
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


# Reader arguments the common flags fill, in order of preference: the first one the registered
# reader takes (DensePose names its image folder image_root, CIHP's coco layout image_dir).
READER_FLAGS: dict[str, tuple[str, ...]] = {
    "root": ("root",),
    "ann_file": ("ann_file",),
    "image_root": ("image_root", "image_dir"),
    "parsing_dir": ("parsing_dir",),
    "layout": ("layout",),
}
# Set by the scan itself, never from the command line.
SCAN_KEYWORDS = ("on_bad_sample", "limit", "transforms")


def reader_keywords(
    spec: DatasetSpec, split: str, flags: dict[str, Any], extra: Sequence[str]
) -> dict[str, Any]:
    """The keyword arguments of the registered reader of ``spec`` for a scan of ``split``.

    Args:
        spec: The registered data set (its ``reader`` is called with the result).
        split: Passed as ``split`` when the reader takes one.
        flags: ``{flag: value}`` of the common flags (``root``, ``ann_file`` ...; see
            :data:`READER_FLAGS`), ``None`` when not given.
        extra: ``KEY=VALUE`` reader arguments (values read as YAML: ``3``, ``true``, ``null``).

    Returns:
        The reader's keywords, ``num_classes`` from the registered label space when it takes
        one, ``on_bad_sample="skip"`` (every problem collected, none raised).

    Raises:
        ValueError: a flag or argument the reader does not take, a malformed ``KEY=VALUE``, or
            a required reader argument missing (named with the flags that give it).
    """
    reader = spec.reader
    if not isinstance(reader, type):
        raise ValueError(f"data set {spec.name!r} has no registered reader to scan with")
    params = inspect.signature(reader).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())

    def takes(name: str) -> bool:
        return name in params or takes_any

    keywords: dict[str, Any] = {}
    for flag, value in flags.items():
        if value is None:
            continue
        name = next((n for n in READER_FLAGS[flag] if takes(n)), None)
        if name is None:
            raise ValueError(
                f"--{flag.replace('_', '-')} is not an argument of {reader.__name__} "
                f"({spec.name}); it takes {sorted(set(params) - set(SCAN_KEYWORDS))}"
            )
        keywords[name] = value
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--arg {item!r}: expected KEY=VALUE")
        if not takes(key) or key in SCAN_KEYWORDS:
            raise ValueError(f"--arg {key}: not an argument of {reader.__name__} ({spec.name})")
        keywords[key] = yaml.safe_load(value)
    if takes("split"):
        keywords.setdefault("split", split)
    if takes("num_classes"):
        keywords.setdefault("num_classes", spec.meta.num_classes)
    missing = [
        name
        for name, p in params.items()
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and name not in keywords
        and name not in SCAN_KEYWORDS
    ]
    if missing:
        how = {n: f"--{f.replace('_', '-')}" for f, names in READER_FLAGS.items() for n in names}
        given_as = ", ".join(f"{n} ({how.get(n, f'--arg {n}=...')})" for n in missing)
        raise ValueError(f"--dataset {spec.name} needs {given_as}")
    return keywords


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (1 when problems were found)."""
    parser = argparse.ArgumentParser(
        description="Scan a multi-human parsing data set for problems."
    )
    parser.add_argument(
        "--dataset", required=True, help="a registered data set: mhp, synthetic, densepose, cihp..."
    )
    parser.add_argument(
        "--import",
        dest="modules",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (registers a data set defined outside smp_parsing); repeatable",
    )
    parser.add_argument(
        "--root",
        help="MHP v2 / synthetic root (the folder holding list/); CIHP root (the folder holding "
        "Training/ + Validation/, or annotations/ with --layout coco)",
    )
    parser.add_argument(
        "--split", default="val", help="MHP list name: train, val, test_all ...; CIHP: train, val"
    )
    parser.add_argument("--layout", help="CIHP layout: official (the reader's default) or coco")
    parser.add_argument("--ann-file", help="DensePose-COCO json; CIHP coco: overrides the json")
    parser.add_argument(
        "--image-root", help="DensePose-COCO image folder; CIHP coco: overrides <split>_img"
    )
    parser.add_argument("--parsing-dir", help="CIHP coco: overrides <split>_parsing")
    parser.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other argument of the reader (value read as YAML); repeatable",
    )
    parser.add_argument("--limit", type=int, default=None, help="scan only the first K images")
    args = parser.parse_args(argv)
    console = Console()
    for module in args.modules:
        importlib.import_module(module)
    try:
        spec = get_dataset_spec(args.dataset)
        flags = {flag: getattr(args, flag) for flag in READER_FLAGS}
        keywords = reader_keywords(spec, args.split, flags, args.arg)
    except (KeyError, ValueError) as error:
        parser.error(str(error).strip("'\""))
    takes_limit = "limit" in inspect.signature(spec.reader).parameters
    shown = ", ".join(f"{k}={v}" for k, v in keywords.items() if k != "num_classes")
    title = f"{spec.name} ({spec.reader.__name__}) {shown}"
    try:
        # The registry's root check first (as the data module's prepare_data): what is missing
        # and the layout expected, before the reader trips over the first missing file.
        spec.check_root(args.split, **keywords)
        extra = {"limit": args.limit} if takes_limit else {}
        dataset = spec.reader(**keywords, on_bad_sample="skip", **extra)
    except (DataRootError, BadSampleError, ValueError) as error:
        console.print("[bold red]error:[/]", end=" ")  # the message unstyled: paths stay intact
        console.print(str(error), soft_wrap=True, markup=False, highlight=False)
        return 1
    summary = scan(dataset, spec.meta.num_classes, None if takes_limit else args.limit)
    print_summary(summary, spec.meta.classes, title, console)
    return 1 if summary.problems else 0


if __name__ == "__main__":
    sys.exit(main())
