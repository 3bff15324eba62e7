"""The one module that reads image and label pixels: modes, channels, sizes on the header."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from smp_parsing.data.errors import BadSampleError
from smp_parsing.data.image_files import read_image, read_label_png

from .builders import random_image, write_exif_rotated_jpeg, write_mhp_tree


def test_label_modes_and_channels(tmp_path):
    ids = np.arange(12, dtype=np.uint8).reshape(3, 4)
    palette = Image.fromarray(ids, "P")
    palette.putpalette([(255 - i) % 256 for i in range(768)])  # colours that are not the ids
    palette.save(tmp_path / "p.png")
    rgb = np.stack([ids, 255 - ids, np.full_like(ids, 7)], axis=-1)
    Image.fromarray(rgb, "RGB").save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_label_png(tmp_path / "p.png"), ids)
    np.testing.assert_array_equal(read_label_png(tmp_path / "rgb.png"), ids)  # MHP: R channel
    np.testing.assert_array_equal(read_label_png(tmp_path / "rgb.png", rgb_channel=1), 255 - ids)
    with pytest.raises(BadSampleError, match="label file is RGB"):
        read_label_png(tmp_path / "rgb.png", what="label file", rgb_channel=None)
    with pytest.raises(BadSampleError, match=r"label size 4x3 \(WxH\) differs from image a\.jpg"):
        read_label_png(tmp_path / "p.png", (4, 3), reference="image a.jpg", what="label file")
    Image.fromarray(np.zeros((3, 4), np.uint16) + 300).save(tmp_path / "deep.png")
    with pytest.raises(BadSampleError, match="annotation has unsupported PNG mode"):
        read_label_png(tmp_path / "deep.png")


def test_read_image_is_rgb(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    image = read_image(tmp_path / "g.png")
    assert image.shape == (3, 4, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[..., 2], grey)


def test_exif_orientation_is_applied_only_when_asked(tmp_path):
    """The data sets read the stored grid (their annotations index it); predict reads upright."""
    path = write_exif_rotated_jpeg(tmp_path / "phone.jpg", random_image(24, 40))
    stored = read_image(path)
    assert stored.shape == (24, 40, 3)  # as stored: what MHP / CIHP / DensePose labels index
    upright = read_image(path, exif_transpose=True)
    assert upright.shape == (40, 24, 3)
    np.testing.assert_array_equal(upright, np.rot90(stored, k=-1))  # orientation 6: clockwise
    # no EXIF tag: the same pixels either way
    Image.fromarray(random_image(8, 6)).save(tmp_path / "plain.jpg")
    np.testing.assert_array_equal(
        read_image(tmp_path / "plain.jpg", exif_transpose=True), read_image(tmp_path / "plain.jpg")
    )


def test_a_data_set_reads_the_stored_grid_of_an_exif_rotated_image(tmp_path):
    """An MHP image with an EXIF turn: its annotation (drawn on the stored pixels) still fits."""
    from smp_parsing.data.mhp import MHPv2Dataset

    parsing = np.zeros((1, 24, 40), np.uint8)
    parsing[0, 4:20, 2:10] = 3
    root = write_mhp_tree(
        tmp_path, [{"image_id": "0", "image": random_image(24, 40), "parsing": parsing}], "val"
    )
    write_exif_rotated_jpeg(root / "val" / "images" / "0.jpg", random_image(24, 40, seed=1))
    sample = MHPv2Dataset(root, split="val", load_pose=False).load_sample(0)
    assert sample["image"].shape == (24, 40, 3)
    np.testing.assert_array_equal(sample["parsing"], parsing)
