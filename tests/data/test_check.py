"""python -m smp_parsing.data.check: summary, problems with file names, exit codes."""

from __future__ import annotations

import numpy as np

from smp_parsing.data.check import main

from .builders import random_image, write_densepose_json, write_mhp_tree


def tree(root):
    parsing = np.zeros((2, 16, 16), np.uint8)
    parsing[0, :4, :4], parsing[1, 8:, 8:] = 3, 24
    samples = [
        {"image_id": str(i), "image": random_image(16, 16, i), "parsing": parsing} for i in range(3)
    ]
    return write_mhp_tree(root, samples, "val")


def test_clean_tree_exits_zero(tmp_path, capsys):
    assert main(["--dataset", "mhp", "--root", str(tree(tmp_path)), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "persons" in out and "right-shoe" in out and "│ 6 " in out  # 3 images x 2 persons


def test_problems_are_listed_with_files(tmp_path, capsys):
    root = tree(tmp_path)
    (root / "val/images/1.jpg").write_bytes(b"\xff\xd8 broken")
    (root / "list/val.txt").write_text("0\n1\n2\n9\n")
    assert main(["--dataset", "mhp", "--root", str(root), "--split", "val"]) == 1
    out = capsys.readouterr().out
    assert "1.jpg" in out and "cannot read image" in out and "'9'" in out


def test_densepose_and_missing_root(tmp_path, capsys):
    frame = np.ones((256, 256), np.uint8)
    sample = {
        "id": 3,
        "file_name": "3.jpg",
        "image": random_image(20, 20),
        "persons": [{"bbox": [0, 0, 10, 10], "parts_256": frame}],
    }
    ann = write_densepose_json(tmp_path / "dp.json", tmp_path / "img", [sample])
    assert (
        main(
            [
                "--dataset",
                "densepose",
                "--ann-file",
                str(ann),
                "--image-root",
                str(tmp_path / "img"),
            ]
        )
        == 0
    )
    assert main(["--dataset", "mhp", "--root", str(tmp_path / "none")]) == 1
    assert "expected MHP v2 layout" in capsys.readouterr().out
