"""Synthetic MHP v2: layout, determinism, left/right geometry, scale spread, CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from smp_parsing.data.mhp import MHP_V2_CLASSES, MHP_V2_FLIP_PAIRS, MHPv2Dataset
from smp_parsing.data.synthetic import SyntheticMHPGenerator, is_generated

SIDED = {"arm": (6, 5), "hand": (8, 7), "leg": (31, 30), "shoe": (25, 24)}  # (right, left) ids


@pytest.fixture(scope="module")
def renders():
    generator = SyntheticMHPGenerator(size=128)
    return [generator.render(3, "train", i) for i in range(12)]


def test_render_contract(renders):
    for sample in renders:
        image, parsing = sample["image"], sample["parsing"]
        assert (
            image.dtype == np.uint8
            and image.ndim == 3
            and 96 <= min(image.shape[:2])
            and max(image.shape[:2]) == 128
        )
        assert parsing.dtype == np.uint8 and parsing.shape[1:] == image.shape[:2]
        assert 1 <= len(parsing) <= 8 and parsing.any(axis=(1, 2)).all()
        assert parsing.max() < len(MHP_V2_CLASSES)
        # Persons do not share pixels: each pixel belongs to at most one (visible) person.
        assert ((parsing > 0).sum(axis=0) <= 1).all()
        assert sample["keypoints"].shape == (len(parsing), 20, 3)


def test_left_right_told_apart_by_geometry(renders):
    """The figure's right parts lie left of its left parts; mirroring without the swap breaks it."""
    ordered = mirrored_wrong = 0
    for sample in renders:
        xs = np.arange(sample["parsing"].shape[2])
        for person in sample["parsing"]:
            for right, left in SIDED.values():
                r, lft = (person == right), (person == left)
                if r.sum() > 3 and lft.sum() > 3:
                    r_x = (r.sum(axis=0) * xs).sum() / r.sum()
                    l_x = (lft.sum(axis=0) * xs).sum() / lft.sum()
                    ordered += r_x < l_x
                    mirrored_wrong += (len(xs) - 1 - r_x) < (len(xs) - 1 - l_x)
    assert ordered >= 40 and mirrored_wrong == 0


def test_classes_and_scales_cover_the_requirements(renders):
    present = set(np.unique(np.concatenate([s["parsing"].ravel() for s in renders])))
    for name in (
        "face",
        "hair",
        "cap/hat",
        "left-arm",
        "right-arm",
        "left-hand",
        "right-hand",
        "left-shoe",
        "right-shoe",
    ):
        assert MHP_V2_CLASSES.index(name) in present, name
    assert present & {17, 18, 19} and present & {11, 12, 14, 34, 35}
    heights = [np.ptp(np.flatnonzero(p.any(axis=1))) + 1 for s in renders for p in s["parsing"]]
    assert max(heights) / min(heights) > 3  # figures span several FPN levels


def test_deterministic_and_prefix_stable(tmp_path):
    generator = SyntheticMHPGenerator(size=64, write_pose=False)
    first = generator.render(0, "val", 2)
    again = generator.render(0, "val", 2)
    np.testing.assert_array_equal(first["image"], again["image"])
    np.testing.assert_array_equal(first["parsing"], again["parsing"])
    assert not np.array_equal(first["image"], generator.render(1, "val", 2)["image"])
    generator.generate(tmp_path / "a", num_train=2, num_val=1, seed=5)
    generator.generate(tmp_path / "b", num_train=4, num_val=1, seed=5)
    for name in sorted(p.name for p in (tmp_path / "a/train/images").iterdir()):
        assert (tmp_path / "a/train/images" / name).read_bytes() == (
            tmp_path / "b/train/images" / name
        ).read_bytes()
    assert (tmp_path / "b/list/train.txt").read_text().split()[:2] == (
        tmp_path / "a/list/train.txt"
    ).read_text().split()


def test_knobs_are_validated():
    with pytest.raises(ValueError, match="unsupported synthetic items"):
        SyntheticMHPGenerator(accessories=["helmet"])
    with pytest.raises(ValueError, match="max_persons"):
        SyntheticMHPGenerator(min_persons=3, max_persons=2)
    single = SyntheticMHPGenerator(
        size=64, min_persons=1, max_persons=1, accessories=[], upper_clothes=["dress"]
    )
    sample = single.render(0, "train", 0)
    assert len(sample["parsing"]) == 1 and 35 in sample["parsing"] and 17 not in sample["parsing"]


def test_cli_writes_a_tree_the_reader_reads(tmp_path):
    root = tmp_path / "syn"
    command = [
        sys.executable,
        "-m",
        "smp_parsing.data.synthetic",
        "--root",
        str(root),
        "--num-train",
        "3",
        "--num-val",
        "2",
        "--size",
        "64",
        "--seed",
        "7",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    assert "wrote 5 images" in result.stdout and is_generated(root)
    dataset = MHPv2Dataset(root, split="val")
    assert dataset.image_ids == ["500001", "500002"]
    generator = SyntheticMHPGenerator(size=64)
    for index in range(2):
        item, expected = dataset[index], generator.render(7, "val", index)
        np.testing.assert_array_equal(item["parsing"], expected["parsing"])
        np.testing.assert_array_equal(item["keypoints"], expected["keypoints"])
        assert (
            np.abs(item["image"].astype(int) - expected["image"]).mean() < 12
        )  # JPEG of a noisy 64 px image
    # Real-MHP-like PNGs: G and B differ from the ids in R.
    from PIL import Image

    png = next((root / "val/parsing_annos").iterdir())
    rgb = np.asarray(Image.open(png))
    assert (
        rgb.shape[2] == 3
        and (rgb[..., 1] != rgb[..., 0]).any()
        and (rgb[..., 2] != rgb[..., 0]).any()
    )


def test_flip_pairs_cover_the_generated_sided_classes():
    pairs = {frozenset(p) for p in MHP_V2_FLIP_PAIRS}
    assert all(frozenset(ids) in pairs for ids in SIDED.values())


def _interrupt_after(monkeypatch, calls: int) -> None:
    """Make the generator's ``calls + 1``-th sample write fail, as a run killed mid-generation."""
    write_sample = SyntheticMHPGenerator.write_sample
    count = {"n": 0}

    def failing(self, *args, **kwargs):
        count["n"] += 1
        if count["n"] > calls:
            raise KeyboardInterrupt("interrupted mid-generation")
        return write_sample(self, *args, **kwargs)

    monkeypatch.setattr(SyntheticMHPGenerator, "write_sample", failing)


def test_interrupted_generation_leaves_nothing_and_a_rerun_starts_over(tmp_path, monkeypatch):
    generator = SyntheticMHPGenerator(size=64, write_pose=False)
    root = tmp_path / "syn"
    _interrupt_after(monkeypatch, 2)  # two train images written, then the interruption
    with pytest.raises(KeyboardInterrupt):
        generator.generate(root, num_train=3, num_val=1, extra_files={"stamp.json": "{}"})
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no half tree, no partial folder
    monkeypatch.undo()
    generator.generate(root, num_train=3, num_val=1, extra_files={"stamp.json": "{}"})
    assert is_generated(root) and (root / "stamp.json").read_text() == "{}"
    assert sorted(p.name for p in (root / "train/images").iterdir()) == ["1.jpg", "2.jpg", "3.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn"]


def test_partial_tree_of_a_killed_process_is_removed_by_the_next_run(tmp_path):
    import socket

    from smp_parsing.data.synthetic import remove_stale_partials

    root = tmp_path / "syn"
    host = socket.gethostname()
    dead = tmp_path / f".syn.partial-{host}-{2**22 + 12345}"  # above pid_max: never alive
    (dead / "train/images").mkdir(parents=True)
    alive = tmp_path / f".syn.partial-{host}-1"  # pid 1 runs: another generation, left alone
    other_host = tmp_path / ".syn.partial-elsewhere-999999"
    alive.mkdir()
    other_host.mkdir()
    assert remove_stale_partials(root) == [dead]
    SyntheticMHPGenerator(size=64, write_pose=False).generate(root, num_train=1, num_val=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [alive.name, other_host.name, "syn"]
    )


def test_generating_over_an_earlier_tree_replaces_its_splits(tmp_path):
    generator = SyntheticMHPGenerator(size=64, write_pose=False)
    root = tmp_path / "syn"
    generator.generate(root, num_train=3, num_val=1)
    (root / "keep.txt").write_text("a file of the user")
    generator.generate(root, num_train=1, num_val=1, extra_files={"stamp.json": "{}"})
    assert sorted(p.name for p in (root / "train/images").iterdir()) == ["1.jpg"]
    assert sorted(p.name for p in root.iterdir()) == [
        "keep.txt",
        "list",
        "stamp.json",
        "train",
        "val",
    ]
    assert (root / "list/train.txt").read_text() == "1\n"
