"""``smp_parsing.predict.list_images``: which input files become image ids (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from smp_parsing.predict import list_images


def test_two_images_with_one_stem_are_an_error(tmp_path):
    for name in ("a.jpg", "a.png", "b.jpg"):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / name)
    with pytest.raises(ValueError, match=r"overwrite each other .*\['a.jpg', 'a.png'\]"):
        list_images(tmp_path)
    (tmp_path / "a.png").unlink()
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.jpg"]


def test_a_fifo_named_like_an_image_is_refused(tmp_path):
    import os

    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.jpg")
    os.mkfifo(tmp_path / "b.jpg")
    with pytest.raises(ValueError, match=r"not regular files, refused: \['b.jpg'\]"):
        list_images(tmp_path)
