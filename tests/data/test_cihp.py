"""CIHPDataset against tiny trees written in the two real CIHP layouts; label space; tools."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from smp_parsing.data.cihp import CIHPDataset
from smp_parsing.data.errors import BadSampleError, DataRootError
from smp_parsing.data.transforms import HorizontalFlipWithClassSwap, ParsingTransforms
from smp_parsing.metadata import CIHP, get_dataset_meta

from .builders import random_image, save_label_png, write_cihp_coco, write_cihp_official

H, W = 24, 32


def official_maps() -> tuple[np.ndarray, np.ndarray]:
    """Category / Human_ids of one image: persons 1, 3, 5 (gaps 2, 4), edge cases on purpose.

    Person 1 touches the left and top borders; person 3 has left/right classes; person 5's
    pixels are all class 0 (dropped); a labelled patch with human id 0 belongs to no person.
    """
    category = np.zeros((H, W), np.uint8)
    human = np.zeros((H, W), np.uint8)
    category[0:10, 0:6] = 2  # hair, at the border
    category[10:20, 0:6] = 14  # left-arm
    human[0:20, 0:6] = 1
    category[2:12, 10:20] = 5  # upper clothes
    category[12:20, 10:14] = 16  # left-leg
    category[12:20, 16:20] = 17  # right-leg
    category[20:22, 16:20] = 19  # right-shoe
    human[2:22, 10:20] = 3
    human[5:8, 24:28] = 5  # person 5: no part pixel
    category[0:3, 28:32] = 13  # face pixels of no person (human id 0)
    return category, human


def expected_persons(category: np.ndarray, human: np.ndarray, ids: list[int]) -> np.ndarray:
    return np.stack([np.where(human == k, category, 0) for k in ids]).astype(np.uint8)


@pytest.fixture
def official(tmp_path):
    category, human = official_maps()
    samples = [
        {"image_id": "0000007", "image": random_image(H, W, 1), "category": category,
         "human": human, "label_mode": "P", "image_format": "png"},
        {"image_id": "0000002", "image": random_image(H, W, 2),
         "category": np.zeros((H, W), np.uint8), "human": np.zeros((H, W), np.uint8)},
        {"image_id": "0000011", "image": random_image(H, W, 3), "category": category,
         "human": np.where(human == 3, 1, 0).astype(np.uint8)},
    ]  # fmt: skip
    root = tmp_path / "instance-level_human_parsing"
    write_cihp_official(root, samples, "train")
    write_cihp_official(root, samples[1:2], "val")
    return root, category, human


def test_label_space_is_cihps_20_classes():
    meta = get_dataset_meta("cihp")
    assert meta is CIHP and meta.num_classes == 20
    assert meta.classes[:6] == ("Background", "Hat", "Hair", "Glove", "Sunglasses", "UpperClothes")
    assert meta.classes[13:] == ("Face", "Left-arm", "Right-arm", "Left-leg", "Right-leg",
                                 "Left-shoe", "Right-shoe")  # fmt: skip
    lut = meta.flip_lut()
    assert list(lut[14:]) == [15, 14, 17, 16, 19, 18] and list(lut[:14]) == list(range(14))


def test_official_persons_by_human_id_with_gaps_from_palette_indices(official):
    root, category, human = official
    path = root / "Training" / "Category_ids" / "0000007.png"
    with Image.open(path) as stored:  # the palette colours are not the ids: reading them fails
        assert stored.mode == "P"
        assert not np.array_equal(np.asarray(stored.convert("L")), category)
    dataset = CIHPDataset(root, split="train", layout="official")
    assert dataset.image_ids == ["0000007", "0000002", "0000011"]  # id list order
    item = dataset[0]
    assert item["image_id"] == "0000007" and item["image"].shape == (H, W, 3)
    np.testing.assert_array_equal(item["image"], random_image(H, W, 1))  # lossless PNG image
    assert item["parsing"].dtype == np.uint8
    # persons 1 and 3 in id order; 5 (no part pixel) dropped; id-0 face pixels in no person
    np.testing.assert_array_equal(item["parsing"], expected_persons(category, human, [1, 3]))
    assert item["parsing"][0, 0, 0] == 2 and item["parsing"][0, :, 0].any()  # border kept
    assert not item["parsing"][:, 0:3, 28:32].any()


def test_official_all_background_person_dropped_with_debug_log(official, caplog):
    root, _, _ = official
    with caplog.at_level(logging.DEBUG, logger="smp_parsing.data.cihp"):
        CIHPDataset(root).load_sample(0)
    assert "0000007" in caplog.text and "human id 5" in caplog.text


def test_official_image_without_person_and_val_split(official):
    root, category, human = official
    assert CIHPDataset(root)[1]["parsing"].shape == (0, H, W)
    val = CIHPDataset(root, split="val")
    assert val.image_ids == ["0000002"] and val[0]["parsing"].shape == (0, H, W)
    one = CIHPDataset(root)[2]["parsing"]  # grey PNGs, one person
    np.testing.assert_array_equal(one, expected_persons(category, human, [3]))
    assert len(CIHPDataset(root, limit=2)) == 2


def test_flipped_sample_mirrors_pixels_and_swaps_left_right(official):
    root, category, human = official
    transforms = ParsingTransforms(
        "cihp", flip=HorizontalFlipWithClassSwap("cihp", p=1.0), pad_divisor=1
    )
    out = CIHPDataset(root, transforms=transforms)[0]
    assert out["meta"]["flipped"] and out["meta"]["dataset"] == "cihp"
    image = random_image(H, W, 1)
    torch.testing.assert_close(
        out["image"], torch.from_numpy(image[:, ::-1].transpose(2, 0, 1).astype(np.float32))
    )
    persons = expected_persons(category, human, [1, 3])[:, :, ::-1]
    swapped = persons.copy()
    for a, b in ((14, 15), (16, 17), (18, 19)):
        swapped[persons == a], swapped[persons == b] = b, a
    np.testing.assert_array_equal(out["parsing"].numpy(), swapped)
    # the border person is at the right border now, its left arm a right arm; the left leg at
    # column 12 is a right leg at column W - 1 - 12
    assert out["parsing"][0, 15, W - 1] == 15 and out["parsing"][1, 15, W - 1 - 12] == 17


@pytest.fixture
def coco(tmp_path):
    root = tmp_path / "CIHP"
    a, b, c = (np.zeros((H, W), np.uint8) for _ in range(3))
    a[0:12, 0:8] = 13  # touches the border
    a[12:24, 0:8] = 9
    b[4:20, 12:20] = 14
    b[4:20, 20:24] = 15
    c[0:24, 24:32] = 5  # a crowd region
    samples = [
        {"id": 40, "file_name": "0000040.jpg", "image": random_image(H, W, 4),
         "persons": [{"parsing": b, "id": 9, "label_mode": "P"}, {"parsing": c, "id": 2, "iscrowd": 1},
                     {"parsing": a, "id": 3}]},
        {"id": 5, "file_name": "0000005.jpg", "image": random_image(H, W, 5), "persons": []},
        {"id": 6, "file_name": "0000006.jpg", "image": random_image(H, W, 6),
         "persons": [{"parsing": np.zeros((H, W), np.uint8), "id": 4}, {"parsing": b, "id": 5}]},
    ]  # fmt: skip
    write_cihp_coco(root, samples, "train")
    write_cihp_coco(root, samples[1:2], "val")
    return root, a, b


def test_coco_persons_in_annotation_id_order_without_crowd(coco):
    root, a, b = coco
    dataset = CIHPDataset(root, split="train", layout="coco")
    assert dataset.image_ids == ["0000040", "0000005", "0000006"]  # json images order, stems
    item = dataset[0]
    # annotation 3 (a) before 9 (b, palette PNG); the crowd annotation 2 left out
    np.testing.assert_array_equal(item["parsing"], np.stack([a, b]))
    assert dataset[1]["parsing"].shape == (0, H, W)  # no annotation, no person
    np.testing.assert_array_equal(dataset[2]["parsing"], b[None])  # all-zero person dropped
    assert CIHPDataset(root, split="val", layout="coco").image_ids == ["0000005"]


def test_coco_paths_overridable(coco, tmp_path):
    root, _, _ = coco
    moved = tmp_path / "elsewhere"
    (root / "train_parsing").rename(moved)
    dataset = CIHPDataset(root, layout="coco", parsing_dir=moved)
    assert len(dataset[0]["parsing"]) == 2


def _official_bad(root, name, sample_index=0):
    """Each bad input of the official layout, applied to the tree; returns the expected file."""
    folder = root / "Training"
    image_id = ["0000007", "0000002", "0000011"][sample_index]
    if name == "rgb_label":
        category, _ = official_maps()
        path = folder / "Category_ids" / f"{image_id}.png"
        save_label_png(path, category, "RGB")
        return path, "RGB"
    if name == "size":
        path = folder / "Human_ids" / f"{image_id}.png"
        save_label_png(path, np.zeros((H + 1, W), np.uint8))
        return path, "differs from image"
    if name == "class_range":
        path = folder / "Category_ids" / f"{image_id}.png"
        save_label_png(path, np.full((H, W), 20, np.uint8))
        return path, "class id 20 out of range 0..19"
    if name == "corrupt_image":
        path = folder / "Images" / f"{image_id}.png"
        path.write_bytes(b"not a png")
        return path, "cannot read image"
    if name == "fifo_label":
        path = folder / "Human_ids" / f"{image_id}.png"
        path.unlink()
        os.mkfifo(path)
        return path, "FIFO, not a regular file"
    if name == "bomb_label":  # a 10000 x 10000 header in a few hundred bytes
        path = folder / "Category_ids" / f"{image_id}.png"
        Image.new("L", (10000, 10000)).save(path)
        return path, "over the limit"
    if name == "corrupt_label":
        path = folder / "Human_ids" / f"{image_id}.png"
        path.write_bytes(b"\x89PNG broken")
        return path, "cannot read label file"
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["rgb_label", "size", "class_range", "corrupt_image",
                                  "corrupt_label", "fifo_label", "bomb_label"])  # fmt: skip
def test_official_bad_sample_error_names_file_or_skips(official, name, caplog):
    root, _, _ = official
    path, problem = _official_bad(root, name)
    with pytest.raises(BadSampleError, match=problem) as info:
        CIHPDataset(root, max_image_pixels=H * W * 4)[0]
    assert info.value.path == path
    skipping = CIHPDataset(root, on_bad_sample="skip")
    with caplog.at_level(logging.WARNING):
        assert skipping[0] is None
    assert skipping.tracker.num_skipped == 1 and path.name in caplog.text
    assert skipping[1] is not None  # the other samples are read


def test_official_listed_id_without_image_or_label_file(official):
    root, _, _ = official
    (root / "Training" / "Human_ids" / "0000011.png").unlink()
    with pytest.raises(BadSampleError, match="label file of listed id '0000011'") as info:
        CIHPDataset(root)
    assert info.value.path == root / "Training" / "Human_ids" / "0000011.png"
    with (root / "Training" / "train_id.txt").open("a") as f:
        f.write("0000099\n")
    dataset = CIHPDataset(root, on_bad_sample="skip")
    assert dataset.image_ids == ["0000007", "0000002"] and dataset.tracker.num_skipped == 2
    assert "no image for it" in str(dataset.tracker.problems[1])


def test_missing_root_list_or_layout(tmp_path, official):
    root, _, _ = official
    with pytest.raises(DataRootError, match="official"):
        CIHPDataset(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split"):
        CIHPDataset(root, split="test")
    (root / "Validation" / "val_id.txt").unlink()
    with pytest.raises(DataRootError, match="val_id.txt"):
        CIHPDataset(root, split="val")
    with pytest.raises(DataRootError, match="CIHP_train.json"):
        CIHPDataset(root, layout="coco")
    with pytest.raises(ValueError, match="layout"):
        CIHPDataset(root, layout="lip")


def test_coco_bad_inputs(coco, caplog):
    root, _, _ = coco
    ann_file = root / "annotations" / "CIHP_train.json"
    content = json.loads(ann_file.read_text())
    # an RGB person PNG, then a missing one, then a json size that is not the image's
    rgb = root / "train_parsing" / "0000040_01.png"
    save_label_png(rgb, np.ones((H, W), np.uint8), "RGB")
    with pytest.raises(BadSampleError, match="RGB") as info:
        CIHPDataset(root, layout="coco")[0]
    assert info.value.path == rgb
    rgb.unlink()
    with pytest.raises(BadSampleError, match="missing") as info:
        CIHPDataset(root, layout="coco")[0]
    assert info.value.path == rgb
    save_label_png(root / "train_parsing" / "0000006_02.png", np.full((H, W), 30, np.uint8))
    with pytest.raises(BadSampleError, match="class id 30"):
        CIHPDataset(root, layout="coco")[2]
    content["images"][1]["height"] = H + 2
    content["annotations"].append({"id": 77, "image_id": 123, "parsing": "x.png", "iscrowd": 0})
    content["annotations"].append({"id": 78, "image_id": 6, "iscrowd": 0})
    ann_file.write_text(json.dumps(content))
    with pytest.raises(BadSampleError, match="image_id 123") as info:
        CIHPDataset(root, layout="coco")
    assert info.value.path == ann_file
    dataset = CIHPDataset(root, layout="coco", on_bad_sample="skip")
    assert dataset.tracker.num_skipped == 1  # the annotation of an image not in the json
    with pytest.raises(BadSampleError, match="differs from 32x26"):
        dataset.load_sample(1)
    assert dataset[1] is None and dataset.tracker.num_skipped == 2
    # a person without a PNG name: the whole image is bad (its GT would miss a person)
    with pytest.raises(BadSampleError, match="annotation 78 of image 6: parsing None is not a"):
        dataset.load_sample(2)
    content["annotations"][-1]["parsing"] = "../../train_img/0000005.jpg"
    ann_file.write_text(json.dumps(content))
    with pytest.raises(BadSampleError, match="climbs out of the image root: refused"):
        CIHPDataset(root, layout="coco", on_bad_sample="skip").load_sample(2)
    ann_file.write_text("{not json")
    with pytest.raises(BadSampleError, match="cannot read the CIHP json"):
        CIHPDataset(root, layout="coco")


@pytest.mark.parametrize("layout", ["official", "coco"])
def test_synthetic_generator_writes_both_layouts_the_reader_reads(layout, tmp_path):
    from smp_parsing.data.mhp import MHP_V2_CLASSES
    from smp_parsing.data.synthetic_cihp import MHP_TO_CIHP, SyntheticCIHPGenerator

    generator = SyntheticCIHPGenerator(layout=layout, size=64, max_persons=3)
    generator.generate(tmp_path, num_train=2, num_val=1, seed=3)
    for split, count in (("train", 2), ("val", 1)):
        dataset = CIHPDataset(tmp_path, split=split, layout=layout)
        assert len(dataset) == count
        for index in range(count):
            item, drawn = dataset[index], generator.render(3, split, index)
            mapped = MHP_TO_CIHP[drawn["parsing"]]
            np.testing.assert_array_equal(item["parsing"], mapped[mapped.any(axis=(1, 2))])
            assert item["parsing"].max() < 20 and len(item["parsing"])
    # hands belong to the arm of their side, as in CIHP
    assert MHP_TO_CIHP[MHP_V2_CLASSES.index("left-hand")] == CIHP.classes.index("Left-arm")
    assert MHP_TO_CIHP[MHP_V2_CLASSES.index("right-shoe")] == CIHP.classes.index("Right-shoe")


def test_cihp_experiment_trains_two_steps_on_synthetic_cihp(tmp_path):
    from conftest import (
        TINY_DATA_COMMON,
        TINY_NET_OVERRIDES,
        TINY_TRAINER_OVERRIDES,
        compose_config,
    )
    from smp_parsing.train import train

    from .builders import write_synthetic_cihp

    root = write_synthetic_cihp(tmp_path / "CIHP", "coco")
    overrides = [
        "experiment=cihp_r101_dcn",
        *TINY_NET_OVERRIDES,
        f"data.data_dir={root}",
        "data.train_dataset.layout=coco",
        *TINY_DATA_COMMON,
        *TINY_TRAINER_OVERRIDES,
        "stage=main",  # two steps of the main stage (the MIR stage after it: tests/test_train.py)
    ]  # fmt: skip  (the experiment's MIR stage is tested with MHP)
    cfg = compose_config("train", overrides, tmp_path / "run")
    assert cfg.data.val_dataset.layout == "coco" and cfg.model.net.num_classes == 20
    assert list(cfg.model.net.backbone.dcn_stages) == [False, True, True, True]
    metric_dict, objects = train(cfg)
    assert objects["trainer"].global_step == 2
    assert objects["model"].net.num_classes == 20
    assert torch.isfinite(torch.as_tensor(metric_dict["train/loss"]))
    assert "val/APp50" in metric_dict and "val/mIoU" in metric_dict


def test_check_scans_both_layouts(official, coco, capsys):
    from smp_parsing.data.check import main

    root, _, _ = official
    assert main(["--dataset", "cihp", "--root", str(root), "--split", "train"]) == 0
    out = capsys.readouterr().out
    # 3 images; persons 2 + 0 + 1
    assert "cihp (CIHPDataset)" in out and "Right-shoe" in out
    assert "│ 3 " in out and "0 / 1.00 / 2" in out
    coco_root, _, _ = coco
    save_label_png(coco_root / "train_parsing" / "0000040_01.png", np.ones((H, W)), "RGB")
    argv = ["--dataset", "cihp", "--root", str(coco_root), "--split", "train", "--layout", "coco"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "0000040_01.png: label file is RGB" in out and "1 problem(s)" in out
    assert main(["--dataset", "cihp", "--root", str(coco_root), "--split", "test"]) == 1
    assert "split must be one of" in capsys.readouterr().out


def test_evaluate_dirs_scores_cihp_in_both_layouts(official, coco, tmp_path):
    from smp_parsing.metrics.evaluate_dirs import (
        PredictionDirError,
        evaluate_dirs,
        main,
        write_prediction_dir,
    )

    root, _, _ = official
    gt = CIHPDataset(root)
    perfect, mirrored = tmp_path / "perfect", tmp_path / "mirrored"
    lut = CIHP.flip_lut()
    for index, image_id in enumerate(gt.image_ids):
        persons = gt[index]["parsing"]
        write_prediction_dir(perfect, image_id, persons, np.ones(len(persons)))
        write_prediction_dir(mirrored, image_id, lut[persons], np.ones(len(persons)))
    metrics = evaluate_dirs(root, "train", perfect, dataset_name="cihp")
    assert metrics["APp50"] == pytest.approx(1.0) and metrics["mIoU"] == pytest.approx(1.0)
    # left/right swapped: the same persons, wrong sides
    assert evaluate_dirs(root, "train", mirrored, dataset_name="cihp")["mIoU"] < 0.9
    coco_root, a, b = coco
    coco_pred = tmp_path / "coco_pred"
    write_prediction_dir(coco_pred, "0000040", np.stack([b, a]), [0.9, 0.8])
    out = tmp_path / "metrics.json"
    argv = ["--dataset", "cihp", "--layout", "coco", "--gt-root", str(coco_root), "--split",
            "train", "--pred-dir", str(coco_pred), "--out", str(out)]  # fmt: skip
    metrics = main(argv)
    report = json.loads(out.read_text())
    assert report["dataset"] == "cihp" and report["num_classes"] == 20
    assert 0.0 < metrics["APp50"] < 1.0  # image 0000006's person is missed
    write_prediction_dir(coco_pred, "0000040", np.full((1, H, W), 20, np.uint8), [0.5])
    with pytest.raises(PredictionDirError, match="outside 0..19"):
        main(argv)


def test_coco_image_entries_and_crowd_without_png(coco):
    root, _, _ = coco
    ann_file = root / "annotations" / "CIHP_train.json"
    content = json.loads(ann_file.read_text())
    crowd = next(a for a in content["annotations"] if a["iscrowd"])
    del crowd["parsing"]  # a crowd region is left out before its PNG matters
    content["images"].append({"id": 6, "file_name": "again.jpg", "height": H, "width": W})
    content["images"].append({"id": 8, "file_name": "0000008.jpg"})  # no size
    content["images"].append({"id": 9, "file_name": "0000009.jpg", "height": H, "width": W})
    content["images"].append({"id": 10, "file_name": "/etc/passwd", "height": H, "width": W})
    content["annotations"].append("not an annotation")
    ann_file.write_text(json.dumps(content))
    with pytest.raises(BadSampleError, match="image id 6 is repeated"):
        CIHPDataset(root, layout="coco")
    dataset = CIHPDataset(root, layout="coco", on_bad_sample="skip")
    problems = [e.problem for e in dataset.tracker.problems]
    assert len(problems) == 4 and "malformed" in problems[1] and "not an object" in problems[3]
    assert "image 10: file_name '/etc/passwd' is absolute" in problems[2]
    assert dataset.image_ids == ["0000040", "0000005", "0000006", "0000009"]
    assert len(dataset[0]["parsing"]) == 2
    with pytest.raises(BadSampleError, match="missing") as info:  # 0000009.jpg was never written
        dataset.load_sample(3)
    assert info.value.path == root / "train_img" / "0000009.jpg"


def test_image_sizes_without_decoding(official, coco):
    root, _, _ = official
    sizes = CIHPDataset(root).read_image_sizes()
    np.testing.assert_array_equal(sizes, [[H, W]] * 3)
    coco_root, _, _ = coco
    ann_file = coco_root / "annotations" / "CIHP_train.json"
    content = json.loads(ann_file.read_text())
    content["images"][0]["height"], content["images"][0]["width"] = 50, 20
    ann_file.write_text(json.dumps(content))
    np.testing.assert_array_equal(
        CIHPDataset(coco_root, layout="coco").read_image_sizes(), [[50, 20], [H, W], [H, W]]
    )  # from the json, the image files are not opened


def test_datamodule_checks_the_cihp_layout_files(official, tmp_path):
    from hydra.utils import instantiate

    from conftest import compose_config

    root, _, _ = official
    cfg = compose_config("train", ["data=cihp", f"data.data_dir={root}"], tmp_path)
    instantiate(cfg.data).prepare_data()  # both official splits are there
    cfg = compose_config("train", ["data=cihp", f"data.data_dir={root}",
                                   "data.train_dataset.layout=coco"], tmp_path)  # fmt: skip
    assert cfg.data.val_dataset.layout == "coco"
    with pytest.raises(DataRootError, match=r"CIHP_train.json.*\n.*two layouts"):
        instantiate(cfg.data).prepare_data()


def test_synthetic_cihp_cli(tmp_path, capsys):
    from smp_parsing.data.synthetic_cihp import main

    main(["--root", str(tmp_path), "--layout", "coco", "--num-train", "1", "--num-val", "1",
          "--size", "64"])  # fmt: skip
    assert "coco layout" in capsys.readouterr().out
    content = json.loads((tmp_path / "annotations" / "CIHP_val.json").read_text())
    assert [i["file_name"] for i in content["images"]] == ["0500001.jpg"]
    ids = [a["id"] for a in content["annotations"]]
    assert ids == list(range(1, len(ids) + 1)) and ids
    assert len(CIHPDataset(tmp_path, "val", "coco")[0]["parsing"]) == len(ids)


def test_synthetic_cihp_generation_replaces_the_tree_atomically(tmp_path):
    from smp_parsing.data.synthetic_cihp import SyntheticCIHPGenerator

    root = tmp_path / "CIHP"
    generator = SyntheticCIHPGenerator(layout="coco", size=64, max_persons=3)
    generator.generate(root, num_train=3, num_val=1)
    generator.generate(root, num_train=1, num_val=1)
    assert sorted(p.name for p in (root / "train_img").iterdir()) == ["0000001.jpg"]
    assert all(p.name.startswith("0000001_") for p in (root / "train_parsing").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CIHP"]  # no partial tree left
    assert len(CIHPDataset(root, layout="coco")) == 1
