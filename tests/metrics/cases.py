"""Inputs shared by the metric tests: the spec's worked example and random parsing data sets."""

from __future__ import annotations

import numpy as np
import torch

from .reference import ReferenceImage

WORKED_NUM_CLASSES = 59
WORKED_AP = [2 / 3] * 4 + [1 / 3] * 4 + [1 / 12]
WORKED_PCP = [2 / 3] * 4 + [1 / 3, 1 / 6, 1 / 6, 1 / 6, 1 / 3]


def worked_example() -> tuple[list[dict], list[dict]]:
    """The three images of ``shared/spec/metrics.md`` (10 x 10, C = 59) as (preds, target)."""
    a0 = np.zeros((10, 10), np.uint8)
    a0[0:5, 0:5] = 1
    a0[5:10, 0:5] = 2
    a1 = np.zeros((10, 10), np.uint8)
    a1[:, 5:10] = 3
    b0 = np.zeros((10, 10), np.uint8)
    b0[:, 0:4] = 5
    a_p0 = a0.copy()
    a_p0[8:10, 0:5] = 0
    a_p1 = np.zeros((10, 10), np.uint8)
    a_p1[0:5, 5:10] = 3
    a_p1[5:10, 5:10] = 4
    c_p0 = np.zeros((10, 10), np.uint8)
    c_p0[2:6, 2:6] = 7
    a_p2 = a0.copy()

    def stack(*maps):
        return (
            torch.from_numpy(np.stack(maps)) if maps else torch.zeros(0, 10, 10, dtype=torch.uint8)
        )

    preds = [
        {"parsing": stack(a_p0, a_p1, a_p2), "scores": torch.tensor([0.9, 0.8, 0.3])},
        {"parsing": stack(), "scores": torch.zeros(0)},
        {"parsing": stack(c_p0), "scores": torch.tensor([0.5])},
    ]
    target = [{"parsing": stack(a0, a1)}, {"parsing": stack(b0)}, {"parsing": stack()}]
    return preds, target


def _random_person(rng: np.random.Generator, height: int, width: int, num_classes: int):
    """A person map: a few random rectangles of random part classes."""
    person = np.zeros((height, width), np.uint8)
    for _ in range(rng.integers(1, 4)):
        y0, x0 = rng.integers(0, height), rng.integers(0, width)
        y1, x1 = rng.integers(y0 + 1, height + 1), rng.integers(x0 + 1, width + 1)
        person[y0:y1, x0:x1] = rng.integers(1, num_classes)
    return person


def random_images(
    rng: np.random.Generator, num_images: int, num_classes: int, max_size: int = 24
) -> list[ReferenceImage]:
    """Random images with overlapping persons, near-copies of GT, empty maps and tied scores."""
    images = []
    for _ in range(num_images):
        height, width = rng.integers(3, max_size + 1, size=2)  # areas not multiple of 8 too
        num_gt = rng.integers(0, 4)
        gt = [_random_person(rng, height, width, num_classes) for _ in range(num_gt)]
        if num_gt and rng.random() < 0.2:
            gt[rng.integers(num_gt)][:] = 0  # all-zero file: not a GT person
        preds = []
        for _ in range(rng.integers(0, 6)):
            kind = rng.random()
            if gt and kind < 0.5:
                person = gt[rng.integers(num_gt)].copy()  # a noisy copy of a GT person
                noise = rng.random(person.shape) < rng.uniform(0, 0.4)
                person[noise] = rng.integers(0, num_classes, size=int(noise.sum()))
            elif kind < 0.9:
                person = _random_person(rng, height, width, num_classes)
            else:
                person = np.zeros((height, width), np.uint8)
            preds.append(person)
        if rng.random() < 0.5:
            scores = rng.choice([0.0, 0.03, 0.3, 0.6, 0.9], size=len(preds))  # ties
        else:
            scores = rng.random(len(preds))
        images.append(
            ReferenceImage(
                pred=np.stack(preds) if preds else np.zeros((0, height, width), np.uint8),
                scores=np.asarray(scores, np.float64),
                gt=np.stack(gt) if gt else np.zeros((0, height, width), np.uint8),
            )
        )
    return images


def to_metric_inputs(images: list[ReferenceImage]) -> tuple[list[dict], list[dict]]:
    """Reference images -> (preds, target) lists of the metric's update."""
    preds = [
        {"parsing": torch.from_numpy(im.pred), "scores": torch.from_numpy(im.scores)}
        for im in images
    ]
    target = [{"parsing": torch.from_numpy(im.gt)} for im in images]
    return preds, target
