"""collate_parsing: padding of images and person maps, eval maps untouched, bad samples dropped."""

from __future__ import annotations

import pytest
import torch

from smp_parsing.data.collate import collate_parsing


def fake(h: int, w: int, n: int, maps_size=None, image_id="x"):
    mh, mw = maps_size or (h, w)
    return {
        "image": torch.ones(3, h, w),
        "parsing": torch.full((n, mh, mw), 7, dtype=torch.uint8),
        "image_id": image_id,
        "meta": {"pad_size": (h, w)},
    }


def test_train_batch_pads_images_and_maps():
    batch = collate_parsing([fake(64, 32, 2, image_id="a"), None, fake(32, 96, 0, image_id="b")])
    assert batch["images"].shape == (2, 3, 64, 96)
    assert (
        batch["images"][0, :, :, 32:].abs().sum() == 0
        and batch["images"][1, :, 32:].abs().sum() == 0
    )
    assert [p.shape for p in batch["parsing"]] == [(2, 64, 96), (0, 64, 96)]
    assert batch["parsing"][0][:, :, 32:].sum() == 0 and batch["parsing"][0][:, :, :32].eq(7).all()
    assert batch["image_ids"] == ["a", "b"] and len(batch["metas"]) == 2


def test_eval_batch_keeps_original_size_maps():
    batch = collate_parsing(
        [fake(64, 32, 1, (50, 20)), fake(32, 96, 3, (20, 70))], pad_parsing=False
    )
    assert [p.shape for p in batch["parsing"]] == [(1, 50, 20), (3, 20, 70)]


def test_all_bad_and_mismatch():
    assert collate_parsing([None, None]) is None
    with pytest.raises(ValueError, match="pad_parsing=False"):
        collate_parsing([fake(64, 32, 1, (50, 20))])
