"""Part category / mask targets against a per-level, per-instance, per-cell loop."""

from __future__ import annotations

import math

import torch

from smp_parsing.models.targets.instances import extract_instances
from smp_parsing.models.targets.parts import build_part_targets, level_assignment

GRIDS = (12, 10, 6)
SCALE_RANGES = ((1, 24), (16, 48), (32, 256))
NUM_CLASSES = 6


def cell_of(value: float, grid: int, size: int) -> int:
    cell = math.floor(float(torch.tensor(value, dtype=torch.float32) * grid / size))
    return min(max(cell, 0), grid - 1)


def loop_part_targets(inst, grids, scale_ranges, epsilon):
    """Labels and positives of every level, one instance and one cell at a time."""
    parts = inst.parts
    height, width = inst.image_size
    labels, positives = [], set()
    for level, (grid, (lo, hi)) in enumerate(zip(grids, scale_ranges)):
        owner = {}
        for m in range(len(parts)):
            x1, y1, x2, y2 = parts.boxes[m].tolist()
            if not lo <= math.sqrt((x2 - x1) * (y2 - y1)) <= hi:
                continue
            cx, cy = parts.centers[m].tolist()
            hw, hh = 0.5 * epsilon * (x2 - x1), 0.5 * epsilon * (y2 - y1)
            gx, gy = cell_of(cx, grid, width), cell_of(cy, grid, height)
            for y in range(
                max(cell_of(cy - hh, grid, height), gy - 1),
                min(cell_of(cy + hh, grid, height), gy + 1) + 1,
            ):
                for x in range(
                    max(cell_of(cx - hw, grid, width), gx - 1),
                    min(cell_of(cx + hw, grid, width), gx + 1) + 1,
                ):
                    key = (int(parts.batch_idx[m]), y, x)
                    area = int(parts.areas[m])
                    if key not in owner or (area, m) < (int(parts.areas[owner[key]]), owner[key]):
                        owner[key] = m
        level_labels = torch.zeros(inst.batch_size, grid, grid, dtype=torch.long)
        for (b, y, x), m in owner.items():
            level_labels[b, y, x] = parts.labels[m]
            positives.add((b, level, y * grid + x, m))
        labels.append(level_labels)
    return labels, positives


def random_people(generator, num, height, width):
    maps = torch.zeros(num, height, width, dtype=torch.uint8)
    for n in range(num):
        for _ in range(3):
            y0 = int(torch.randint(0, height - 4, (1,), generator=generator))
            x0 = int(torch.randint(0, width - 4, (1,), generator=generator))
            h = int(torch.randint(2, min(40, height - y0) + 1, (1,), generator=generator))
            w = int(torch.randint(2, min(40, width - x0) + 1, (1,), generator=generator))
            maps[n, y0 : y0 + h, x0 : x0 + w] = int(
                torch.randint(1, NUM_CLASSES, (1,), generator=generator)
            )
    return maps


def test_level_assignment_overlapping_ranges():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 20, 20], [0, 0, 40, 40], [0, 0, 300, 300]]).float()
    on = level_assignment(boxes, SCALE_RANGES)
    # sqrt(w h) = 10 -> level 0; 20 -> levels 0 and 1; 40 -> 1 and 2; 300 -> none
    assert on.T.tolist() == [
        [True, False, False],
        [True, True, False],
        [False, True, True],
        [False, False, False],
    ]


def test_build_part_targets_matches_loop():
    generator = torch.Generator().manual_seed(0)
    maps = [random_people(generator, 3, 64, 96), random_people(generator, 0, 64, 96)]
    maps.append(random_people(generator, 2, 64, 96))
    inst = extract_instances(maps, NUM_CLASSES)
    targets = build_part_targets(inst, grids=GRIDS, scale_ranges=SCALE_RANGES, epsilon=0.2)
    labels, positives = loop_part_targets(inst, GRIDS, SCALE_RANGES, 0.2)

    assert len(targets.labels) == len(GRIDS)
    for got, want in zip(targets.labels, labels):
        assert torch.equal(got, want)
    got_pos = set(
        zip(
            targets.pos_batch.tolist(),
            targets.pos_level.tolist(),
            targets.pos_cell.tolist(),
            targets.pos_instance.tolist(),
        )
    )
    assert len(got_pos) == targets.pos_batch.numel() == int(targets.num_pos)
    assert got_pos == positives
    assert len(positives) > 10
    assert torch.equal(targets.mask_targets, inst.parts.masks[targets.pos_instance])
    assert targets.mask_targets.shape[1:] == (16, 24)
    # an instance can be positive on two levels
    levels_of = {}
    for _, level, _, m in positives:
        levels_of.setdefault(m, set()).add(level)
    assert any(len(v) == 2 for v in levels_of.values())


def test_part_targets_tie_break_smaller_part_wins():
    person = torch.zeros(64, 64, dtype=torch.uint8)
    person[8:56, 8:56] = 1  # big part, barycenter (32, 32)
    person[28:36, 28:36] = 2  # small part inside it, barycenter (32, 32) too
    inst = extract_instances([person[None]], 3)
    targets = build_part_targets(inst, grids=(8,), scale_ranges=((1, 64),), epsilon=0.2)
    # shared barycenter cell (4, 4): class 2 (the smaller) and its mask
    assert targets.labels[0][0, 4, 4] == 2
    owner = targets.pos_instance[targets.pos_cell == 4 * 8 + 4]
    assert inst.parts.labels[owner].tolist() == [2]


def test_part_targets_without_parts():
    inst = extract_instances([torch.zeros(0, 32, 32, dtype=torch.uint8)], NUM_CLASSES)
    targets = build_part_targets(inst, grids=GRIDS, scale_ranges=SCALE_RANGES, epsilon=0.2)
    assert all(lab.sum() == 0 for lab in targets.labels)
    assert targets.pos_batch.numel() == 0 and int(targets.num_pos) == 0
    assert targets.mask_targets.shape == (0, 8, 8)
