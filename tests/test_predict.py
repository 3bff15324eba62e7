"""``smp_parsing.predict``: MHP-layout person PNGs + scores.json + overlays, scorable offline.

The end-to-end check of the framework: the tiny run of ``trained_run`` (train) is evaluated
(``evaluate``) and run on the val images (``predict``); scoring the prediction folder with
``smp_parsing.metrics.evaluate_dirs`` must give exactly the metrics ``evaluate`` reported.
"""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest
import torch

from conftest import LOW_THRESHOLDS, compose_config, tiny_data_overrides
from smp_parsing.evaluate import evaluate
from smp_parsing.metrics.evaluate_dirs import evaluate_dirs
from smp_parsing.predict import list_images, predict

PERSON_FILE = re.compile(r"^(?P<id>.+)_(?P<nn>\d{2})_(?P<kk>\d{2})\.png$")


def test_train_evaluate_predict_agree(trained_run, synthetic_root, tmp_path) -> None:
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    common = [f"ckpt_path={ckpt}", *tiny_data_overrides(synthetic_root), *LOW_THRESHOLDS,
              "extras.print_config=false"]  # fmt: skip
    # batch of one on both sides: the network sees the same padded inputs
    cfg = compose_config("eval", [*common, "split=val", "data.eval_batch_size=1"], tmp_path / "ev")
    metric_dict, _ = evaluate(cfg)

    images = synthetic_root / "val" / "images"
    out = tmp_path / "pred"
    cfg = compose_config("predict", [*common, f"input={images}", f"output={out}"], tmp_path / "pr")
    result, _ = predict(cfg)
    ids = sorted(p.stem for p in images.iterdir())
    assert result["num_images"] == len(ids) and result["num_persons"] > 0

    # MHP layout: <id>_<NN>_<kk>.png, NN = persons of the image, kk = 1..NN; class id in R
    scores = json.loads((out / "scores.json").read_text())
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) == result["num_persons"] == len(scores)
    for name in pngs:
        m = PERSON_FILE.match(name)
        assert m and m["id"] in ids and 1 <= int(m["kk"]) <= int(m["nn"])
        png = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        image = cv2.imread(str(images / f"{m['id']}.jpg"))
        assert png.shape[:2] == image.shape[:2]  # original image size
    overlays = sorted(p.stem for p in (out / "overlays").glob("*.png"))
    assert overlays == ids
    overlay = cv2.imread(str(out / "overlays" / f"{ids[0]}.png"))
    assert overlay.shape[1] > cv2.imread(str(images / f"{ids[0]}.jpg")).shape[1]  # + legend

    scored = evaluate_dirs(synthetic_root, "val", out, num_classes=59)
    for key in ("APp50", "APpvol", "PCP50", "mIoU"):
        assert scored[key] == pytest.approx(metric_dict[f"val/{key}"], abs=1e-6), key


def test_predict_from_the_checkpoint_alone_writes_the_same_person_maps(trained_run, synthetic_root,
                                                                       tmp_path) -> None:  # fmt: skip
    """No ``experiment=``/``data=``: the checkpoint's test transform (64 px here, not the synthetic
    preset's 320 px) gives byte-identical person maps and scores; another label space is refused."""
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    images = synthetic_root / "val" / "images"
    common = [f"ckpt_path={ckpt}", f"input={images}", *LOW_THRESHOLDS, "overlays=false",
              "extras.print_config=false"]  # fmt: skip
    outputs = {}
    for name, data in (("explicit", tiny_data_overrides(synthetic_root)), ("alone", [])):
        out = tmp_path / name / "pred"
        cfg = compose_config("predict", [*common, *data, f"output={out}"], tmp_path / name)
        result, _ = predict(cfg)
        assert result["num_persons"] > 0
        outputs[name] = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert outputs["alone"] == outputs["explicit"]
    # an explicit override wins: another test size gives other maps
    out = tmp_path / "larger" / "pred"
    cfg = compose_config("predict", [*common, "data.test_transforms.resize.short_sides=[96]",
                                     f"output={out}"], tmp_path / "larger")  # fmt: skip
    predict(cfg)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} != outputs["alone"]
    cfg = compose_config("predict", [*common, "data=densepose", f"output={tmp_path}/dp"],
                         tmp_path / "dp")  # fmt: skip
    with pytest.raises(ValueError, match="predicts 59 classes .* 'densepose' has 15"):
        predict(cfg)


def test_predict_input_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no such image or folder"):
        list_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image"):
        list_images(tmp_path / "empty")
    (tmp_path / "b.png").write_bytes(b"x")
    (tmp_path / "a.JPG").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png"]
    from smp_parsing.predict import ImageFiles

    with pytest.raises(ValueError, match="b.png: cannot read image"):
        ImageFiles([tmp_path / "b.png"], transforms=None)[0]


@pytest.mark.slow
def test_evaluate_and_predict_command_lines(trained_run, synthetic_root, tmp_path) -> None:
    """The ``python -m`` entry points exactly as a user types them (Hydra's own main)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    data = tiny_data_overrides(synthetic_root)
    image = next((synthetic_root / "val" / "images").iterdir())

    def run(module: str, *args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    out = run("smp_parsing.evaluate", f"ckpt_path={ckpt}", *data, f"hydra.run.dir={tmp_path}/ev")
    assert "APp50" in out and (tmp_path / "ev" / "metrics.json").is_file()
    # the checkpoint alone (its stored test transform), as a user types it after training
    out = run("smp_parsing.predict", f"ckpt_path={ckpt}", f"input={image}",
              f"output={tmp_path}/pred", f"hydra.run.dir={tmp_path}/pr")  # fmt: skip
    assert f"Predictions: {tmp_path}/pred" in out
    assert (tmp_path / "pred" / "scores.json").is_file()
    assert (tmp_path / "pred" / "overlays" / f"{image.stem}.png").is_file()
    assert "resize {'_target_': 'smp_parsing.data.transforms.RandomShortSideResize', " \
           "'short_sides': [64]" in (tmp_path / "pr" / "predict.log").read_text()  # fmt: skip


def test_predict_runs_lightnings_predict_loop_and_writer(trained_run, synthetic_root, tmp_path,
                                                         monkeypatch) -> None:  # fmt: skip
    """``predict`` = ``Trainer.predict`` (``predict_step``) + the prediction writer; the folder
    holds exactly the module's predictions image by image, whatever the batch size."""
    import hydra
    import numpy as np

    from smp_parsing.data.collate import collate_parsing
    from smp_parsing.data.image_files import read_image
    from smp_parsing.lit_module import SMPLitModule
    from smp_parsing.metrics.evaluate_dirs import write_prediction_dir
    from smp_parsing.utils.checkpoint import inference_data_config, read_checkpoint

    steps = []
    real_step = SMPLitModule.predict_step
    monkeypatch.setattr(SMPLitModule, "predict_step",
                        lambda self, batch, i: steps.append(i) or real_step(self, batch, i))  # fmt: skip
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    images = synthetic_root / "val" / "images"
    out = tmp_path / "pred"
    cfg = compose_config("predict", [f"ckpt_path={ckpt}", f"input={images}", f"output={out}",
                                     *LOW_THRESHOLDS, "overlays=false", "batch_size=2",
                                     "extras.print_config=false"], tmp_path / "pr")  # fmt: skip
    result, objects = predict(cfg)
    files = list_images(images)
    assert steps == list(range((len(files) + 1) // 2)) and result["num_persons"] > 0
    # the reference: each image alone through the same (prepared) module, written by hand
    model = objects["model"]
    data_cfg = inference_data_config(read_checkpoint(ckpt), str(ckpt), cfg)
    transforms = hydra.utils.instantiate(data_cfg.test_transforms)
    ref = tmp_path / "ref"
    for file in files:
        rgb = read_image(file, exif_transpose=True)
        sample = transforms({"image": rgb, "parsing": np.zeros((0, *rgb.shape[:2]), np.uint8),
                             "image_id": file.stem})  # fmt: skip
        batch = collate_parsing([sample], pad_parsing=False)
        with torch.no_grad():
            pred = model.predict_images(batch["images"].to(model.device), batch["metas"])[0]
        write_prediction_dir(ref, file.stem, pred["parsing"].cpu(), pred["scores"].cpu())
    read = lambda d: {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}  # noqa: E731
    assert read(out) == read(ref)


def test_predict_turns_an_exif_rotated_photo_upright_and_names_a_pixel_bomb(
    trained_run, synthetic_root, tmp_path
) -> None:
    """A phone photo (pixels stored sideways, EXIF orientation 6) is parsed upright: the maps
    and the overlay have the upright size (``exif_transpose=false``: the stored one); a header
    claiming 81 MP (over 50 MP) is refused before decoding, the error naming the file."""
    from data.builders import write_exif_rotated_jpeg
    from data.hostile_files import png_header_only

    upright = cv2.imread(str(next((synthetic_root / "val" / "images").iterdir())))[..., ::-1]
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # stored turned counter-clockwise
    photos = tmp_path / "photos"
    photos.mkdir()
    write_exif_rotated_jpeg(photos / "phone.jpg", stored)  # turned back clockwise when read
    common = [f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}", f"input={photos}",
              *LOW_THRESHOLDS, "extras.print_config=false"]  # fmt: skip
    for exif, size in ((True, upright.shape[:2]), (False, stored.shape[:2])):
        out = tmp_path / f"pred_{exif}"
        cfg = compose_config("predict", [*common, f"output={out}", f"exif_transpose={exif}"],
                             tmp_path / f"run_{exif}")  # fmt: skip
        predict(cfg)
        overlay = cv2.imread(str(out / "overlays" / "phone.png"))
        assert overlay.shape[0] == size[0], (exif, overlay.shape, size)
        for person in out.glob("phone_*.png"):
            assert cv2.imread(str(person), cv2.IMREAD_UNCHANGED).shape[:2] == size

    (photos / "bomb.png").write_bytes(png_header_only(9_000, 9_000))
    cfg = compose_config("predict", [*common, f"output={tmp_path}/bomb"], tmp_path / "bomb")
    with pytest.raises(
        ValueError, match=r"bomb\.png: image header claims 9000x9000 .* over the limit"
    ):
        predict(cfg)
