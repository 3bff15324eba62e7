"""``python -m smp_parsing.metrics.evaluate_dirs`` on a tiny MHP tree built from the worked example."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from smp_parsing.metrics.evaluate_dirs import (
    _FOLDER_INDEX,
    PredictionDirError,
    evaluate_dirs,
    main,
    read_prediction_dir,
    write_prediction_dir,
)

from .cases import WORKED_AP, WORKED_PCP, worked_example

IMAGE_IDS = ("11", "1", "7")  # "1" is a prefix of "11": file matching must be exact


def _write_gt_tree(root: Path, target: list[dict]) -> Path:
    """MHP v2 layout: list/val.txt, val/images/<id>.jpg, val/parsing_annos/<id>_<NN>_<kk>.png."""
    (root / "list").mkdir(parents=True)
    (root / "list" / "val.txt").write_text("\n".join(IMAGE_IDS) + "\n")
    (root / "val" / "images").mkdir(parents=True)
    (root / "val" / "parsing_annos").mkdir(parents=True)
    for image_id, t in zip(IMAGE_IDS, target):
        Image.fromarray(np.full((10, 10, 3), 128, np.uint8)).save(
            root / "val" / "images" / f"{image_id}.jpg"
        )
        persons = t["parsing"].numpy()
        for k, person in enumerate(persons, start=1):
            rgb = np.zeros((10, 10, 3), np.uint8)
            rgb[..., 0] = person
            rgb[..., 1] = np.where(person > 0, 77, 0)  # G/B differ: a grayscale read would be wrong
            rgb[..., 2] = 200
            name = f"{image_id}_{len(persons):02d}_{k:02d}.png"
            Image.fromarray(rgb).save(root / "val" / "parsing_annos" / name)
    return root


@pytest.fixture
def trees(tmp_path):
    preds, target = worked_example()
    gt_root = _write_gt_tree(tmp_path / "LV-MHP-v2", target)
    pred_dir = tmp_path / "pred"
    for image_id, p in zip(IMAGE_IDS, preds):
        write_prediction_dir(pred_dir, image_id, p["parsing"], p["scores"])
    return gt_root, pred_dir


def test_cli_scores_the_worked_example(trees, capsys):
    gt_root, pred_dir = trees
    out = pred_dir.parent / "report" / "metrics.json"
    metrics = main(
        [
            "--gt-root",
            str(gt_root),
            "--split",
            "val",
            "--pred-dir",
            str(pred_dir),
            "--out",
            str(out),
        ]
    )
    assert [metrics[f"APp@{k / 10:g}"] for k in range(1, 10)] == pytest.approx(WORKED_AP)
    assert [metrics[f"PCP@{k / 10:g}"] for k in range(1, 10)] == pytest.approx(WORKED_PCP)
    assert metrics["APpvol"] == pytest.approx(49 / 108)
    written = json.loads(out.read_text())
    assert written["metrics"] == metrics and written["split"] == "val"
    printed = capsys.readouterr().out
    assert "APpvol" in printed and "45.37" in printed


def test_writer_format_and_rewrite(trees):
    _, pred_dir = trees
    names = sorted(p.name for p in pred_dir.glob("*.png"))
    assert names == ["11_03_01.png", "11_03_02.png", "11_03_03.png", "7_01_01.png"]
    scores = json.loads((pred_dir / "scores.json").read_text())
    # float32 scores are stored exactly (as their double value): in-memory and folder metrics agree
    expected = {"11_03_01.png": 0.9, "11_03_02.png": 0.8, "11_03_03.png": 0.3, "7_01_01.png": 0.5}
    assert scores == {name: float(np.float32(v)) for name, v in expected.items()}
    rgb = np.asarray(Image.open(pred_dir / "11_03_01.png"))
    assert rgb.shape == (10, 10, 3) and rgb[0, 0, 0] == 1
    # Writing an image again replaces its files and scores; other images are untouched.
    write_prediction_dir(pred_dir, "11", torch.ones(1, 10, 10, dtype=torch.uint8), [0.4])
    index = read_prediction_dir(pred_dir)
    assert [(p.name, s) for p, s in index["11"]] == [("11_01_01.png", 0.4)]
    assert [(p.name, s) for p, s in index["7"]] == [("7_01_01.png", 0.5)]
    assert "1" not in index


def test_empty_prediction_folder_scores_zero(tmp_path, trees):
    gt_root, _ = trees
    empty = tmp_path / "empty"
    empty.mkdir()
    metrics = evaluate_dirs(gt_root, "val", empty)
    assert metrics["APp50"] == 0.0 and metrics["PCP50"] == 0.0


def _break(pred_dir: Path, how: str) -> str:
    scores_path = pred_dir / "scores.json"
    scores = json.loads(scores_path.read_text())
    if how == "missing score":
        del scores["7_01_01.png"]
        scores_path.write_text(json.dumps(scores))
        return "7_01_01.png: no score"
    if how == "orphan score":
        scores["7_02_02.png"] = 0.1
        scores_path.write_text(json.dumps(scores))
        return "scores without a PNG"
    if how == "bad score":
        scores["7_01_01.png"] = "high"
        scores_path.write_text(json.dumps(scores))
        return "must be a finite number"
    if how == "bad name":
        (pred_dir / "person.png").write_bytes(b"")
        return "person.png: name does not follow"
    if how == "wrong count":
        (pred_dir / "7_01_01.png").rename(pred_dir / "7_02_01.png")
        scores["7_02_01.png"] = scores.pop("7_01_01.png")
        scores_path.write_text(json.dumps(scores))
        return "persons of image 7 must be"
    if how == "unknown image":
        write_prediction_dir(pred_dir, "999", torch.zeros(1, 10, 10, dtype=torch.uint8), [0.5])
        return "not in split 'val'"
    if how == "wrong size":
        write_prediction_dir(pred_dir, "7", torch.zeros(1, 12, 10, dtype=torch.uint8), [0.5])
        return "7_01_01.png: size 10x12"
    if how == "class out of range":
        write_prediction_dir(pred_dir, "7", torch.full((1, 10, 10), 60, dtype=torch.uint8), [0.5])
        return "7_01_01.png: class id 60 outside 0..58"
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    ["missing score", "orphan score", "bad score", "bad name", "wrong count", "unknown image",
     "wrong size", "class out of range"],
)  # fmt: skip
def test_malformed_prediction_folder_raises_naming_the_problem(trees, how):
    gt_root, pred_dir = trees
    message = _break(pred_dir, how)
    with pytest.raises(PredictionDirError, match=message.replace("(", r"\(")):
        evaluate_dirs(gt_root, "val", pred_dir)


def test_writer_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="2 persons but 1 scores"):
        write_prediction_dir(tmp_path, "1", np.zeros((2, 4, 4), np.uint8), [0.5])
    with pytest.raises(ValueError, match="finite"):
        write_prediction_dir(tmp_path, "1", np.zeros((1, 4, 4), np.uint8), [float("inf")])
    with pytest.raises(ValueError, match="P x H x W"):
        write_prediction_dir(tmp_path, "1", np.zeros((4, 4), np.uint8), [0.5])


def test_writer_appends_many_images_and_rewrites_a_repeated_one(tmp_path):
    rng = np.random.default_rng(0)
    expected = {}
    write_prediction_dir(tmp_path, "empty", np.zeros((0, 4, 4), np.uint8), [])  # "{}" first
    for i in range(12):
        count = int(rng.integers(0, 3))
        scores = rng.random(count)
        write_prediction_dir(tmp_path, f"im{i}", rng.integers(0, 5, (count, 4, 4)), scores)
        expected.update({f"im{i}_{count:02d}_{k + 1:02d}.png": s for k, s in enumerate(scores)})
    assert json.loads((tmp_path / "scores.json").read_text()) == expected
    write_prediction_dir(tmp_path, "im3", np.ones((2, 4, 4), np.uint8), [0.25, 0.75])
    write_prediction_dir(tmp_path, "im3", np.ones((2, 4, 4), np.uint8), [0.5, 0.125])  # same names
    expected = {k: v for k, v in expected.items() if not k.startswith("im3_")}
    expected.update({"im3_02_01.png": 0.5, "im3_02_02.png": 0.125})
    assert json.loads((tmp_path / "scores.json").read_text()) == expected
    index = read_prediction_dir(tmp_path)
    assert [s for _, s in index["im3"]] == [0.5, 0.125]


def test_writer_replaces_files_left_by_an_earlier_process(trees):
    _, pred_dir = trees
    _FOLDER_INDEX.clear()  # as a fresh process: only the directory listing knows the old files
    write_prediction_dir(pred_dir, "11", torch.ones(2, 10, 10, dtype=torch.uint8), [0.6, 0.2])
    names = sorted(p.name for p in pred_dir.glob("11_*.png"))
    assert names == ["11_02_01.png", "11_02_02.png"]
    assert [s for _, s in read_prediction_dir(pred_dir)["11"]] == [0.6, 0.2]


def _torn_open(name_part: str):
    """An ``open`` that, for files whose name contains ``name_part``, writes half the data and
    then fails, as a process killed in the middle of a write would leave the file."""

    def torn(file, mode="r", *args, **kwargs):
        handle = open(file, mode, *args, **kwargs)
        if name_part not in Path(file).name or not any(m in mode for m in "wa+"):
            return handle
        real_write = handle.write

        def write(data):
            real_write(data[: len(data) // 2])
            handle.flush()
            raise KeyboardInterrupt("killed mid-write")

        handle.write = write
        return handle

    return torn


def test_scores_json_survives_a_write_killed_midway(tmp_path, monkeypatch):
    import smp_parsing.metrics.evaluate_dirs as evaluate_dirs_module
    import smp_parsing.utils.run_files as run_files

    for i in range(3):
        write_prediction_dir(tmp_path, f"im{i}", np.ones((2, 4, 4), np.uint8), [0.5, 0.25])
    before = (tmp_path / "scores.json").read_text()
    torn = _torn_open("scores.json")
    monkeypatch.setattr(evaluate_dirs_module, "open", torn, raising=False)
    monkeypatch.setattr(run_files, "open", torn, raising=False)
    with pytest.raises(KeyboardInterrupt):
        write_prediction_dir(tmp_path, "im3", np.ones((1, 4, 4), np.uint8), [0.75])
    monkeypatch.undo()
    # The old table is intact, no temp file is left, and the reader names the torn image.
    assert (tmp_path / "scores.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir() if "tmp" in p.name) == []
    with pytest.raises(PredictionDirError, match=r"im3_01_01.png: no score .* image im3"):
        read_prediction_dir(tmp_path)
    # Writing the image again (a rerun) repairs the folder.
    write_prediction_dir(tmp_path, "im3", np.ones((1, 4, 4), np.uint8), [0.75])
    index = read_prediction_dir(tmp_path)
    assert sorted(index) == ["im0", "im1", "im2", "im3"]
    assert [s for _, s in index["im3"]] == [0.75]


def test_writer_reads_back_what_another_process_wrote(tmp_path):
    write_prediction_dir(tmp_path, "a", np.ones((1, 4, 4), np.uint8), [0.5])
    # Another process adds an image (its own atomic replace); this one's cached table is stale.
    table = json.loads((tmp_path / "scores.json").read_text())
    Image.fromarray(np.ones((4, 4, 3), np.uint8)).save(tmp_path / "b_01_01.png")
    (tmp_path / "other.json").write_text(json.dumps({**table, "b_01_01.png": 0.125}))
    (tmp_path / "other.json").replace(tmp_path / "scores.json")
    write_prediction_dir(tmp_path, "c", np.ones((1, 4, 4), np.uint8), [0.25])
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores == {"a_01_01.png": 0.5, "b_01_01.png": 0.125, "c_01_01.png": 0.25}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("NaN", "NaN is not a finite number"),
        ("-Infinity", "-Infinity is not a finite number"),
        ("1e999", "out of the float64 range"),
        ("-2e308", "out of the float64 range"),
        ("1" + "0" * 5000, "number of 5001 characters"),  # Python's int parser refuses > 4300
        ("0." + "0" * 40 + "1", "number of 43 characters"),
        ("true", "must be a finite number, got True"),
        ('"0.5"', "must be a finite number, got '0.5'"),
    ],
)
def test_hostile_scores_are_a_clear_error(tmp_path, value, problem):
    Image.fromarray(np.ones((4, 4, 3), np.uint8)).save(tmp_path / "a_01_01.png")
    (tmp_path / "scores.json").write_text('{"a_01_01.png": ' + value + "}")
    with pytest.raises(PredictionDirError, match=f"scores.json: .*{problem}"):
        read_prediction_dir(tmp_path)


@pytest.mark.parametrize(
    "image_id", ["../escape", "/tmp/abs", "sub/dir", "back\\slash", "", ".", "..", "new\nline"]
)
def test_writer_refuses_image_ids_that_are_not_plain_file_names(tmp_path, image_id):
    pred_dir = tmp_path / "pred"
    with pytest.raises(ValueError, match="not a plain file name"):
        write_prediction_dir(pred_dir, image_id, np.ones((1, 4, 4), np.uint8), [0.5])
    assert list(tmp_path.rglob("*.png")) == []


def test_metrics_json_survives_a_write_killed_midway(trees, monkeypatch):
    import smp_parsing.utils.run_files as run_files

    gt_root, pred_dir = trees
    out = pred_dir / "metrics.json"
    out.write_text('{"metrics": "from an earlier run"}')
    monkeypatch.setattr(run_files, "open", _torn_open("metrics.json"), raising=False)
    args = ["--gt-root", str(gt_root), "--pred-dir", str(pred_dir), "--out", str(out)]
    with pytest.raises(KeyboardInterrupt):
        main(args)
    assert out.read_text() == '{"metrics": "from an earlier run"}'
    assert [p.name for p in pred_dir.iterdir() if "tmp" in p.name] == []


def test_hostile_prediction_pngs_are_a_clear_error(trees):
    import os

    from tests.data.hostile_files import png_header_only

    gt_root, pred_dir = trees
    path = next(iter(read_prediction_dir(pred_dir)["7"]))[0]
    # Headers that lie about the size: refused from the header, never decoded.
    path.write_bytes(png_header_only(3000, 2000))
    with pytest.raises(PredictionDirError, match=f"{path.name}: size 3000x2000"):
        evaluate_dirs(gt_root, "val", pred_dir)
    path.write_bytes(png_header_only(30000, 30000))
    with pytest.raises(PredictionDirError, match=f"{path.name}: cannot read prediction.*bomb"):
        evaluate_dirs(gt_root, "val", pred_dir)
    path.unlink()
    os.mkfifo(path)  # a FIFO named like a prediction: refused, not read (that would block)
    with pytest.raises(PredictionDirError, match=f"{path.name}: is a FIFO"):
        evaluate_dirs(gt_root, "val", pred_dir)
