"""extract_instances against an obvious per-person / per-class loop."""

from __future__ import annotations

import pytest
import torch

from smp_parsing.models.targets.instances import extract_instances

NUM_CLASSES = 7


def random_maps(generator: torch.Generator, num: int, height: int, width: int) -> torch.Tensor:
    """Blocky random person maps: a few rectangles of random classes per person."""
    maps = torch.zeros(num, height, width, dtype=torch.uint8)
    for n in range(num):
        for _ in range(4):
            y0 = int(torch.randint(0, height - 4, (1,), generator=generator))
            x0 = int(torch.randint(0, width - 4, (1,), generator=generator))
            h = int(torch.randint(1, height - y0, (1,), generator=generator))
            w = int(torch.randint(1, width - x0, (1,), generator=generator))
            cls = int(torch.randint(1, NUM_CLASSES, (1,), generator=generator))
            maps[n, y0 : y0 + h, x0 : x0 + w] = cls
    return maps


def loop_instances(parsing_list, num_classes, stride):
    """One person / part at a time with plain indexing."""
    persons, parts = [], []
    offset = stride // 2
    for b, maps in enumerate(parsing_list):
        for n in range(maps.shape[0]):
            person_map = maps[n]
            fg = person_map != 0
            if not fg.any():
                continue
            ys, xs = fg.nonzero(as_tuple=True)
            persons.append(
                {
                    "batch": b,
                    "box": [
                        xs.min().item(),
                        ys.min().item(),
                        xs.max().item() + 1,
                        ys.max().item() + 1,
                    ],
                    "center": [xs.double().mean().item() + 0.5, ys.double().mean().item() + 0.5],
                    "area": int(fg.sum()),
                    "mask": fg[offset::stride, offset::stride],
                    "has_part": [bool((person_map == c).any()) for c in range(1, num_classes)],
                }
            )
            for c in range(1, num_classes):
                pm = person_map == c
                if not pm.any():
                    continue
                ys, xs = pm.nonzero(as_tuple=True)
                parts.append(
                    {
                        "batch": b,
                        "person": len(persons) - 1,
                        "label": c,
                        "box": [
                            xs.min().item(),
                            ys.min().item(),
                            xs.max().item() + 1,
                            ys.max().item() + 1,
                        ],
                        "center": [
                            xs.double().mean().item() + 0.5,
                            ys.double().mean().item() + 0.5,
                        ],
                        "area": int(pm.sum()),
                        "mask": pm[offset::stride, offset::stride],
                    }
                )
    return persons, parts


def test_extract_instances_matches_loop():
    generator = torch.Generator().manual_seed(0)
    maps = [random_maps(generator, 3, 32, 48), random_maps(generator, 0, 32, 48)]
    maps.append(
        torch.cat([random_maps(generator, 2, 32, 48), torch.zeros(1, 32, 48, dtype=torch.uint8)])
    )
    inst = extract_instances(maps, NUM_CLASSES, mask_stride=4)
    persons, parts = loop_instances(maps, NUM_CLASSES, 4)

    assert inst.batch_size == 3 and inst.image_size == (32, 48)
    assert len(inst.persons) == len(persons) == 5  # the all-background map is dropped
    assert inst.persons.batch_idx.tolist() == [p["batch"] for p in persons]
    assert inst.persons.boxes.tolist() == [p["box"] for p in persons]
    assert inst.persons.areas.tolist() == [p["area"] for p in persons]
    torch.testing.assert_close(
        inst.persons.centers, torch.tensor([p["center"] for p in persons], dtype=torch.float32)
    )
    assert torch.equal(inst.persons.masks, torch.stack([p["mask"] for p in persons]))
    assert inst.persons.has_part.tolist() == [p["has_part"] for p in persons]

    assert len(inst.parts) == len(parts)
    assert inst.parts.batch_idx.tolist() == [p["batch"] for p in parts]
    assert inst.parts.person_idx.tolist() == [p["person"] for p in parts]
    assert inst.parts.labels.tolist() == [p["label"] for p in parts]
    assert inst.parts.boxes.tolist() == [p["box"] for p in parts]
    assert inst.parts.areas.tolist() == [p["area"] for p in parts]
    torch.testing.assert_close(
        inst.parts.centers, torch.tensor([p["center"] for p in parts], dtype=torch.float32)
    )
    assert torch.equal(inst.parts.masks, torch.stack([p["mask"] for p in parts]))


def test_extract_instances_empty_batch_gives_empty_tensors():
    inst = extract_instances([torch.zeros(0, 16, 16, dtype=torch.uint8)] * 2, NUM_CLASSES)
    assert len(inst.persons) == 0 and len(inst.parts) == 0
    assert inst.persons.masks.shape == (0, 4, 4)
    assert inst.persons.has_part.shape == (0, NUM_CLASSES - 1)
    assert inst.parts.boxes.shape == (0, 4)


def test_extract_instances_accepts_long_maps():
    maps = torch.zeros(1, 8, 8, dtype=torch.long)
    maps[0, 2:6, 4:8] = 3
    inst = extract_instances([maps], NUM_CLASSES)
    assert inst.parts.labels.tolist() == [3]
    assert inst.parts.boxes.tolist() == [[4.0, 2.0, 8.0, 6.0]]
    assert inst.parts.centers.tolist() == [[6.0, 4.0]]


@pytest.mark.parametrize(
    ("maps", "message"),
    [
        ([], "empty batch"),
        (
            [torch.zeros(1, 8, 8, dtype=torch.uint8), torch.zeros(1, 8, 12, dtype=torch.uint8)],
            "different sizes",
        ),
        ([torch.full((1, 8, 8), NUM_CLASSES, dtype=torch.uint8)], "class ids"),
        ([torch.zeros(1, 8, 10, dtype=torch.uint8)], "multiple of mask_stride"),
        ([torch.zeros(1, 8, 8)], "integer class ids"),
        ([torch.zeros(8, 8, dtype=torch.uint8)], r"expected \(N, H, W\)"),
    ],
)
def test_extract_instances_rejects_bad_input(maps, message):
    with pytest.raises(ValueError, match=message):
        extract_instances(maps, NUM_CLASSES)
