"""DDP: ``trainer=ddp_sim`` (2-3 CPU processes, gloo, ddp_spawn) trains, validates and evaluates
with exactly the metrics one process gets on the same checkpoint, each image counted once."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import LOW_THRESHOLDS, compose_config, tiny_data_overrides, tiny_train_overrides
from smp_parsing.evaluate import evaluate
from smp_parsing.train import train

# Decode thresholds at 0 so that the barely trained network emits persons (non-trivial metrics).
NET_LOW_THRESHOLDS = [o.replace("+model_overrides.", "model.") for o in LOW_THRESHOLDS]
COMPARED = ("APp50", "APpvol", "PCP50", "mIoU", "pixel_acc", "APp@0.1", "PCP@0.1")


@pytest.mark.slow
def test_ddp_sim_training_validates_like_one_process(synthetic_root, tmp_path) -> None:
    cfg = compose_config(
        "train",
        tiny_train_overrides(
            synthetic_root,
            "trainer=ddp_sim",
            *NET_LOW_THRESHOLDS,
            "callbacks.image_logger=null",
            # the linear scaling rule must see the total batch of all processes
            "model.scale_lr=true",
            # each image is evaluated alone: 2 val images on 2 ranks equal one batch of 2
            "data.eval_batch_size=2",
        ),  # fmt: skip
        tmp_path / "ddp",
    )
    assert cfg.trainer.strategy == "ddp_spawn" and cfg.trainer.devices == 2
    train(cfg)
    summary = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    ddp_val = summary["val"]
    ckpt = torch.load(summary["last_model_path"], weights_only=True)
    # 4 train images over 2 processes x batch 2: one step per epoch, and the learning rate
    # scaled from the base batch to the real total batch of 4
    assert ckpt["global_step"] == 1
    expected_lr = cfg.model.optimizer.lr * 4 / cfg.model.base_batch_size
    assert ckpt["lr_schedulers"][0]["base_lrs"] == [pytest.approx(expected_lr)]

    # the same checkpoint, validated by a single process
    single, _ = evaluate(
        compose_config(
            "eval",
            [
                f"ckpt_path={summary['last_model_path']}",
                *tiny_data_overrides(synthetic_root),
                "data.eval_batch_size=1",  # any batch size gives the same predictions
                # the network exactly as validated during training (no inference rewrites)
                "inference.fold_batchnorm=false",
                "inference.winograd=false",
                "split=val",
                "extras.print_config=false",
            ],  # fmt: skip
            tmp_path / "single",
        )
    )
    assert ddp_val["APp@0.1"] > 0 or ddp_val["mIoU"] > 0
    for key in COMPARED:
        assert ddp_val[key] == pytest.approx(single[f"val/{key}"], abs=1e-9), key


@pytest.mark.slow
def test_ddp_sim_evaluation_counts_each_image_once(trained_run, tmp_path) -> None:
    """3 processes on 7 images (ranks get 3, 2, 2; batches of 2: 2, 1, 1 steps) equal one process.

    Lightning's padding DistributedSampler would evaluate 9 images (two of them twice); a
    collective per step would hang the ranks with fewer steps.
    """
    import hydra

    root = tmp_path / "seven"
    seven = [*tiny_data_overrides(root), "data.num_val=7", "data.num_train=1"]
    hydra.utils.instantiate(compose_config("eval", seven, tmp_path).data).prepare_data()
    common = [
        f"ckpt_path={trained_run}/checkpoints/last.ckpt",
        *seven,
        *LOW_THRESHOLDS,
        "split=val",
        "extras.print_config=false",
    ]
    single, _ = evaluate(compose_config("eval", [*common, "data.eval_batch_size=4"],
                                        tmp_path / "one"))  # fmt: skip
    triple, _ = evaluate(compose_config("eval", [*common, "data.eval_batch_size=2",
                                                 "trainer=ddp_sim", "trainer.devices=3"],
                                        tmp_path / "three"))  # fmt: skip
    assert single["val/num_images"] == triple["val/num_images"] == 7
    assert single["val/APp@0.1"] > 0 or single["val/mIoU"] > 0
    for key in COMPARED:
        assert triple[f"val/{key}"] == pytest.approx(single[f"val/{key}"], abs=1e-9), key


def test_each_rank_gets_its_own_seed() -> None:
    from types import SimpleNamespace

    from smp_parsing.utils.callbacks import PerRankSeed

    draws = {}
    for rank in (0, 1):
        trainer = SimpleNamespace(world_size=2, global_rank=rank)
        PerRankSeed(seed=7).on_fit_start(trainer, None)
        draws[rank] = torch.rand(3)
    torch.manual_seed(8)
    assert torch.equal(draws[1], torch.rand(3))  # seed + rank: reproducible ...
    assert not torch.equal(draws[0], draws[1])  # ... and different across ranks
    torch.manual_seed(0)
    PerRankSeed(seed=7).on_fit_start(SimpleNamespace(world_size=1, global_rank=0), None)
    after_single = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(after_single, torch.rand(1))  # one process: the run's seed is left alone


def test_ddp_inside_a_local_multirun_is_refused(tmp_path) -> None:
    from smp_parsing.utils.run_context import check_ddp_launch

    cfg = compose_config("train", ["trainer=ddp"], tmp_path)
    check_ddp_launch(cfg.trainer.strategy)  # a single run: fine
    cfg = compose_config("train", ["trainer=ddp", "hydra.mode=MULTIRUN"], tmp_path)
    with pytest.raises(ValueError, match="re-run the whole sweep in every rank"):
        check_ddp_launch(cfg.trainer.strategy)
    check_ddp_launch("ddp_spawn")  # spawned ranks do not re-run the command line
