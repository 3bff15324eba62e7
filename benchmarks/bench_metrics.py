"""Speed of ``ParsingMetrics`` against the brute-force NumPy reference (one bincount per pair).

Default workload (issue 4): 500 images of 512 x 680, 3 GT and 10 predicted persons each, C = 59.
Persons are blocky figures (head, torso, arms, legs, shoes); predictions are shifted / relabelled
copies of the GT persons plus spurious partial persons, with random scores. To bound memory, a pool
of ``--pool`` distinct images is generated and cycled through.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_metrics.py [--images 500] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.metrics.reference

from tests.metrics.reference import ReferenceImage, reference_metrics

from smp_parsing.metrics import ParsingMetrics

# (row from, row to, col from, col to) of each part in a unit box, and its class id (MHP v2).
FIGURE_PARTS = (
    ((0.00, 0.15, 0.35, 0.65), 4),  # hair
    ((0.05, 0.18, 0.38, 0.62), 3),  # face
    ((0.18, 0.55, 0.25, 0.75), 12),  # t-shirt
    ((0.20, 0.55, 0.05, 0.25), 5),  # left-arm
    ((0.20, 0.55, 0.75, 0.95), 6),  # right-arm
    ((0.55, 0.92, 0.28, 0.72), 17),  # pants
    ((0.92, 1.00, 0.28, 0.48), 24),  # left-shoe
    ((0.92, 1.00, 0.52, 0.72), 25),  # right-shoe
)


def draw_person(
    rng: np.random.Generator, height: int, width: int, box: tuple[int, int, int, int]
) -> np.ndarray:
    """An ``H x W`` uint8 person map drawn in ``box = (y0, x0, h, w)``."""
    person = np.zeros((height, width), np.uint8)
    y0, x0, h, w = box
    for (r0, r1, c0, c1), cls in FIGURE_PARTS:
        if rng.random() < 0.1:
            continue  # occluded part
        ys, ye = y0 + int(r0 * h), y0 + int(r1 * h)
        xs, xe = x0 + int(c0 * w), x0 + int(c1 * w)
        person[max(ys, 0) : min(ye, height), max(xs, 0) : min(xe, width)] = cls
    return person


def make_image(
    rng: np.random.Generator, height: int, width: int, num_gt: int, num_pred: int
) -> ReferenceImage:
    """One synthetic image: GT persons side by side, predictions around them."""
    boxes = []
    for _ in range(num_gt):
        h, w = int(rng.integers(height // 3, height * 9 // 10)), int(rng.integers(60, 200))
        boxes.append((int(rng.integers(0, height - h)), int(rng.integers(0, width - w)), h, w))
    gt = np.stack([draw_person(rng, height, width, b) for b in boxes])
    preds = []
    for k in range(num_pred):
        y0, x0, h, w = boxes[k % num_gt]
        if k < num_gt:  # a good detection: jittered box
            jitter = rng.integers(-8, 9, size=4)
            box = (y0 + jitter[0], x0 + jitter[1], h + jitter[2], w + jitter[3])
        else:  # duplicates and spurious partial persons
            scale = rng.uniform(0.4, 1.0)
            box = (y0 + int(rng.integers(-40, 41)), x0 + int(rng.integers(-40, 41)),
                   int(h * scale), int(w * scale))  # fmt: skip
        preds.append(draw_person(rng, height, width, box))
    scores = np.sort(rng.random(num_pred))[::-1].copy()
    return ReferenceImage(pred=np.stack(preds), scores=scores, gt=gt)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--pool", type=int, default=50, help="distinct images generated")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=680)
    parser.add_argument("--gt", type=int, default=3)
    parser.add_argument("--preds", type=int, default=10)
    parser.add_argument("--num-classes", type=int, default=59)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--chunk", type=int, default=50, help="images per alternating metric/reference chunk"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    pool = [
        make_image(rng, args.height, args.width, args.gt, args.preds)
        for _ in range(min(args.pool, args.images))
    ]
    images = [pool[i % len(pool)] for i in range(args.images)]
    preds = [
        {"parsing": torch.from_numpy(im.pred), "scores": torch.from_numpy(im.scores)}
        for im in images
    ]
    target = [{"parsing": torch.from_numpy(im.gt)} for im in images]

    warm_up = ParsingMetrics(args.num_classes)
    warm_up.update(preds[:1], target[:1])  # allocator, lazy initialisation
    # Metric and reference alternate chunk by chunk, so that load changes on a shared machine hit
    # both alike; every chunk is also a correctness check of the metric against the reference.
    ours_seconds = reference_seconds = max_diff = 0.0
    for begin in range(0, args.images, args.chunk):
        end = min(begin + args.chunk, args.images)
        start = time.perf_counter()
        metric = ParsingMetrics(args.num_classes)
        for p, t in zip(preds[begin:end], target[begin:end]):
            metric.update([p], [t])
        ours = metric.compute()
        ours_seconds += time.perf_counter() - start

        start = time.perf_counter()
        expected = reference_metrics(images[begin:end], args.num_classes)
        reference_seconds += time.perf_counter() - start
        max_diff = max(max_diff, *(abs(ours[k] - expected[k]) for k in expected))

    figures = {
        "images": args.images,
        "size": [args.height, args.width],
        "gt_per_image": args.gt,
        "preds_per_image": args.preds,
        "torch_threads": torch.get_num_threads(),
        "metric_ms_per_image": 1e3 * ours_seconds / args.images,
        "reference_ms_per_image": 1e3 * reference_seconds / args.images,
        "speedup": reference_seconds / ours_seconds,
        "max_abs_difference": max_diff,
        "chunk": args.chunk,
        "last_chunk": {k: ours[k] for k in ("APp50", "APpvol", "PCP50", "mIoU")},
    }
    print(
        f"{args.images} images {args.height}x{args.width}, {args.gt} GT + {args.preds} preds each "
        f"({torch.get_num_threads()} torch threads)\n"
        f"  ParsingMetrics : {figures['metric_ms_per_image']:8.2f} ms/image\n"
        f"  NumPy reference: {figures['reference_ms_per_image']:8.2f} ms/image\n"
        f"  speed-up       : {figures['speedup']:8.1f}x   (max |difference| {max_diff:.1e} over "
        f"{-(-args.images // args.chunk)} chunks of {args.chunk} images)\n"
        f"  last chunk: APp50 {ours['APp50']:.4f}  APpvol {ours['APpvol']:.4f}  "
        f"PCP50 {ours['PCP50']:.4f}  mIoU {ours['mIoU']:.4f}"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
