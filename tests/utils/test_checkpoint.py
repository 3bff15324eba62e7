"""``utils/checkpoint.py``: checkpoints are data, never code; and they describe their own use."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest
import torch

from conftest import compose_config, tiny_train_overrides
from smp_parsing.utils.checkpoint import (
    INFERENCE_KEY,
    MODEL_CONFIG_KEY,
    CheckpointRefusedError,
    checked_config,
    inference_data_config,
    load_lit_module,
    read_checkpoint,
)


class TouchOnUnpickle:
    """Pickle payload: unpickling it creates ``path`` (what a hostile checkpoint would run)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_pickle_payload_is_refused_and_not_executed(tmp_path) -> None:
    marker = tmp_path / "payload_ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": TouchOnUnpickle(marker)}, evil)
    with pytest.raises(
        CheckpointRefusedError, match=r"evil\.ckpt: refused: it references the Python object"
    ):
        read_checkpoint(evil)
    with pytest.raises(CheckpointRefusedError, match="evil.ckpt: refused"):
        load_lit_module(evil)
    assert not marker.exists()
    # the payload is live: a plain unpickler runs it (what weights_only=False did)
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_unreadable_and_non_lightning_files_are_clear(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        read_checkpoint(tmp_path / "missing.ckpt")
    (tmp_path / "text.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="text.ckpt: not a readable checkpoint"):
        read_checkpoint(tmp_path / "text.ckpt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="no 'state_dict' entry"):
        read_checkpoint(tmp_path / "plain.pt")


GOOD_CONFIG = {
    "_target_": "smp_parsing.lit_module.SMPLitModule",
    "optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3},
    "normalize": {"_target_": "albumentations.Normalize", "mean": [1.0, 2.0, 3.0]},
    "augment": [{"_target_": "smp_parsing.data.transforms.RandomShortSideResize"}],
    "batch_size": 2,
}


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ((), "os.system", "_target_: 'os.system' is not allowed"),
        ((), "builtins.exec", "not allowed"),
        # starts in an allowed package, ends elsewhere
        (
            ("optimizer",),
            "torch.optim.sgd.torch.Tensor",
            "optimizer._target_: .* is the class torch.Tensor, not a class of",
        ),
        (("optimizer",), "smp_parsing.train.torch.Tensor", "not a class of"),
        (("optimizer",), "smp_parsing.train.hydra.utils.instantiate", "not a class of"),
        # a function of the project is a call with arguments of the file's choosing
        (
            ("augment", 0),
            "smp_parsing.utils.run_files.write_json_atomic",
            r"augment\[0\]\._target_",
        ),
        ((), "smp_parsing.lit_module.SMPLitModule.__init__", "not allowed"),
        ((), "smp_parsing.no_such_module.Thing", "cannot be located"),
        ((), 3, "must be a string"),
    ],
)
def test_stored_target_outside_the_allowlist_is_refused(path, value, message) -> None:
    stored = copy.deepcopy(GOOD_CONFIG)
    node = stored
    for key in path:
        node = node[key]
    node["_target_"] = value
    with pytest.raises(
        CheckpointRefusedError, match=rf"run\.ckpt \(smp_model_config\): .*{message}"
    ):
        checked_config(stored, "run.ckpt", MODEL_CONFIG_KEY)


def test_stored_config_with_interpolation_or_objects_is_refused() -> None:
    assert checked_config(copy.deepcopy(GOOD_CONFIG), "run.ckpt", MODEL_CONFIG_KEY).batch_size == 2
    stored = {**copy.deepcopy(GOOD_CONFIG), "batch_size": "${oc.env:HOME}"}
    with pytest.raises(
        CheckpointRefusedError, match=r"run\.ckpt \(x\): batch_size=.* interpolation"
    ):
        checked_config(stored, "run.ckpt", "x")
    stored = copy.deepcopy(GOOD_CONFIG)
    stored["normalize"]["mean"][1] = "${batch_size}"
    with pytest.raises(CheckpointRefusedError, match=r"normalize\.mean\[1\]=.* interpolation"):
        checked_config(stored, "run.ckpt", "x")
    with pytest.raises(CheckpointRefusedError, match=r"lr holds a Tensor"):
        checked_config({**GOOD_CONFIG, "lr": torch.ones(1)}, "run.ckpt", "x")


def test_injected_target_in_a_real_checkpoint_is_refused_before_anything_runs(
    trained_run, tmp_path
) -> None:
    marker = tmp_path / "target_ran"
    ckpt = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt[MODEL_CONFIG_KEY]["net"]["backbone"] = {
        "_target_": "os.system",
        "_args_": [f"touch {marker}"],
    }
    evil = tmp_path / "injected.ckpt"
    torch.save(ckpt, evil)
    with pytest.raises(
        CheckpointRefusedError,
        match=r"injected\.ckpt \(smp_model_config\): net\.backbone\._target_",
    ):
        load_lit_module(evil)
    assert not marker.exists()
    # same for the stored data config, which evaluate/predict instantiate
    ckpt = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt[INFERENCE_KEY]["data_config"]["generator"]["_target_"] = "subprocess.Popen"
    torch.save(ckpt, evil)
    cfg = compose_config("eval", [f"ckpt_path={evil}"], tmp_path / "eval")
    with pytest.raises(CheckpointRefusedError, match=r"data_config\): generator\._target_"):
        inference_data_config(read_checkpoint(evil), evil, cfg, overrides=[])


def test_real_checkpoint_is_plain_data_and_describes_its_inference(
    trained_run, synthetic_root
) -> None:
    ckpt = read_checkpoint(trained_run / "checkpoints" / "last.ckpt")  # weights_only=True
    info = ckpt[INFERENCE_KEY]
    assert info["dataset_name"] == "synthetic" and info["num_classes"] == 59
    assert info["class_names"][:3] == ["background", "cap/hat", "helmet"]
    assert [5, 6] in info["flip_pairs"]
    # the tiny run's test transform, not the synthetic preset's default (320 px)
    assert info["test_transforms"]["short_sides"] == [64]
    assert info["test_transforms"]["max_long_side"] == 96
    assert info["test_transforms"]["mean"] == [123.675, 116.28, 103.53]
    assert info["test_transforms"]["pad_divisor"] == 32
    data = info["data_config"]
    assert Path(data["data_dir"]) == synthetic_root and data["generator"]["size"] == 96
    assert data["num_val"] == 2
    # not under the run's paths.data_dir: kept absolute
    assert info["data_dir_relative"] is None
    assert ckpt[MODEL_CONFIG_KEY]["net"]["num_classes"] == 59


def _fake_checkpoint(tmp_path, data_dir: str, relative: str | None, data: str = "mhp",
                     num_classes: int = 59) -> dict:  # fmt: skip
    """A checkpoint's metadata of a run on ``data`` (no weights: the data config is tested)."""
    from omegaconf import OmegaConf

    run = compose_config("train", [f"data={data}", f"data.data_dir={data_dir}"], tmp_path / "run")
    return {
        "state_dict": {},
        MODEL_CONFIG_KEY: {"net": {"num_classes": num_classes}},
        INFERENCE_KEY: {
            "dataset_name": data,
            "num_classes": num_classes,
            "data_config": OmegaConf.to_container(run.data, resolve=True),
            "data_dir_relative": relative,
        },
    }


def test_data_config_from_checkpoint_overrides_and_class_check(tmp_path, caplog) -> None:
    ckpt = _fake_checkpoint(tmp_path, "/elsewhere/data/LV-MHP-v2", "LV-MHP-v2")
    cfg = compose_config("eval", ["ckpt_path=x.ckpt", "data.eval_batch_size=3"], tmp_path)
    caplog.set_level(logging.INFO, logger="smp_parsing.utils.checkpoint")
    # by default the checkpoint's data set, its directory placed under today's paths.data_dir
    data = inference_data_config(ckpt, "x.ckpt", cfg, overrides=[])
    assert data.dataset_name == "mhp" and data.eval_batch_size == 1
    assert data.data_dir == str(Path(cfg.paths.data_dir) / "LV-MHP-v2")
    # the dataset roots (stored resolved, absolute) moved with it
    assert data.val_dataset.root == data.train_dataset.root == data.data_dir
    assert data.test_transforms.resize.short_sides == [800]  # mhp's, not the synthetic default
    # a data.<key> override wins, and is logged
    data = inference_data_config(ckpt, "x.ckpt", cfg, overrides=["data.eval_batch_size=3"])
    assert data.dataset_name == "mhp" and data.eval_batch_size == 3
    assert "data.eval_batch_size=3 (the checkpoint has 1)" in caplog.text
    # an absolute directory outside the run's paths.data_dir stays as it was
    ckpt = _fake_checkpoint(tmp_path, "/elsewhere/LV-MHP-v2", None)
    assert inference_data_config(ckpt, "x.ckpt", cfg, []).data_dir == "/elsewhere/LV-MHP-v2"
    for hostile in ("../../home", "/etc"):  # a stored relative path stays inside data/
        bad = _fake_checkpoint(tmp_path, "/elsewhere/LV-MHP-v2", hostile)
        with pytest.raises(CheckpointRefusedError, match="data_dir_relative=.* not a relative"):
            inference_data_config(bad, "x.ckpt", cfg, [])
    # data= / experiment= choose the command line's data config as a whole
    data = inference_data_config(ckpt, "x.ckpt", cfg, overrides=["data=synthetic"])
    assert data.dataset_name == "synthetic"
    assert "from the command line (data=synthetic)" in caplog.text
    # a data set of another label space is a clear error
    dp_cfg = compose_config("eval", ["ckpt_path=x.ckpt", "data=densepose"], tmp_path)
    with pytest.raises(ValueError, match=r"x\.ckpt: the network predicts 59 classes \(mhp\), the "
                                         r"data set 'densepose' has 15"):  # fmt: skip
        inference_data_config(ckpt, "x.ckpt", dp_cfg, overrides=["data=densepose"])
    # older checkpoints: the command line's data config, with a warning, class count checked
    del ckpt[INFERENCE_KEY]
    caplog.clear()
    assert inference_data_config(ckpt, "x.ckpt", cfg, []).dataset_name == "synthetic"
    assert "carries no smp_inference" in caplog.text
    with pytest.raises(ValueError, match="predicts 59 classes"):
        inference_data_config(ckpt, "x.ckpt", dp_cfg, [])


def test_paths_derived_from_the_data_dir_follow_an_overridden_data_dir(tmp_path) -> None:
    """``data.data_dir=Y`` moves DensePose's annotation file and image folder under ``Y``."""
    ckpt = _fake_checkpoint(tmp_path, "/run/densepose_coco", None, "densepose", 15)
    new = tmp_path / "dp"
    overrides = [f"data.data_dir={new}"]
    cfg = compose_config("eval", ["ckpt_path=x.ckpt", "data=densepose", *overrides], tmp_path)
    kept = inference_data_config(ckpt, "x.ckpt", cfg, []).val_dataset  # no override: as stored
    assert kept.image_root == "/run/densepose_coco/val2014"
    data = inference_data_config(ckpt, "x.ckpt", cfg, overrides)
    assert data.data_dir == str(new)
    assert data.val_dataset.ann_file == str(new / "annotations/densepose_coco_2014_minival.json")
    assert data.val_dataset.image_root == str(new / "val2014")
    assert data.train_dataset.image_root == str(new / "train2014")
    # an explicit path wins, whatever its place on the command line
    overrides = ["data.val_dataset.image_root=/imgs", f"data.data_dir={new}"]
    cfg = compose_config("eval", ["ckpt_path=x.ckpt", "data=densepose", *overrides], tmp_path)
    data = inference_data_config(ckpt, "x.ckpt", cfg, overrides)
    assert data.val_dataset.image_root == "/imgs"
    assert data.val_dataset.ann_file == str(new / "annotations/densepose_coco_2014_minival.json")
    # a value that only shares a prefix with the directory's name is not inside it
    ckpt[INFERENCE_KEY]["data_config"]["val_dataset"]["image_root"] = "/run/densepose_coco_v2"
    data = inference_data_config(ckpt, "x.ckpt", cfg, [f"data.data_dir={new}"])
    assert data.val_dataset.image_root == "/run/densepose_coco_v2"


def test_training_and_resume_read_checkpoints_as_data_only(trained_run, synthetic_root, tmp_path,
                                                           monkeypatch) -> None:  # fmt: skip
    """Every torch.load of a resumed run (Lightning's restore included) uses weights_only=True."""
    from smp_parsing.train import train

    calls: list[object] = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    last = trained_run / "checkpoints" / "last.ckpt"
    overrides = tiny_train_overrides(synthetic_root, f"ckpt_path={last}", "trainer.max_epochs=2",
                                     "test=true")  # fmt: skip
    train(compose_config("train", overrides, tmp_path))
    assert calls and all(w is True for w in calls), calls
    resumed = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == 4 and resumed[INFERENCE_KEY]["num_classes"] == 59
    assert resumed["smp_inference"]["data_config"]["data_dir"] == str(synthetic_root)
