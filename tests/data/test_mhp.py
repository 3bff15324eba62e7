"""MHPv2Dataset against tiny trees written in the exact MHP v2 layout."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from smp_parsing.data.errors import BadSampleError, DataRootError
from smp_parsing.data.mhp import MHPv2Dataset

from .builders import random_image, write_mhp_tree
from .hostile_files import deadline, png_header_only, replace_with_fifo


def person_maps(height: int = 24, width: int = 32) -> np.ndarray:
    """Three persons with distinct part ids, the third one all zero."""
    parsing = np.zeros((3, height, width), np.uint8)
    parsing[0, 2:10, 3:12] = 3
    parsing[0, 10:20, 3:12] = 58
    parsing[1, 4:20, 15:30] = 5
    parsing[1, 5:8, 16:18] = 6
    return parsing


@pytest.fixture
def tree(tmp_path):
    parsing = person_maps()
    keypoints = np.arange(3 * 20 * 3, dtype=np.float32).reshape(3, 20, 3)
    samples = [
        {
            "image_id": "7",
            "image": random_image(24, 32, 1),
            "parsing": parsing,
            "keypoints": keypoints,
        },
        {"image_id": "12", "image": random_image(24, 32, 2), "parsing": parsing[:0]},
    ]
    return write_mhp_tree(tmp_path / "mhp", samples), parsing, keypoints


def test_reads_exact_maps_from_r_channel_in_person_order(tree):
    root, parsing, keypoints = tree
    dataset = MHPv2Dataset(root, split="train")
    assert len(dataset) == 2 and dataset.image_ids == ["7", "12"]
    item = dataset[0]
    assert item["image_id"] == "7"
    assert item["image"].shape == (24, 32, 3) and item["image"].dtype == np.uint8
    assert item["parsing"].dtype == np.uint8
    # The all-zero third person is dropped; the others are exact, in file order.
    np.testing.assert_array_equal(item["parsing"], parsing[:2])
    np.testing.assert_array_equal(item["keypoints"], keypoints[:2])


def test_image_without_persons_is_valid(tree):
    root, _, _ = tree
    item = MHPv2Dataset(root)[1]
    assert item["parsing"].shape == (0, 24, 32)
    assert "keypoints" not in item


def test_person_order_follows_index_not_listing(tmp_path):
    parsing = np.zeros((11, 8, 8), np.uint8)
    parsing[np.arange(11), 0, np.arange(11) % 8] = np.arange(1, 12)
    root = write_mhp_tree(
        tmp_path, [{"image_id": "a_b", "image": random_image(8, 8), "parsing": parsing}]
    )
    item = MHPv2Dataset(root)[0]
    np.testing.assert_array_equal(item["parsing"].max(axis=(1, 2)), np.arange(1, 12))


def test_missing_root_explains_layout_and_synthetic(tmp_path):
    with pytest.raises(DataRootError, match="synthetic"):
        MHPv2Dataset(tmp_path / "nope")


def test_list_id_without_image(tree):
    root, _, _ = tree
    (root / "list" / "train.txt").write_text("7\n99\n12\n")
    with pytest.raises(BadSampleError, match="'99'.*no image"):
        MHPv2Dataset(root)
    dataset = MHPv2Dataset(root, on_bad_sample="skip")
    assert dataset.image_ids == ["7", "12"] and dataset.tracker.num_skipped == 1


def test_annotation_without_image(tree):
    root, parsing, _ = tree
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(
        root / "train/parsing_annos/404_01_01.png"
    )
    with pytest.raises(BadSampleError, match="404_01_01.png: annotation has no image"):
        MHPv2Dataset(root)
    dataset = MHPv2Dataset(root, on_bad_sample="skip")
    assert dataset.tracker.num_skipped == 1 and len(dataset) == 2


def test_corrupt_image(tree, caplog):
    root, _, _ = tree
    path = root / "train/images/7.jpg"
    path.write_bytes(path.read_bytes()[:200])  # truncated JPEG
    with pytest.raises(BadSampleError, match=r"7\.jpg: cannot read image"):
        MHPv2Dataset(root)[0]
    dataset = MHPv2Dataset(root, on_bad_sample="skip")
    with caplog.at_level(logging.WARNING):
        assert dataset[0] is None
    assert dataset.tracker.num_skipped == 1 and "7.jpg" in caplog.text
    assert dataset[1] is not None


def test_annotation_size_differs_from_image(tree):
    root, _, _ = tree
    Image.fromarray(np.zeros((20, 32, 3), np.uint8)).save(root / "train/parsing_annos/7_03_02.png")
    with pytest.raises(BadSampleError, match=r"7_03_02\.png: annotation size 32x20"):
        MHPv2Dataset(root)[0]
    assert MHPv2Dataset(root, on_bad_sample="skip")[0] is None


def test_class_id_out_of_range(tree):
    root, _, _ = tree
    label = np.zeros((24, 32, 3), np.uint8)
    label[0, 0, 0] = 59
    Image.fromarray(label).save(root / "train/parsing_annos/7_03_01.png")
    with pytest.raises(BadSampleError, match=r"7_03_01\.png: class id 59 out of range 0\.\.58"):
        MHPv2Dataset(root)[0]


def test_limit_and_test_split_without_annotations(tmp_path):
    samples = [
        {"image_id": str(i), "image": random_image(8, 8, i), "parsing": np.zeros((0, 8, 8))}
        for i in range(3)
    ]
    root = write_mhp_tree(tmp_path, samples, split="test_all")
    dataset = MHPv2Dataset(root, split="test_all", limit=2)
    assert dataset.image_ids == ["0", "1"] and dataset[1]["parsing"].shape == (0, 8, 8)


def test_bad_policy_value(tree):
    with pytest.raises(ValueError, match="on_bad_sample"):
        MHPv2Dataset(tree[0], on_bad_sample="ignore")


def test_header_claiming_a_huge_image_is_not_decoded(tree, monkeypatch):
    root, _, _ = tree
    # 150 bytes that claim 10000 x 10000 RGB pixels (300 MB once decoded).
    (root / "train/images/7.jpg").write_bytes(png_header_only(10000, 10000))
    with pytest.raises(
        BadSampleError, match=r"7\.jpg: image header claims 10000x10000 .*not decoded"
    ):
        MHPv2Dataset(root)[0]
    assert MHPv2Dataset(root, on_bad_sample="skip")[0] is None
    assert MHPv2Dataset(root).read_image_sizes()[0].tolist() == [0, 0]  # header refused too


def test_pixel_limit_applies_to_images_and_labels(tree):
    root, _, _ = tree  # 32 x 24 = 768 pixels
    dataset = MHPv2Dataset(root, max_image_pixels=767, on_bad_sample="skip")
    assert dataset[0] is None and "over the limit of 767" in str(dataset.tracker.problems[0])
    assert MHPv2Dataset(root, max_image_pixels=768)[0]["parsing"].shape == (2, 24, 32)
    # A label whose header claims another size is refused before it is decoded.
    (root / "train/parsing_annos/7_03_02.png").write_bytes(png_header_only(5000, 5000))
    with pytest.raises(BadSampleError, match=r"7_03_02\.png: annotation size 5000x5000"):
        MHPv2Dataset(root)[0]


def test_decompression_bomb_is_a_bad_sample_even_above_the_pixel_limit(tree):
    root, _, _ = tree
    # Over PIL's own hard limit (2 x Image.MAX_IMAGE_PIXELS): PIL raises DecompressionBombError,
    # which must become the bad-sample error for labels as for images.
    (root / "train/parsing_annos/7_03_01.png").write_bytes(png_header_only(20000, 20000, 0))
    dataset = MHPv2Dataset(root, max_image_pixels=10**9)
    with pytest.raises(BadSampleError, match=r"7_03_01\.png: cannot read annotation .*bomb"):
        dataset[0]
    assert MHPv2Dataset(root, max_image_pixels=10**9, on_bad_sample="skip")[0] is None


@pytest.mark.parametrize("name", ["images/7.jpg", "parsing_annos/7_03_01.png", "pose_annos/7.mat"])
def test_fifo_named_like_a_data_file_is_refused_without_blocking(tree, name):
    root, _, _ = tree
    replace_with_fifo(root / "train" / name)
    with deadline(20):
        with pytest.raises(BadSampleError, match=r"is a FIFO, not a regular file"):
            MHPv2Dataset(root)[0]
        dataset = MHPv2Dataset(root, on_bad_sample="skip")
        assert dataset[0] is None and dataset[1] is not None
        dataset.read_image_sizes()
