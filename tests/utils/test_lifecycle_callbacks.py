"""The callbacks that keep SMPLitModule thin: MIR freeze, RNG state, DDP buffer broadcast."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from conftest import compose_config
from smp_parsing.utils.callbacks import (
    BroadcastBuffers,
    InferenceTimer,
    MIRStageFreeze,
    RNGStateCheckpoint,
)


class PlugInNet(nn.Module):
    """A network without SMP's own ``freeze_for_mir``: a trunk with BN and a MIR head."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.mir_head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mir_head(self.trunk(x).mean((2, 3)))


def test_mir_freeze_trains_only_the_mir_modules_with_frozen_bn_statistics() -> None:
    net = PlugInNet().train()
    module = SimpleNamespace(net=net)
    freeze = MIRStageFreeze(["mir_head"])
    freeze.freeze_before_training(module)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"mir_head.weight", "mir_head.bias"}
    # Lightning may put the module back in train mode: each epoch start re-freezes the trunk
    net.train()
    freeze.on_train_epoch_start(None, module)
    assert not net.trunk[1].training and net.mir_head.training
    stats = net.trunk[1].running_mean.clone()
    net(torch.randn(2, 3, 8, 8)).sum().backward()
    assert torch.equal(net.trunk[1].running_mean, stats)  # eval-mode BN: statistics unchanged
    assert net.trunk[0].weight.grad is None and net.mir_head.weight.grad is not None
    with pytest.raises(ValueError, match="enable MIR"):
        MIRStageFreeze(["mir_head2"]).freeze_before_training(module)


def test_mir_freeze_keeps_the_restored_optimizer_groups_on_resume() -> None:
    net = PlugInNet()
    freeze = MIRStageFreeze(["mir_head"])
    optimizer = torch.optim.SGD(net.mir_head.parameters(), lr=0.5)
    # what BaseFinetuning stored at the first epoch start, with that moment's learning rate
    freeze.load_state_dict({"internal_optimizer_metadata": {0: [
        {"lr": 0.01, "params": ["mir_head.weight", "mir_head.bias"]}]}})  # fmt: skip
    freeze.on_fit_start(SimpleNamespace(optimizers=[optimizer]), SimpleNamespace(net=net))
    assert optimizer.param_groups[0]["lr"] == 0.5  # the resumed optimiser's own rate


def test_the_module_brings_the_mir_freeze_in_the_mir_stage_only() -> None:
    from test_lit_module import make_module

    assert make_module().configure_callbacks() == []
    callbacks = make_module(stage="mir", mir=True).configure_callbacks()
    assert [type(c) for c in callbacks] == [MIRStageFreeze]


def _draws() -> tuple[float, float, float]:
    return random.random(), np.random.rand(), torch.rand(1).item()  # noqa: NPY002


@pytest.mark.parametrize(("fn", "world_size"), [("fit", 1), ("validate", 1), ("fit", 2)])
def test_rng_state_is_saved_and_continued_when_fitting_resumes(fn: str, world_size: int) -> None:
    callback = RNGStateCheckpoint()
    checkpoint: dict = {}
    callback.on_save_checkpoint(None, None, checkpoint)
    expected = _draws()
    trainer = SimpleNamespace(state=SimpleNamespace(fn=fn), world_size=world_size, global_rank=1)
    callback.on_load_checkpoint(trainer, None, checkpoint)
    if world_size == 1:  # one process: exactly the interrupted run's next draws (when fitting)
        assert (_draws() == expected) == (fn == "fit")
    else:  # each rank its own stream, derived from the saved one and the rank
        first = _draws()
        callback.on_load_checkpoint(trainer, None, checkpoint)
        assert _draws() == first != expected


def test_a_fit_with_the_callback_stores_the_rng_state(tmp_path: Path) -> None:
    from lightning.pytorch.demos.boring_classes import BoringModel

    trainer = pl.Trainer(default_root_dir=tmp_path, max_epochs=1, limit_train_batches=1,
                         limit_val_batches=0, callbacks=[RNGStateCheckpoint()], logger=False,
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(BoringModel())
    path = next(tmp_path.rglob("*.ckpt"))
    assert set(torch.load(path, weights_only=True)["rng_state"]) >= {"python", "numpy", "torch"}


def test_the_default_callbacks_include_rng_state_and_buffer_broadcast(tmp_path: Path) -> None:
    from smp_parsing.utils.instantiators import instantiate_callbacks

    kinds = {
        type(c) for c in instantiate_callbacks(compose_config("train", [], tmp_path).callbacks)
    }
    assert {RNGStateCheckpoint, BroadcastBuffers} <= kinds


@pytest.mark.parametrize("entry", ["train", "eval"])
def test_the_inference_timer_comes_first_in_train_and_eval(entry: str, tmp_path: Path) -> None:
    # first: its batch-end hook closes the FPS window before the other callbacks' (image logger)
    from smp_parsing.utils.instantiators import instantiate_callbacks

    overrides = ["ckpt_path=x.ckpt"] if entry == "eval" else []
    callbacks = instantiate_callbacks(compose_config(entry, overrides, tmp_path).callbacks)
    assert isinstance(callbacks[0], InferenceTimer)


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        net = PlugInNet().train()
        torch.manual_seed(100 + rank)  # a different batch per rank: the BN statistics diverge
        net(torch.randn(2, 3, 8, 8) * (rank + 1))
        callback, module = BroadcastBuffers(), SimpleNamespace(net=net)
        before = net.trunk[1].running_mean.clone()
        callback.on_validation_epoch_start(None, module)
        after_val = net.trunk[1].running_mean.clone()
        net(torch.randn(2, 3, 8, 8) * (rank + 1))
        callback.on_test_epoch_start(None, module)
        torch.save({"before": before, "val": after_val, "test": net.trunk[1].running_mean},
                   Path(out_dir, f"rank{rank}.pt"))  # fmt: skip
    finally:
        dist.destroy_process_group()


def test_buffer_broadcast_gives_every_rank_rank_zero_statistics(tmp_path, free_port) -> None:
    mp.start_processes(_worker, args=(free_port, str(tmp_path)), nprocs=2, start_method="fork")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert not torch.equal(r0["before"], r1["before"])
    assert torch.equal(r1["val"], r0["before"]) and torch.equal(r1["test"], r0["test"])
