"""Center regions, cell assignment and center targets against per-instance loops."""

from __future__ import annotations

import math

import torch

from smp_parsing.models.targets.center import (
    assign_cells,
    build_center_targets,
    center_region_cells,
)
from smp_parsing.models.targets.instances import extract_instances


def cell_of(value: float, grid: int, size: int) -> int:
    """floor(value * S / size) in float32 (the builders' arithmetic), clamped."""
    cell = math.floor(float(torch.tensor(value, dtype=torch.float32) * grid / size))
    return min(max(cell, 0), grid - 1)


def loop_region(center, box, grid, image_size, epsilon):
    """Center region of one instance, written out coordinate by coordinate."""
    height, width = image_size
    cx, cy = center
    half_w = 0.5 * epsilon * (box[2] - box[0])
    half_h = 0.5 * epsilon * (box[3] - box[1])
    cell_x, cell_y = cell_of(cx, grid, width), cell_of(cy, grid, height)
    x0 = max(cell_of(cx - half_w, grid, width), cell_x - 1)
    x1 = min(cell_of(cx + half_w, grid, width), cell_x + 1)
    y0 = max(cell_of(cy - half_h, grid, height), cell_y - 1)
    y1 = min(cell_of(cy + half_h, grid, height), cell_y + 1)
    return (cell_x, cell_y), (x0, y0, x1, y1)


def loop_owner(regions, batch_idx, areas, batch_size, grid):
    """Owner of each cell: visit every cell and every instance."""
    owner = torch.full((batch_size, grid, grid), -1, dtype=torch.long)
    for b in range(batch_size):
        for y in range(grid):
            for x in range(grid):
                best = None
                for n, (x0, y0, x1, y1) in enumerate(regions):
                    if batch_idx[n] != b or not (x0 <= x <= x1 and y0 <= y <= y1):
                        continue
                    if best is None or (areas[n], n) < (areas[best], best):
                        best = n
                if best is not None:
                    owner[b, y, x] = best
    return owner


def person_maps(generator, num, height, width):
    maps = torch.zeros(num, height, width, dtype=torch.uint8)
    for n in range(num):
        y0 = int(torch.randint(0, height - 8, (1,), generator=generator))
        x0 = int(torch.randint(0, width - 8, (1,), generator=generator))
        h = int(torch.randint(2, height - y0, (1,), generator=generator))
        w = int(torch.randint(2, width - x0, (1,), generator=generator))
        maps[n, y0 : y0 + h, x0 : x0 + w] = int(torch.randint(1, 5, (1,), generator=generator))
    return maps


def test_center_region_cells_matches_loop():
    generator = torch.Generator().manual_seed(0)
    centers = torch.rand(50, 2, generator=generator) * torch.tensor([96.0, 64.0])
    sizes = torch.rand(50, 2, generator=generator) * 80
    boxes = torch.cat([centers - sizes / 2, centers + sizes / 2], 1)
    for grid, epsilon in ((40, 0.2), (12, 0.2), (16, 0.5)):
        cells, regions = center_region_cells(centers, boxes, grid, (64, 96), epsilon)
        for n in range(50):
            cell, region = loop_region(
                centers[n].tolist(), boxes[n].tolist(), grid, (64, 96), epsilon
            )
            assert tuple(cells[n].tolist()) == cell
            assert tuple(regions[n].tolist()) == region
        # at most 3 x 3 cells, always containing the barycenter cell
        assert (regions[:, 2:] - regions[:, :2]).max() <= 2
        assert (regions[:, :2] <= cells).all() and (cells <= regions[:, 2:]).all()


def test_assign_cells_matches_loop():
    generator = torch.Generator().manual_seed(1)
    grid, num = 6, 12
    lo = torch.randint(0, grid, (num, 2), generator=generator)
    hi = (lo + torch.randint(0, 3, (num, 2), generator=generator)).clamp(max=grid - 1)
    regions = torch.cat([lo, hi], 1)
    batch_idx = torch.randint(0, 3, (num,), generator=generator)
    areas = torch.randint(1, 4, (num,), generator=generator)  # many equal areas: index tie-break
    owner = assign_cells(regions, batch_idx, areas, 3, grid)
    expected = loop_owner(regions.tolist(), batch_idx.tolist(), areas.tolist(), 3, grid)
    assert torch.equal(owner, expected)


def test_assign_cells_smaller_wins_then_lower_index():
    regions = torch.tensor([[0, 0, 2, 2], [1, 1, 3, 3], [1, 1, 1, 1]])
    batch_idx = torch.tensor([0, 0, 0])
    owner = assign_cells(regions, batch_idx, torch.tensor([50, 10, 10]), 1, 4)
    assert owner[0, 0, 0] == 0  # only instance 0
    assert owner[0, 2, 2] == 1  # 0 and 1 overlap: 1 is smaller
    assert owner[0, 1, 1] == 1  # 1 and 2 have equal areas: lower index wins
    assert owner[0, 3, 0] == -1


def test_build_center_targets_matches_loop():
    generator = torch.Generator().manual_seed(2)
    maps = [person_maps(generator, 4, 64, 96), person_maps(generator, 0, 64, 96)]
    maps.append(person_maps(generator, 3, 64, 96))
    inst = extract_instances(maps, 5)
    targets = build_center_targets(inst, grid=16, epsilon=0.2)
    persons = inst.persons
    regions = [
        loop_region(c, b, 16, (64, 96), 0.2)[1]
        for c, b in zip(persons.centers.tolist(), persons.boxes.tolist())
    ]
    owner = loop_owner(regions, persons.batch_idx.tolist(), persons.areas.tolist(), 3, 16)
    assert torch.equal(targets.owner, owner)
    assert torch.equal(targets.heatmap, (owner >= 0).float())
    assert targets.heatmap.dtype == torch.float32
    assert int(targets.num_pos) == int((owner >= 0).sum()) > 0
    assert targets.heatmap[1].sum() == 0  # the image without persons


def test_center_targets_overlapping_persons_tie_break():
    big = torch.zeros(64, 64, dtype=torch.uint8)
    big[8:56, 8:56] = 1  # barycenter (32, 32)
    small = torch.zeros(64, 64, dtype=torch.uint8)
    small[24:44, 24:40] = 2  # barycenter (32, 34): same cell on an 8 x 8 grid
    inst = extract_instances([torch.stack([big, small])], 3)
    targets = build_center_targets(inst, grid=8, epsilon=0.5)
    assert targets.owner[0, 4, 4] == 1  # the smaller person owns the shared cell
    assert (targets.owner[0][targets.heatmap[0] > 0] >= 0).all()
