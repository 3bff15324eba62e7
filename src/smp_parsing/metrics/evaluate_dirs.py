"""Score a folder of predicted persons against an MHP v2 ground-truth root.

Usage::

    python -m smp_parsing.metrics.evaluate_dirs --gt-root LV-MHP-v2 --split val \\
        --pred-dir outputs/pred_val [--num-classes 59] [--out metrics.json]

Prediction folder format (written by :func:`write_prediction_dir`, the ``predict`` entry point
uses it; any tool can produce it)::

    <pred-dir>/<image_id>_<NN>_<kk>.png   one PNG per predicted person of image <image_id>;
                                          NN = number of predicted persons of that image
                                          (zero-padded to 2 digits, like the MHP annotations),
                                          kk = 1..NN; the class id of each pixel in the R channel
                                          (RGB; single-channel L / P PNGs are read as is); the
                                          same size as the image
    <pred-dir>/scores.json                {"<image_id>_<NN>_<kk>.png": score, ...}
                                          one finite number per PNG, nothing else
                                          (written at most 32 characters long)

``<image_id>`` is a plain file name (no folder part). ``scores.json`` is replaced atomically
(temp file + rename) at every write, so a killed writer leaves either the old or the new table,
never a torn one: at worst the PNGs of the image being written have no score yet, which the reader
reports by name and which writing that image again repairs.

An image of the split without any PNG has no predictions (it still counts for its GT persons and
for mIoU). GT comes from ``<gt-root>/list/<split>.txt`` and ``<gt-root>/<split>/parsing_annos``
through :class:`smp_parsing.data.mhp.MHPv2Dataset`. The command prints a table and writes the
metrics as JSON (``--out``, default ``<pred-dir>/metrics.json``).

CIHP (20 classes, same prediction folder format, ``<image_id>`` = the CIHP id)::

    python -m smp_parsing.metrics.evaluate_dirs --dataset cihp --gt-root CIHP --split val \
        --pred-dir outputs/pred_val [--layout coco]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.progress import track

from smp_parsing.data.cihp import CIHPDataset
from smp_parsing.data.errors import BadSampleError
from smp_parsing.data.image_files import open_image, read_label_png
from smp_parsing.data.mhp import MHPv2Dataset
from smp_parsing.metadata import get_dataset_meta
from smp_parsing.metrics.functional import DEFAULT_THRESHOLDS
from smp_parsing.metrics.parsing_metrics import ParsingMetrics
from smp_parsing.utils.metrics_table import format_metrics_table
from smp_parsing.utils.run_files import metrics_summary, write_json_atomic, write_text_atomic

SCORES_FILE = "scores.json"
PERSON_NAME = re.compile(r"^(?P<image_id>.+)_(?P<num_persons>\d+)_(?P<person_index>\d+)\.png$")
# repr() of a float64 is at most 24 characters; anything much longer in scores.json is not a
# score another tool wrote by mistake but input meant to make the parser work (a 10^6-digit number).
MAX_NUMBER_CHARS = 32


class PredictionDirError(ValueError):
    """A prediction folder that does not follow the format of this module."""


def person_file_name(image_id: str, num_persons: int, person_index: int) -> str:
    """``<image_id>_<NN>_<kk>.png`` with ``kk`` counted from 1, as the MHP annotations."""
    return f"{image_id}_{num_persons:02d}_{person_index:02d}.png"


def check_image_id(image_id: str) -> str:
    """Refuse an image id that is not a plain file name.

    The id becomes part of file names in the prediction folder: ``../x`` or ``/tmp/x`` would
    write outside it, and an id the reader cannot parse back from ``<id>_<NN>_<kk>.png`` (a
    newline in it) would make the folder unreadable.

    Raises:
        ValueError: naming the id.
    """
    name = person_file_name(image_id, 1, 1) if isinstance(image_id, str) else ""
    if (
        not isinstance(image_id, str)
        or image_id in ("", ".", "..")
        or any(c in image_id for c in ("/", "\\", "\0", os.sep))
        or _image_of(name) != image_id
    ):
        raise ValueError(
            f"image id {image_id!r} is not a plain file name (no folder part, no '/', '\\', "
            "NUL or newline)"
        )
    return image_id


@contextmanager
def _locked(pred_dir: Path):
    """Exclusive lock of a prediction folder (several predict processes may write into it)."""
    with open(pred_dir / f".{SCORES_FILE}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_prediction_dir(
    pred_dir: str | Path,
    image_id: str,
    parsing: torch.Tensor | np.ndarray,
    scores: torch.Tensor | np.ndarray | Sequence[float],
) -> list[Path]:
    """Write one image's predicted persons in the format of this module.

    Replaces earlier files of the same image id and adds the scores to ``scores.json``, under a
    file lock so that several processes can write into one folder. ``scores.json`` is replaced
    atomically (temp file + rename): a process killed at any point leaves the old or the new
    table, never a torn file.

    Args:
        pred_dir: The prediction folder (created if missing).
        image_id: Image id (the MHP id, file name without extension).
        parsing: ``P x H x W`` class ids (< 256) at the original image size; P may be 0.
        scores: ``(P,)`` finite scores.

    Returns:
        The PNG paths written, in person order.

    Raises:
        ValueError: for an image id that is not a plain file name, a wrong shape, a score count
            different from P, a non-finite score or class ids outside 0..255.
    """
    check_image_id(image_id)
    pred_dir = Path(pred_dir)
    maps = (
        parsing.detach().cpu().numpy() if isinstance(parsing, torch.Tensor) else np.asarray(parsing)
    )
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().numpy()
    values = [float(s) for s in np.asarray(scores, dtype=np.float64).reshape(-1)]
    if maps.ndim != 3:
        raise ValueError(f"image {image_id}: parsing must be P x H x W, got shape {maps.shape}")
    if len(values) != maps.shape[0]:
        raise ValueError(f"image {image_id}: {maps.shape[0]} persons but {len(values)} scores")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"image {image_id}: scores must be finite, got {values}")
    if maps.size and (maps.min() < 0 or maps.max() > 255):
        raise ValueError(f"image {image_id}: class ids must be in 0..255")

    pred_dir.mkdir(parents=True, exist_ok=True)
    names = [person_file_name(image_id, len(values), k + 1) for k in range(len(values))]
    with _locked(pred_dir):
        earlier = _person_files(pred_dir, image_id)
        for stale in earlier:
            stale.unlink(missing_ok=True)
        _folder_index(pred_dir)[image_id] = list(names)
        paths = []
        for name, person in zip(names, maps):
            rgb = np.zeros((*person.shape, 3), np.uint8)
            rgb[..., 0] = person  # the class id lives in the R channel, as in MHP
            Image.fromarray(rgb).save(pred_dir / name)
            paths.append(pred_dir / name)
        score_path = pred_dir / SCORES_FILE
        if earlier or names or not score_path.exists():
            _update_scores(score_path, [p.name for p in earlier], dict(zip(names, values)))
    return paths


def _image_of(name: str) -> str | None:
    match = PERSON_NAME.match(name)
    return match["image_id"] if match else None


# Person PNGs per image id of each folder this process writes into: one directory listing at the
# first write, then kept up to date, so that finding an image's earlier files costs O(1) per call
# (a listing per call would make writing N images O(N^2)). Processes writing into one folder write
# different images, so each one's view of the files it replaces stays right.
_FOLDER_INDEX: dict[Path, dict[str, list[str]]] = {}


def _folder_index(pred_dir: Path) -> dict[str, list[str]]:
    key = pred_dir.resolve()
    if key not in _FOLDER_INDEX:
        index: dict[str, list[str]] = defaultdict(list)
        with os.scandir(pred_dir) as entries:
            for entry in entries:
                image_id = _image_of(entry.name)
                if image_id is not None:
                    index[image_id].append(entry.name)
        _FOLDER_INDEX[key] = index
    return _FOLDER_INDEX[key]


def _person_files(pred_dir: Path, image_id: str) -> list[Path]:
    """PNGs of ``image_id`` already in the folder (exact id match, ``1`` does not match ``11``)."""
    return [pred_dir / name for name in _folder_index(pred_dir).get(image_id, [])]


@dataclass
class _ScoreFile:
    """What this process knows of a ``scores.json`` it writes.

    Attributes:
        signature: ``(inode, size, mtime)`` of the file when last read or written: another
            process's write (an atomic replace) changes it, and the file is read again.
        table: PNG name -> score.
        body: The entry lines as on disk (joined by ``",\\n"``), or ``None`` to rebuild.
    """

    signature: tuple[int, int, int]
    table: dict[str, float]
    body: str | None


# scores.json is replaced atomically at every write. Keeping its text in memory makes a new image
# cost one copy and one write of the file (~1 ms for 15k entries) instead of a parse and a
# serialisation of the whole table (~25 ms): writing N images stays close to linear in practice.
_SCORE_FILES: dict[Path, _ScoreFile] = {}


def _signature(stat: os.stat_result) -> tuple[int, int, int]:
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _entry_lines(entries: dict[str, float]) -> str:
    # json.dumps of a finite float is its repr: the exact value, read back bit for bit.
    return ",\n".join(f"{json.dumps(name)}: {json.dumps(value)}" for name, value in entries.items())


def _update_scores(path: Path, remove: list[str], add: dict[str, float]) -> None:
    """Drop the entries ``remove`` and add ``add``, replacing ``path`` atomically.

    Must be called under the folder lock (:func:`_locked`).
    """
    key = path.resolve()
    state = _SCORE_FILES.get(key)
    if not path.exists():
        state = _ScoreFile((0, 0, 0), {}, "")
    elif state is None or state.signature != _signature(os.stat(path)):
        signature, table = _read_scores_signed(path)
        state = _ScoreFile(signature, table, None)
    table = state.table
    if any(name in table for name in remove) or any(name in table for name in add):
        state.body = None  # entries change in the middle: rebuild the lines (a rerun only)
    for name in remove:
        table.pop(name, None)
    table.update(add)
    if state.body is None:
        state.body = _entry_lines(table)
    elif add:
        lines = _entry_lines(add)
        state.body = f"{state.body},\n{lines}" if state.body else lines
    try:
        write_text_atomic(path, f"{{\n{state.body}\n}}\n" if state.body else "{}\n")
    except BaseException:
        _SCORE_FILES.pop(key, None)  # the file kept its old table: read it again next time
        raise
    state.signature = _signature(os.stat(path))
    _SCORE_FILES[key] = state


def _parse_number(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"number of {len(text)} characters (at most {MAX_NUMBER_CHARS})")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of the float64 range")
    return value


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")


def _read_scores(path: Path) -> dict[str, float]:
    """Read and validate ``scores.json``: a flat object of PNG name -> finite number.

    Raises:
        PredictionDirError: see :func:`_read_scores_signed`.
    """
    return _read_scores_signed(path)[1]


def _read_scores_signed(path: Path) -> tuple[tuple[int, int, int], dict[str, float]]:
    """:func:`_read_scores` and the signature (inode, size, mtime) of the file it read.

    Raises:
        PredictionDirError: naming the file and the problem: not JSON, not an object,
            ``NaN``/``Infinity``, a number out of the float64 range or over 32 characters,
            a value that is not a number.
    """
    try:
        with open(path, "rb") as fh:
            # The signature of the very file read (a writer replaces, never edits in place).
            signature = _signature(os.fstat(fh.fileno()))
            text = fh.read().decode("utf-8")
        table = json.loads(
            text,
            parse_int=_parse_number,
            parse_float=_parse_number,
            parse_constant=_refuse_constant,
        )
    except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError, as ours are
        raise PredictionDirError(f"{path}: cannot read scores ({exc})") from exc
    if not isinstance(table, dict):
        raise PredictionDirError(f"{path}: must be a JSON object of PNG name -> score")
    for name, value in table.items():
        if not isinstance(value, float):  # numbers are floats by now; true/false/null/str not
            raise PredictionDirError(
                f"{path}: score of {name!r} must be a finite number, got {value!r}"
            )
    return signature, table


def read_prediction_dir(pred_dir: str | Path) -> dict[str, list[tuple[Path, float]]]:
    """Index a prediction folder: image id -> [(PNG path, score)] in person order.

    Raises:
        PredictionDirError: missing folder or ``scores.json``, a malformed PNG name, a PNG without
            score or a score without PNG, person indices that are not ``1..NN``.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise PredictionDirError(f"prediction folder {pred_dir} does not exist")
    pngs = sorted(p for p in pred_dir.iterdir() if p.suffix.lower() == ".png")
    score_path = pred_dir / SCORES_FILE
    if not score_path.is_file():
        if pngs:
            raise PredictionDirError(f"{score_path} is missing ({len(pngs)} PNGs need scores)")
        return {}
    scores = _read_scores(score_path)
    grouped: dict[str, list[tuple[int, int, Path]]] = defaultdict(list)
    for path in pngs:
        match = PERSON_NAME.match(path.name)
        if match is None:
            raise PredictionDirError(f"{path}: name does not follow <image_id>_<NN>_<kk>.png")
        if path.name not in scores:
            raise PredictionDirError(
                f"{path}: no score for it in {score_path} (a writer interrupted while writing "
                f"image {match['image_id']}? writing that image again repairs the folder)"
            )
        grouped[match["image_id"]].append(
            (int(match["person_index"]), int(match["num_persons"]), path)
        )
    orphans = sorted(set(scores) - {p.name for p in pngs})
    if orphans:
        raise PredictionDirError(
            f"{score_path}: {len(orphans)} scores without a PNG, e.g. {orphans[:3]}"
        )
    index: dict[str, list[tuple[Path, float]]] = {}
    for image_id, persons in grouped.items():
        persons.sort()
        count = len(persons)
        if [k for k, _, _ in persons] != list(range(1, count + 1)) or any(
            n != count for _, n, _ in persons
        ):
            raise PredictionDirError(
                f"{pred_dir}: persons of image {image_id} must be <id>_{count:02d}_01.png .. "
                f"<id>_{count:02d}_{count:02d}.png, found {[p.name for _, _, p in persons]}"
            )
        index[image_id] = [(path, scores[path.name]) for _, _, path in persons]
    return index


def _load_predictions(
    persons: list[tuple[Path, float]], height: int, width: int, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one image's PNGs: ``P x H x W`` uint8 maps and ``(P,)`` float64 scores."""
    maps = []
    for path, _ in persons:
        try:
            # The size from the header, before any decoding (and only regular files opened).
            with open_image(path, what="prediction") as header:
                size = header.size
            if size != (width, height):
                raise PredictionDirError(
                    f"{path}: size {size[0]}x{size[1]} (WxH) differs from the image "
                    f"{width}x{height}"
                )
            label = read_label_png(path, (height, width))
        except BadSampleError as exc:  # not a regular file, not a PNG, truncated ...
            raise PredictionDirError(str(exc)) from exc
        top = int(label.max(initial=0))
        if top >= num_classes:
            raise PredictionDirError(
                f"{path}: class id {top} outside 0..{num_classes - 1} (R channel)"
            )
        maps.append(label)
    parsing = np.stack(maps) if maps else np.zeros((0, height, width), np.uint8)
    scores = torch.tensor([s for _, s in persons], dtype=torch.float64)
    return torch.from_numpy(parsing), scores


def evaluate_dirs(
    gt_root: str | Path,
    split: str,
    pred_dir: str | Path,
    num_classes: int | None = None,
    score_threshold_miou: float = 0.05,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    limit: int | None = None,
    progress: bool = False,
    dataset_name: str = "mhp",
    layout: str = "official",
) -> dict[str, float]:
    """Metrics of a prediction folder against an MHP v2 or a CIHP split.

    Args:
        gt_root: The ``LV-MHP-v2`` folder, or the CIHP root (``Training/`` + ``Validation/``, or
            ``annotations/`` in the coco layout; see :class:`~smp_parsing.data.cihp.CIHPDataset`).
        split: List name (``val``, ``train``, ...).
        pred_dir: Prediction folder in the format of this module.
        num_classes: C, background included; ``None``: the data set's (59 MHP v2, 20 CIHP).
        score_threshold_miou: Persons scored below it are not painted for mIoU.
        thresholds: IoU thresholds (must contain 0.5).
        limit: Only the first ``limit`` images of the list.
        progress: Show a progress bar on stderr.
        dataset_name: ``mhp`` (MHP v2 or the synthetic set) or ``cihp``.
        layout: CIHP only: ``official`` or ``coco``.

    Returns:
        The :class:`~smp_parsing.metrics.ParsingMetrics` dict.

    Raises:
        PredictionDirError: malformed prediction folder, predictions for images not in the
            split, size or class id problems (the message names the file).
        smp_parsing.data.errors.BadSampleError / DataRootError: GT problems.
    """
    predictions = read_prediction_dir(pred_dir)
    if num_classes is None:
        num_classes = get_dataset_meta(dataset_name).num_classes
    if dataset_name == "cihp":
        dataset: MHPv2Dataset | CIHPDataset = CIHPDataset(
            gt_root, split, layout, limit=limit, num_classes=num_classes, on_bad_sample="error"
        )
    else:
        dataset = MHPv2Dataset(
            gt_root, split, load_pose=False, limit=limit, num_classes=num_classes,
            on_bad_sample="error",
        )  # fmt: skip
    unknown = sorted(set(predictions) - set(dataset.image_ids))
    if unknown and limit is None:
        raise PredictionDirError(
            f"{pred_dir}: predictions for {len(unknown)} images that are not in split {split!r}, "
            f"e.g. {unknown[:3]}"
        )
    metric = ParsingMetrics(num_classes, score_threshold_miou, thresholds)
    ids = list(enumerate(dataset.image_ids))
    if progress:
        ids = track(ids, description="scoring", console=Console(stderr=True), transient=True)
    for index, image_id in ids:
        sample = dataset.load_sample(index)
        height, width = sample["image"].shape[:2]
        parsing, scores = _load_predictions(
            predictions.get(image_id, []), height, width, num_classes
        )
        metric.update(
            [{"parsing": parsing, "scores": scores}],
            [{"parsing": torch.from_numpy(sample["parsing"]), "image_id": image_id}],
        )
    return metric.compute()


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(
        prog="python -m smp_parsing.metrics.evaluate_dirs",
        description="Score MHP-layout prediction PNGs + scores.json against an MHP v2 or a CIHP "
        "GT root.",
    )
    parser.add_argument("--dataset", choices=("mhp", "cihp"), default="mhp", help="GT data set")
    parser.add_argument(
        "--layout", choices=("official", "coco"), default="official", help="CIHP layout"
    )
    parser.add_argument(
        "--gt-root", type=Path, required=True, help="the LV-MHP-v2 folder, or the CIHP root"
    )
    parser.add_argument("--split", default="val", help="list name in <gt-root>/list (default val)")
    parser.add_argument("--pred-dir", type=Path, required=True, help="prediction folder")
    parser.add_argument(
        "--num-classes", type=int, default=None, help="default: the data set's (59 / 20)"
    )
    parser.add_argument("--score-threshold-miou", type=float, default=0.05)
    parser.add_argument("--limit", type=int, default=None, help="first N images of the list")
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON output (default <pred-dir>/metrics.json)"
    )
    args = parser.parse_args(argv)
    metrics = evaluate_dirs(
        args.gt_root,
        args.split,
        args.pred_dir,
        num_classes=args.num_classes,
        score_threshold_miou=args.score_threshold_miou,
        limit=args.limit,
        progress=True,
        dataset_name=args.dataset,
        layout=args.layout,
    )
    title = f"{args.pred_dir} vs {args.gt_root} [{args.split}] (%)"
    print(format_metrics_table(metrics, title, percent=True))
    out = args.out if args.out is not None else args.pred_dir / "metrics.json"
    report = metrics_summary(
        "evaluate_dirs",
        {args.split: metrics},
        gt_root=str(args.gt_root),
        pred_dir=str(args.pred_dir),
        dataset=args.dataset,
        num_classes=args.num_classes or get_dataset_meta(args.dataset).num_classes,
        score_threshold_miou=args.score_threshold_miou,
    )
    write_json_atomic(out, report)  # a killed run never leaves a torn metrics.json
    Console().print(f"metrics written to {out}")
    return metrics


if __name__ == "__main__":
    main()
