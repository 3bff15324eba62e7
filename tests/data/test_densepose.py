"""DensePoseParsingDataset against a tiny json whose dp_masks are encoded by pycocotools."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from smp_parsing.data.densepose import DensePoseParsingDataset, decode_dp_masks
from smp_parsing.data.errors import BadSampleError, DataRootError

from .builders import encode_dp_masks, random_image, write_densepose_json


def frame_with_parts() -> np.ndarray:
    frame = np.zeros((256, 256), np.uint8)
    frame[0:128, :] = 1  # torso, top half
    frame[100:200, 50:150] = 14  # head overlapping the torso
    frame[200:256, 0:64] = 2
    return frame


def reference_person(frame, bbox, height, width):
    """The spec's decoding written as plainly as possible."""
    x, y, w, h = bbox
    x1, y1, x2, y2 = int(x), int(y), min(int(x + w), width), min(int(y + h), height)
    out = np.zeros((height, width), np.uint8)
    out[y1:y2, x1:x2] = cv2.resize(frame, (x2 - x1, y2 - y1), interpolation=cv2.INTER_NEAREST)
    return out


@pytest.fixture
def densepose(tmp_path):
    frame = frame_with_parts()
    persons = [
        {"bbox": [3.7, 5.2, 20.9, 30.5], "parts_256": frame},
        {"bbox": [30.0, 10.0, 40.0, 40.0], "parts_256": frame},  # runs past the right border
        {"bbox": [1.0, 1.0, 10.0, 10.0], "parts_256": frame, "iscrowd": 1},
        {"bbox": [1.0, 1.0, 0.5, 10.0], "parts_256": frame},  # under 1 px wide
        {"bbox": [1.0, 1.0, 10.0, 10.0]},  # no dp_masks: not a GT person
    ]
    samples = [
        {"id": 42, "file_name": "a.jpg", "image": random_image(48, 64, 3), "persons": persons},
        {"id": 7, "file_name": "b.jpg", "image": random_image(20, 20, 4), "persons": []},
    ]
    ann_file = write_densepose_json(tmp_path / "dp.json", tmp_path / "images", samples)
    return ann_file, tmp_path / "images", frame, persons


def test_decodes_exactly_per_spec(densepose):
    ann_file, image_root, frame, persons = densepose
    dataset = DensePoseParsingDataset(ann_file, image_root)
    assert dataset.image_ids == ["7", "42"]
    item = dataset[1]
    assert item["image_id"] == "42" and item["image"].shape == (48, 64, 3)
    expected = np.stack([reference_person(frame, p["bbox"], 48, 64) for p in persons[:2]])
    np.testing.assert_array_equal(item["parsing"], expected)
    assert set(np.unique(item["parsing"])) == {0, 1, 2, 14}
    assert dataset[0]["parsing"].shape == (0, 20, 20)


def test_later_parts_overwrite_loop_reference():
    rng = np.random.default_rng(0)
    masks = rng.random((14, 256, 256)) < 0.3
    masks[4] = False  # an absent part, encoded as an empty entry
    entries = [
        encode_dp_masks(np.where(m, i + 1, 0).astype(np.uint8))[i] for i, m in enumerate(masks)
    ]
    assert entries[4] == []
    reference = np.zeros((256, 256), np.uint8)
    for i in range(14):
        reference[masks[i]] = i + 1
    np.testing.assert_array_equal(decode_dp_masks(entries, "x.json"), reference)


def test_filter_empty_and_limit(densepose):
    ann_file, image_root, _, _ = densepose
    assert DensePoseParsingDataset(ann_file, image_root, filter_empty=True).image_ids == ["42"]
    assert DensePoseParsingDataset(ann_file, image_root, limit=1).image_ids == ["7"]


def test_bad_inputs(densepose, tmp_path):
    ann_file, image_root, _, _ = densepose
    with pytest.raises(DataRootError, match="synthetic"):
        DensePoseParsingDataset(tmp_path / "missing.json", image_root)
    (image_root / "b.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(BadSampleError, match=r"b\.jpg: cannot read image"):
        DensePoseParsingDataset(ann_file, image_root)[0]
    dataset = DensePoseParsingDataset(ann_file, image_root, on_bad_sample="skip")
    assert dataset[0] is None and dataset.tracker.num_skipped == 1
    (image_root / "a.jpg").unlink()
    with pytest.raises(BadSampleError, match=r"a\.jpg: image of COCO id 42 .* is missing"):
        DensePoseParsingDataset(ann_file, image_root)[1]
    cv2.imwrite(str(image_root / "a.jpg"), np.zeros((40, 64, 3), np.uint8))
    with pytest.raises(BadSampleError, match=r"a\.jpg: image size 64x40"):
        DensePoseParsingDataset(ann_file, image_root)[1]


def test_wrong_number_of_dp_masks():
    with pytest.raises(BadSampleError, match="13 entries"):
        decode_dp_masks([[]] * 13, "dp.json")
