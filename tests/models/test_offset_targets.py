"""Offset targets against a per-person, per-cell, per-part loop."""

from __future__ import annotations

import math

import torch

from smp_parsing.models.targets.instances import extract_instances
from smp_parsing.models.targets.offsets import build_offset_targets, grid_box_size

NUM_CLASSES = 6


def cell_of(value: float, grid: int, size: int) -> int:
    cell = math.floor(float(torch.tensor(value, dtype=torch.float32) * grid / size))
    return min(max(cell, 0), grid - 1)


def loop_offsets(inst, grid, epsilon):
    """Paper eq. 1, one person, cell and part at a time."""
    persons, parts = inst.persons, inst.parts
    height, width = inst.image_size
    num_part_classes = inst.num_classes - 1
    offsets = torch.zeros(inst.batch_size, num_part_classes, 2, grid, grid)
    weights = torch.zeros(inst.batch_size, num_part_classes, grid, grid)
    owner, weight_of = {}, {}
    for n in range(len(persons)):
        x1, y1, x2, y2 = persons.boxes[n].tolist()
        w_g = cell_of(x2 - 1, grid, width) - cell_of(x1, grid, width)
        h_g = cell_of(y2 - 1, grid, height) - cell_of(y1, grid, height)
        if w_g == 0 and h_g == 0:
            continue  # zero grid size: skipped
        weight_of[n] = 1.0 / math.sqrt(w_g**2 + h_g**2)
        cx, cy = persons.centers[n].tolist()
        hw, hh = 0.5 * epsilon * (x2 - x1), 0.5 * epsilon * (y2 - y1)
        gx, gy = cell_of(cx, grid, width), cell_of(cy, grid, height)
        y_lo, y_hi = (
            max(cell_of(cy - hh, grid, height), gy - 1),
            min(cell_of(cy + hh, grid, height), gy + 1),
        )
        x_lo, x_hi = (
            max(cell_of(cx - hw, grid, width), gx - 1),
            min(cell_of(cx + hw, grid, width), gx + 1),
        )
        for y in range(y_lo, y_hi + 1):
            for x in range(x_lo, x_hi + 1):
                key = (int(persons.batch_idx[n]), y, x)
                area = int(persons.areas[n])
                if key not in owner or (area, n) < (int(persons.areas[owner[key]]), owner[key]):
                    owner[key] = n
    for (b, y, x), n in owner.items():
        for m in range(len(parts)):
            if parts.person_idx[m] != n:
                continue
            p = int(parts.labels[m]) - 1
            px = cell_of(parts.centers[m, 0].item(), grid, width)
            py = cell_of(parts.centers[m, 1].item(), grid, height)
            offsets[b, p, 0, y, x] = x - px
            offsets[b, p, 1, y, x] = y - py
            weights[b, p, y, x] = weight_of[n]
    return offsets, weights


def people(generator, num, height, width):
    maps = torch.zeros(num, height, width, dtype=torch.uint8)
    for n in range(num):
        y0 = int(torch.randint(0, height - 16, (1,), generator=generator))
        x0 = int(torch.randint(0, width - 16, (1,), generator=generator))
        h = int(torch.randint(2, height - y0, (1,), generator=generator))
        w = int(torch.randint(2, width - x0, (1,), generator=generator))
        for k in range(3):  # three vertical bands of random classes
            cls = int(torch.randint(1, NUM_CLASSES, (1,), generator=generator))
            maps[n, y0 + k * h // 3 : y0 + (k + 1) * h // 3 + (k == 2) * (h % 3), x0 : x0 + w] = cls
    return maps


def test_grid_box_size():
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [0.0, 0.0, 9.0, 24.0], [5.0, 5.0, 6.0, 6.0]])
    # 64 x 64 image, 8 x 8 grid: cells of 8 pixels
    assert grid_box_size(boxes, 8, (64, 64)).tolist() == [[0.0, 0.0], [1.0, 2.0], [0.0, 0.0]]


def test_build_offset_targets_matches_loop():
    generator = torch.Generator().manual_seed(0)
    maps = [
        people(generator, 4, 64, 96),
        people(generator, 0, 64, 96),
        people(generator, 3, 64, 96),
    ]
    inst = extract_instances(maps, NUM_CLASSES)
    expected_offsets, expected_weights = loop_offsets(inst, 16, 0.2)
    targets = build_offset_targets(inst, grid=16, epsilon=0.2)
    assert targets.offsets.shape == (3, NUM_CLASSES - 1, 2, 16, 16)
    assert targets.weights.shape == (3, NUM_CLASSES - 1, 16, 16)
    torch.testing.assert_close(targets.offsets, expected_offsets)
    torch.testing.assert_close(targets.weights, expected_weights)
    assert (targets.weights > 0).sum() > 20


def test_offset_targets_skip_zero_grid_size_and_tie_break():
    tiny = torch.zeros(64, 64, dtype=torch.uint8)
    tiny[2:4, 2:4] = 1  # inside one cell of an 8 x 8 grid: skipped
    big = torch.zeros(64, 64, dtype=torch.uint8)
    big[8:56, 8:32] = 2
    big[8:56, 32:56] = 3
    small = torch.zeros(64, 64, dtype=torch.uint8)
    small[24:40, 28:36] = 4  # same barycenter cell as `big`, smaller: owns the cell
    inst = extract_instances([torch.stack([tiny, big, small])], 5)
    targets = build_offset_targets(inst, grid=8, epsilon=0.5)
    assert targets.weights[0, 0].sum() == 0  # the tiny person's class 1 never supervised
    assert targets.weights[0, :, 4, 4].nonzero().flatten().tolist() == [3]  # class 4: small
    # small's region is cells x 3..4, y 3..4; big's is 3..5: (5, 5) stays big's, with
    # classes 2 and 3 pointing at their barycenter cells (2, 4) and (5, 4)
    assert targets.weights[0, :, 5, 5].nonzero().flatten().tolist() == [1, 2]
    assert targets.offsets[0, 1, :, 5, 5].tolist() == [3.0, 1.0]
    assert targets.offsets[0, 2, :, 5, 5].tolist() == [0.0, 1.0]
    # big box 8..56: cells 1..6, grid size (5, 5)
    torch.testing.assert_close(targets.weights[0, 1, 5, 5], torch.tensor(1 / math.sqrt(50)))
    assert (
        targets.weights[0, :, 0, 0].sum() == 0 and targets.offsets[0, :, :, 0, 0].abs().sum() == 0
    )
