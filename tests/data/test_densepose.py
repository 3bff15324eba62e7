"""DensePoseParsingDataset against a tiny json whose dp_masks are encoded by pycocotools."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from smp_parsing.data.densepose import DensePoseParsingDataset, decode_dp_masks
from smp_parsing.data.errors import BadSampleError, DataRootError

from .builders import encode_dp_masks, random_image, write_densepose_json
from .hostile_files import deadline, replace_with_fifo


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


def _one_person_json(tmp_path, bbox="[2.0, 3.0, 10.0, 12.0]", file_name="a.jpg", height=24):
    """A json with one image and one person, written by hand: ``json.dumps`` of Python floats
    cannot express the ``Infinity`` literal a hostile file holds."""
    image_root = tmp_path / "images"
    image_root.mkdir(exist_ok=True)
    cv2.imwrite(str(image_root / "a.jpg"), np.zeros((24, 32, 3), np.uint8))
    rle = encode_dp_masks(frame_with_parts())
    text = (
        '{"images": [{"id": 1, "file_name": ' + json.dumps(file_name) + ', "height": '
        + str(height) + ', "width": 32}], "annotations": [{"id": 5, "image_id": 1, '
        '"category_id": 1, "bbox": ' + bbox + ', "area": 1.0, "iscrowd": 0, "dp_masks": '
        + json.dumps(rle) + '}], "categories": [{"id": 1, "name": "person"}]}'
    )  # fmt: skip
    (tmp_path / "dp.json").write_text(text)
    return tmp_path / "dp.json", image_root


@pytest.mark.parametrize(
    "bbox",
    ["[Infinity, 3.0, 10.0, 12.0]", "[2.0, NaN, 10.0, 12.0]", "[1.7e308, 3.0, 1.7e308, 12.0]",
     "[2.0, 3.0, 10.0]", '[2.0, "3", 10.0, 12.0]', "null"],
)  # fmt: skip
def test_overflowing_or_malformed_bbox_is_a_bad_sample(tmp_path, bbox):
    ann_file, image_root = _one_person_json(tmp_path, bbox)
    with pytest.raises(BadSampleError, match=r"dp\.json: annotation 5 of COCO id 1: bbox"):
        DensePoseParsingDataset(ann_file, image_root)[0]
    dataset = DensePoseParsingDataset(ann_file, image_root, on_bad_sample="skip", filter_empty=True)
    assert len(dataset) == 1 and dataset[0] is None and dataset.tracker.num_skipped == 1


def test_sane_bbox_of_the_hand_written_json_decodes(tmp_path):
    ann_file, image_root = _one_person_json(tmp_path)
    assert DensePoseParsingDataset(ann_file, image_root)[0]["parsing"].shape == (1, 24, 32)


@pytest.mark.parametrize(
    "file_name", ["/etc/hostname", "../outside.jpg", "sub/../../outside.jpg", "..\\outside.jpg", ""]
)
def test_file_name_outside_the_image_root_is_refused(tmp_path, file_name):
    (tmp_path / "outside.jpg").write_bytes(b"")  # would be opened if the name were followed
    ann_file, image_root = _one_person_json(tmp_path, file_name=file_name)
    with pytest.raises(BadSampleError, match=r"dp\.json: image of COCO id 1: file_name"):
        DensePoseParsingDataset(ann_file, image_root)[0]
    assert DensePoseParsingDataset(ann_file, image_root, on_bad_sample="skip")[0] is None


def test_fifo_image_and_absurd_json_sizes_do_not_hang_or_crash(tmp_path):
    ann_file, image_root = _one_person_json(tmp_path, height="Infinity")
    dataset = DensePoseParsingDataset(ann_file, image_root, on_bad_sample="skip")
    assert dataset.read_image_sizes().tolist() == [[0, 32]]  # unknown height, no OverflowError
    replace_with_fifo(image_root / "a.jpg")
    with deadline(20):
        with pytest.raises(BadSampleError, match=r"a\.jpg: is a FIFO, not a regular file"):
            DensePoseParsingDataset(ann_file, image_root)[0]


def test_pixel_limit(densepose):
    ann_file, image_root, _, _ = densepose
    dataset = DensePoseParsingDataset(ann_file, image_root, max_image_pixels=48 * 64 - 1)
    with pytest.raises(BadSampleError, match=r"a\.jpg: image header claims 64x48 .*over the limit"):
        dataset[1]
    assert dataset[0]["parsing"].shape == (0, 20, 20)
