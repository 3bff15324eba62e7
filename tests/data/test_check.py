"""python -m smp_parsing.data.check: summary, problems with file names, exit codes."""

from __future__ import annotations

import re

import numpy as np
import pytest

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


def test_a_registered_data_set_is_checkable_with_no_edit_to_check(tmp_path, capsys):
    """The toy data set of the "add a data set" walk-through, registered in that test module
    (``--import`` loads it; here it is imported already): the registry gives check.py its
    reader, label space and root check."""
    from . import test_add_dataset as toy

    args = ["--import", toy.__name__, "--dataset", "toy", "--root", str(tmp_path / "toy")]
    # the registry's root check: the missing files and the toy's layout
    assert main([*args, "--split", "val"]) == 1
    out = capsys.readouterr().out
    assert "toy val data not found" in out and "expected toy layout" in out

    toy.write_toy_tree(tmp_path / "toy", "val", 3)
    assert main([*args, "--split", "val"]) == 0
    out = capsys.readouterr().out
    # the toy's class names, 3 images x 2 persons, each person with all 4 parts
    assert "left-arm" in out and "│ 6 " in out and "ToyDataset" in out
    assert main([*args, "--split", "val", "--limit", "2"]) == 0  # the reader's own limit
    assert re.search(r"images read +│ 2 ", capsys.readouterr().out)

    (tmp_path / "toy" / "val" / "1_2.png").write_bytes(b"\x89PNG broken")
    assert main([*args, "--split", "val"]) == 1
    assert "1_2.png: cannot read annotation" in capsys.readouterr().out


def test_reader_arguments_are_checked_against_the_registered_reader(tmp_path, capsys):
    root = tree(tmp_path)
    # a flag the reader does not take, a KEY=VALUE argument, a missing required argument
    with pytest.raises(SystemExit):
        main(["--dataset", "mhp", "--root", str(root), "--ann-file", "x.json"])
    assert "--ann-file is not an argument of MHPv2Dataset" in capsys.readouterr().err
    assert main(["--dataset", "mhp", "--root", str(root), "--arg", "load_pose=false"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["--dataset", "mhp", "--root", str(root), "--arg", "nope=1"])
    assert "--arg nope: not an argument of MHPv2Dataset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--dataset", "densepose", "--image-root", str(tmp_path)])
    assert "--dataset densepose needs ann_file (--ann-file)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--dataset", "nope"])
    assert "unknown data set 'nope'" in capsys.readouterr().err
