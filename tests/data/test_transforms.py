"""Transforms: flip with class swap, resize rounding, alignment of image and maps, meta."""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from smp_parsing.data.mhp import MHP_V2_FLIP_PAIRS
from smp_parsing.data.transforms import (
    PAPER_MEAN,
    PAPER_STD,
    HorizontalFlipWithClassSwap,
    ParsingTransforms,
    RandomShortSideResize,
    hflip,
    paper_normalize,
    resize_maps,
)
from smp_parsing.metadata import get_dataset_meta


def loop_hflip(parsing: np.ndarray, pairs) -> np.ndarray:
    """Obvious reference: mirror each pixel, then swap each pair one by one."""
    n, h, w = parsing.shape
    out = np.zeros_like(parsing)
    for k in range(n):
        for y in range(h):
            for x in range(w):
                value = parsing[k, y, w - 1 - x]
                for a, b in pairs:
                    if value == a:
                        value = b
                    elif value == b:
                        value = a
                out[k, y, x] = value
    return out


def sided_sample(height: int = 20, width: int = 30) -> dict:
    parsing = np.zeros((2, height, width), np.uint8)
    parsing[0, 2:8, 1:6] = 6  # right-arm on the image left
    parsing[0, 2:8, 20:25] = 5  # left-arm on the image right
    parsing[0, 10:15, 10:12] = 3  # face: no mirror class
    parsing[1, 15:20, 0:4] = 31  # right-leg
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return {"image": image, "parsing": parsing, "image_id": "s"}


def test_hflip_swaps_classes_and_pixels_like_loop():
    sample = sided_sample()
    image, parsing = hflip(sample["image"], sample["parsing"], MHP_V2_FLIP_PAIRS)
    np.testing.assert_array_equal(image, sample["image"][:, ::-1])
    np.testing.assert_array_equal(parsing, loop_hflip(sample["parsing"], MHP_V2_FLIP_PAIRS))
    # right-arm (6) at x = 1 lands at x = 28 as left-arm (5), left-arm at x = 22 at x = 7 as
    # right-arm; right-leg (31) -> left-leg (30)
    assert parsing[0, 2, 28] == 5 and parsing[0, 2, 7] == 6 and parsing[1, 15, 29] == 30
    t_image, t_parsing = hflip(
        torch.from_numpy(sample["image"]).permute(2, 0, 1),
        torch.from_numpy(sample["parsing"]),
        MHP_V2_FLIP_PAIRS,
    )
    np.testing.assert_array_equal(t_parsing.numpy(), parsing)
    np.testing.assert_array_equal(t_image.permute(1, 2, 0).numpy(), image)


def test_flip_pairs_lut_matches_metadata():
    flip = HorizontalFlipWithClassSwap(dataset="densepose", p=1.0)
    np.testing.assert_array_equal(flip.lut[:15], get_dataset_meta("densepose").flip_lut())
    with pytest.raises(ValueError, match="exactly one"):
        HorizontalFlipWithClassSwap()


def test_train_pipeline_flip_swaps_classes():
    sample = sided_sample()
    transforms = ParsingTransforms(
        "mhp", flip=HorizontalFlipWithClassSwap("mhp", p=1.0), pad_divisor=1
    )
    out = transforms(sample)
    assert out["meta"]["flipped"] is True
    np.testing.assert_array_equal(
        out["parsing"].numpy(), loop_hflip(sample["parsing"], MHP_V2_FLIP_PAIRS)
    )
    np.testing.assert_array_equal(out["image"].numpy().transpose(1, 2, 0), sample["image"][:, ::-1])
    assert not ParsingTransforms("mhp", flip=HorizontalFlipWithClassSwap("mhp", p=0.0))(sample)[
        "meta"
    ]["flipped"]


def test_plain_horizontal_flip_is_refused():
    with pytest.raises(ValueError, match="HorizontalFlipWithClassSwap"):
        ParsingTransforms("mhp", augment=[A.HorizontalFlip(p=0.5)])


@pytest.mark.parametrize(
    ("shape", "short", "cap", "expected"),
    [
        ((50, 70), 64, 1000, (64, 90)),
        ((50, 70), 64, 80, (57, 80)),
        ((70, 50), 100, 1333, (140, 100)),
    ],
)
def test_short_side_resize_sizes(shape, short, cap, expected):
    resize = RandomShortSideResize([short], cap)
    out = A.Compose([resize])(
        image=np.zeros((*shape, 3), np.uint8), masks=np.zeros((2, *shape), np.uint8)
    )
    assert out["image"].shape[:2] == expected and out["masks"].shape == (2, *expected)


def test_image_and_maps_stay_aligned_through_resize_flip_pad():
    """Image colour encodes the class of each pixel; after the pipeline both must still agree."""
    rng = np.random.default_rng(1)
    parsing = np.zeros((3, 37, 53), np.uint8)
    for k in range(3):
        y, x = rng.integers(0, 30), rng.integers(0, 45)
        parsing[k, y : y + 7, x : x + 8] = [5, 24, 30][k]
    palette = rng.integers(1, 255, (256, 3)).astype(np.uint8)
    palette[0] = 0
    image = palette[parsing.max(axis=0)]
    transforms = ParsingTransforms(
        "mhp",
        resize=RandomShortSideResize([48, 80], 1333, interpolation=cv2.INTER_NEAREST_EXACT),
        flip=HorizontalFlipWithClassSwap("mhp", p=0.5),
        pad_divisor=32,
    )
    lut = get_dataset_meta("mhp").flip_lut()
    for _ in range(6):
        out = transforms({"image": image, "parsing": parsing, "image_id": "a"})
        maps = out["parsing"].numpy()
        h, w = out["meta"]["img_size"]
        assert out["image"].shape[1:] == maps.shape[1:] == out["meta"]["pad_size"]
        assert all(s % 32 == 0 for s in out["meta"]["pad_size"])
        labels = maps.max(axis=0)
        if out["meta"]["flipped"]:
            labels = lut[labels]  # the image colours were painted with the unflipped classes
        rgb = out["image"].numpy().transpose(1, 2, 0)
        np.testing.assert_array_equal(rgb[:h, :w], palette[labels[:h, :w]])
        assert not rgb[h:].any() and not rgb[:, w:].any() and not maps[:, h:].any()
        np.testing.assert_allclose(out["meta"]["scale"], (h / 37, w / 53))


def test_test_pipeline_normalises_and_keeps_original_parsing():
    image = np.broadcast_to(
        np.asarray(PAPER_MEAN, np.float32).round().astype(np.uint8), (30, 40, 3)
    ).copy()
    parsing = np.zeros((1, 30, 40), np.uint8)
    parsing[0, 3:9, 4:7] = 12
    transforms = ParsingTransforms(
        "mhp",
        resize=RandomShortSideResize([64], 1333),
        normalize=paper_normalize(),
        keep_original_parsing=True,
    )
    out = transforms({"image": image, "parsing": parsing, "image_id": "b"})
    assert out["image"].dtype == torch.float32 and out["image"].shape == (3, 64, 96)
    expected = (np.asarray(PAPER_MEAN).round() - PAPER_MEAN) / np.asarray(PAPER_STD)
    np.testing.assert_allclose(out["image"][:, 0, 0].numpy(), expected, atol=1e-5)
    assert out["parsing"].dtype == torch.uint8
    np.testing.assert_array_equal(out["parsing"].numpy(), parsing)
    assert out["meta"] == {
        "ori_size": (30, 40),
        "img_size": (64, 85),
        "pad_size": (64, 96),
        "scale": (64 / 30, 85 / 40),
        "flipped": False,
        "dataset": "mhp",
    }


def test_no_person_image_goes_through():
    out = ParsingTransforms("mhp", resize=RandomShortSideResize([40], 100))(
        {
            "image": np.zeros((20, 30, 3), np.uint8),
            "parsing": np.zeros((0, 20, 30), np.uint8),
            "image_id": "e",
        }
    )
    assert out["parsing"].shape == (0, 64, 64)


def test_resize_maps_matches_per_map_resize():
    maps = np.random.default_rng(0).integers(0, 59, (5, 13, 17)).astype(np.uint8)
    expected = np.stack(
        [cv2.resize(m, (29, 7), interpolation=cv2.INTER_NEAREST_EXACT) for m in maps]
    )
    np.testing.assert_array_equal(resize_maps(maps, 7, 29), expected)


def jitter_transforms(seed):
    return ParsingTransforms(
        "mhp",
        resize=RandomShortSideResize([24, 32, 40, 48], 1333),
        flip=HorizontalFlipWithClassSwap("mhp", p=0.5),
        pad_divisor=8,
        seed=seed,
    )


def drawn(transforms, sample, index, epoch):
    transforms.reseed(index, epoch)
    out = transforms(sample)
    return out["meta"]["img_size"], out["meta"]["flipped"], out["image"], out["parsing"]


def test_reseed_makes_the_augmentation_a_function_of_seed_epoch_index():
    sample = sided_sample()
    a, b = jitter_transforms(7), jitter_transforms(7)
    keys = [(index, epoch) for epoch in range(3) for index in range(8)]
    first = {key: drawn(a, sample, *key) for key in keys}
    # another instance, the keys in another order, other draws in between: the same samples
    b(sample)
    for key in reversed(keys):
        size, flipped, image, parsing = drawn(b, sample, *key)
        assert (size, flipped) == first[key][:2], key
        assert torch.equal(image, first[key][2]) and torch.equal(parsing, first[key][3])
    per_epoch = [[first[(index, epoch)][:2] for index in range(8)] for epoch in range(3)]
    assert per_epoch[0] != per_epoch[1] != per_epoch[2]  # a new epoch draws anew
    assert len({flipped for _, flipped in per_epoch[0]}) == 2  # flip is drawn, not constant
    other_seed = [drawn(jitter_transforms(8), sample, index, 0)[:2] for index in range(8)]
    assert other_seed != per_epoch[0]


def test_reseed_without_seed_is_not_fixed():
    sample = sided_sample()
    draws = {drawn(jitter_transforms(None), sample, 0, 0)[:2] for _ in range(24)}
    assert len(draws) > 1
