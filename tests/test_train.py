"""``smp_parsing.train``: every experiment trains a couple of steps; stages; errors; summary."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import (
    CONF_DIR,
    TINY_DATA_COMMON,
    TINY_NET_OVERRIDES,
    TINY_TRAINER_OVERRIDES,
    compose_config,
    tiny_data_overrides,
    tiny_train_overrides,
)
from smp_parsing.train import get_metric_value, train

# Each run takes ~15 s here; the paper rows that only differ in backbone depth / DCN / schedule
# from densepose_r101_dcn (which covers data set, classes, DCN and grids) run with `make test-full`.
FAST_EXPERIMENTS = ("synthetic", "densepose_r101_dcn")
EXPERIMENTS = [
    name if name in FAST_EXPERIMENTS else pytest.param(name, marks=pytest.mark.slow)
    for name in sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))
]


def write_tiny_densepose(root: Path) -> Path:
    """A DensePose-COCO folder (train + minival json, COCO-style image dirs) of 4 + 2 images."""
    from data.builders import random_image, write_densepose_json

    frame = np.zeros((256, 256), np.uint8)
    frame[:64, 64:192] = 14  # head
    frame[64:160, 48:208] = 1  # torso
    frame[160:, 48:128] = 6  # upper-leg-right
    frame[160:, 128:208] = 7  # upper-leg-left
    for split, images, count in (("train", "train2014", 4), ("minival", "val2014", 2)):
        samples = [
            {"id": i + 1, "file_name": f"{split}_{i}.jpg", "image": random_image(72, 96, i),
             "persons": [{"bbox": [4.0 + 8 * i, 4.0, 30.0, 60.0], "parts_256": frame},
                         {"bbox": [50.0, 10.0, 24.0, 50.0], "parts_256": frame}]}
            for i in range(count)
        ]  # fmt: skip
        write_densepose_json(
            root / "annotations" / f"densepose_coco_2014_{split}.json", root / images, samples
        )
    return root


def experiment_overrides(name: str, synthetic_root: Path, tmp_path: Path) -> list[str]:
    """Keep the experiment's data set, model structure and recipe; shrink sizes and steps."""
    if name == "synthetic":
        data = tiny_data_overrides(synthetic_root)
    elif name.startswith("cihp"):  # the synthetic set written in the official CIHP layout
        from data.builders import write_synthetic_cihp

        data = [f"data.data_dir={write_synthetic_cihp(tmp_path / 'CIHP', 'official')}",
                *TINY_DATA_COMMON]  # fmt: skip
    elif name.startswith("densepose"):
        (tmp_path / "annotations").mkdir()
        data = [f"data.data_dir={write_tiny_densepose(tmp_path)}", *TINY_DATA_COMMON]
    else:  # MHP v2: the synthetic set is written in the MHP v2 layout
        data = [f"data.data_dir={synthetic_root}", *TINY_DATA_COMMON]
    # the main stage only: the paper experiments train MIR after it by default (stage=main_mir,
    # run by test_main_then_mir_in_one_job)
    stage = [] if name == "synthetic" else ["stage=main"]
    return [f"experiment={name}", *TINY_NET_OVERRIDES, *data, *TINY_TRAINER_OVERRIDES, *stage]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_trains_and_validates(name, synthetic_root, tmp_path) -> None:
    cfg = compose_config("train", experiment_overrides(name, synthetic_root, tmp_path), tmp_path)
    metric_dict, objects = train(cfg)
    terms = ("train/loss_center", "train/loss_part", "train/loss_mask", "train/loss_offset")
    values = {key: float(metric_dict[key]) for key in ("train/loss", *terms)}
    # every term is a real, positive loss and the optimised loss is their sum (stage=main)
    assert all(v > 0 and math.isfinite(v) for v in values.values()), values
    assert values["train/loss"] == pytest.approx(sum(values[t] for t in terms), rel=1e-4)
    for key in ("val/APp50", "val/APpvol", "val/PCP50", "val/mIoU", "val/APpvol_best"):
        assert 0.0 <= float(metric_dict[key]) <= 1.0, key
    assert float(metric_dict["val/APpvol_best"]) == pytest.approx(float(metric_dict["val/APpvol"]))
    assert objects["trainer"].global_step == 2
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert Path(summary["last_model_path"]).is_file()
    assert summary["best_model_path"] and Path(summary["best_model_path"]).is_file()
    assert summary["val"]["APp50"] == pytest.approx(float(metric_dict["val/APp50"]))
    # the one metrics.json layout (utils/run_files.metrics_summary): the headline split's values
    assert summary["task"] == "train" and summary["metrics"] == summary[summary["split"]]
    assert summary["logged"]["train/loss"] == pytest.approx(float(metric_dict["train/loss"]))
    net = objects["model"].net
    assert net.num_classes == cfg.data.num_classes
    # the checkpoint carries what evaluate/predict need to rebuild the network
    ckpt = torch.load(summary["last_model_path"], weights_only=True)
    assert ckpt["smp_model_config"]["net"]["num_classes"] == cfg.data.num_classes
    assert ckpt["hyper_parameters"]["stage"] == "main"
    # the running best travels with the checkpoint (a resumed run keeps it)
    best = ckpt["state_dict"]["val_appvol_best.max_value"]
    assert float(best) == pytest.approx(float(metric_dict["val/APpvol_best"]))
    # the steps reached every trained weight: each parameter of the optimiser has a state
    # (set only when it got a gradient) that is not all zero (momentum / Adam moments)
    optimizer = ckpt["optimizer_states"][0]
    params = [i for group in optimizer["param_groups"] for i in group["params"]]
    stepped = [
        i
        for i in params
        if any(torch.is_tensor(t) and t.dim() > 0 and t.abs().sum() > 0
               for t in optimizer["state"].get(i, {}).values())
    ]  # fmt: skip
    assert params and len(stepped) == len(params), f"{len(params) - len(stepped)} never updated"


def test_mir_stage_trains_only_mir_from_a_main_checkpoint(trained_run, synthetic_root,
                                                          tmp_path) -> None:  # fmt: skip
    main_ckpt = trained_run / "checkpoints" / "last.ckpt"
    cfg = compose_config(
        "train", tiny_train_overrides(synthetic_root, "stage=mir", f"ckpt_path={main_ckpt}"),
        tmp_path,
    )  # fmt: skip
    # the paper's 6 MIR epochs (one here, for time: tiny_train_overrides' trainer.max_epochs=1)
    assert compose_config("train", ["stage=mir"], tmp_path).trainer.max_epochs == 6
    assert cfg.trainer.max_epochs == 1
    metric_dict, objects = train(cfg)
    model = objects["model"]
    assert model.hparams.stage == "mir" and model.net.mir_head is not None
    assert objects["trainer"].max_epochs == 1
    assert "train/loss_mir" in metric_dict
    before = torch.load(main_ckpt, weights_only=True)["state_dict"]
    after = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    mir_keys = [k for k in after if k.startswith("net.mir_head.")]
    assert mir_keys and all(k not in before for k in mir_keys)
    # every weight outside MIR is exactly the main stage's (frozen, BN statistics included)
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt",
                      weights_only=True)["hyper_parameters"]["stage"] == "mir"  # fmt: skip


@pytest.mark.slow
def test_main_then_mir_in_one_job(synthetic_root, tmp_path) -> None:
    cfg = compose_config(
        "train",
        tiny_train_overrides(
            synthetic_root, "stage=main_mir", "mir_stage.trainer.max_epochs=1", "logger=wandb"
        ),  # fmt: skip
        tmp_path,
    )
    train(cfg)
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert list(summary["stages"]) == ["main", "mir"]
    # each stage's config saved with the run: the MIR stage's is the mir_stage node merged in
    saved = {s: OmegaConf.load(tmp_path / ".hydra" / f"config_{s}.yaml") for s in ("main", "mir")}
    assert saved["main"].model.stage == "main" and saved["mir"].model.stage == "mir"
    assert saved["mir"].model.net.mir is True and saved["mir"].trainer.max_epochs == 1
    # one W&B run per stage (each restarts its step counter), both finished
    from test_wandb import wait_for_run_file

    runs = sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 2
    keys, exits = [], []
    for run in runs:
        records = wait_for_run_file(run)
        keys.append({i.key or "/".join(i.nested_key) for r in records if r.HasField("history")
                     for i in r.history.item})  # fmt: skip
        exits += [r.exit.exit_code for r in records if r.HasField("exit")]
    assert exits == [0, 0]
    assert sum("train/loss_mir_step" in k for k in keys) == 1
    assert summary["stage"] == "mir"
    assert (
        Path(summary["stages"]["mir"]["last_model_path"]).parent == tmp_path / "checkpoints" / "mir"
    )


def test_train_errors_are_clear(synthetic_root, tmp_path) -> None:
    cfg = compose_config("train", tiny_train_overrides(synthetic_root, "stage=mir"), tmp_path)
    with pytest.raises(ValueError, match="stage=mir trains MIR on top of a trained network"):
        train(cfg)
    cfg = compose_config(
        "train", tiny_train_overrides(synthetic_root, f"ckpt_path={tmp_path}/none.ckpt"), tmp_path
    )
    with pytest.raises(FileNotFoundError, match="none.ckpt: no such checkpoint file"):
        train(cfg)
    # an unknown stage is refused when composing (conf/stage/ has no such option) ...
    with pytest.raises(Exception, match="stage/both"):
        compose_config("train", tiny_train_overrides(synthetic_root, "stage=both"), tmp_path)
    # ... and by train() for a config built otherwise
    cfg = compose_config("train", tiny_train_overrides(synthetic_root), tmp_path)
    cfg.stage = "both"
    with pytest.raises(ValueError, match="stage must be one of"):
        train(cfg)


def test_optimized_metric_for_optuna() -> None:
    metrics = {"val/APpvol_best": torch.tensor(0.25), "val/APp50": 0.5}
    assert get_metric_value(metrics, "val/APpvol_best") == 0.25
    assert get_metric_value(metrics, None) is None
    with pytest.raises(KeyError, match="available: \\['val/APp50', 'val/APpvol_best'\\]"):
        get_metric_value(metrics, "val/nope")


def test_stage_config_builds_the_mir_view(tmp_path) -> None:
    from omegaconf import OmegaConf

    from smp_parsing.train import stage_config

    cfg = compose_config("train", ["experiment=mhp_r101_dcn_1x"], tmp_path)
    main = stage_config(cfg, "main", after_main=False)
    assert main.model.stage == "main" and main.model.net.mir is False
    mir = stage_config(cfg, "mir", after_main=True)
    assert mir.model.stage == "mir" and mir.model.net.mir is True
    assert mir.trainer.max_epochs == 6 and list(mir.model.scheduler.milestones) == [5]
    assert mir.model.scheduler.warmup_ratio == 0.02  # untouched keys kept
    assert mir.callbacks.model_checkpoint.dirpath.endswith("checkpoints/mir")
    # the job's own config is not modified
    assert cfg.model.stage == "main" and cfg.trainer.max_epochs == 12
    assert OmegaConf.select(cfg, "model.net.mir") is False


@pytest.mark.slow
def test_optuna_search_runs_and_reads_the_optimized_metric(synthetic_root, tmp_path) -> None:
    """``hparams_search=optuna``: each trial's ``main`` returns ``val/APpvol_best`` to Optuna."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "smp_parsing.train", "hparams_search=optuna",
           "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2",
           f"paths.log_dir={tmp_path}/logs/", *tiny_train_overrides(synthetic_root)]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = next((tmp_path / "logs" / "train" / "multiruns").iterdir())
    best = (sweep / "optimization_results.yaml").read_text()
    assert "best_params" in best and "model.optimizer.lr" in best and "best_value" in best
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]


@pytest.mark.slow
def test_mixed_precision_training_on_cpu(synthetic_root, tmp_path) -> None:
    """AMP is a trainer switch (``trainer.precision``; ``trainer=gpu`` uses 16-mixed): here bf16
    autocast on the CPU, through the DCN backbone; losses stay finite and float32."""
    overrides = experiment_overrides("mhp_r50_dcn", synthetic_root, tmp_path)
    cfg = compose_config("train", [*overrides, "trainer.precision=bf16-mixed"], tmp_path)
    metric_dict, objects = train(cfg)
    assert objects["trainer"].precision == "bf16-mixed"
    for key in ("train/loss", "train/loss_center", "train/loss_mask", "train/loss_offset"):
        value = torch.as_tensor(metric_dict[key])
        assert torch.isfinite(value) and value.dtype == torch.float32, key


def test_a_resumed_run_continues_its_loggers(tmp_path) -> None:
    from smp_parsing.train import continue_loggers, stage_config

    def logger_cfg(stage: str):
        cfg = compose_config("train", ["logger=many_loggers", "stage=main_mir"], tmp_path)
        cfg = stage_config(cfg, stage, after_main=stage == "mir")
        continue_loggers(cfg)
        return cfg.logger

    first, again, mir = logger_cfg("main"), logger_cfg("main"), logger_cfg("mir")
    # CSV / TensorBoard: one version per stage, not version_<n> per start (appended on resume)
    assert first.csv.version == first.tensorboard.version == "main" and mir.csv.version == "mir"
    # W&B: the id stored with the run, resume="allow"; each stage its own run
    assert first.wandb.id == again.wandb.id and first.wandb.resume == "allow"
    assert (tmp_path / "wandb_id_main.txt").read_text().strip() == first.wandb.id
    assert mir.wandb.id != first.wandb.id
