"""SMPLitModule and its optimiser recipe (paper appendix: SGD, linear warmup, step decay)."""

from __future__ import annotations

import functools
import time
import warnings
from types import SimpleNamespace

import hydra
import lightning.pytorch as pl
import pytest
import torch

from conftest import tiny_net_config
from smp_parsing.lit_module import SMPLitModule
from smp_parsing.metrics import ParsingMetrics
from smp_parsing.utils.callbacks import InferenceTimer, NonFiniteLossError, NonFiniteLossGuard
from smp_parsing.utils.lr_schedule import WarmupMultiStepLR, warmup_multistep_factor


def _reference_factor(step, steps_per_epoch, warmup_iters, ratio, milestones, gamma):
    """mmcv's linear warmup + step policy, written out as the appendix config reads."""
    factor = 1.0
    epoch = step // steps_per_epoch
    for m in milestones:
        if epoch >= m:
            factor *= gamma
    if step < warmup_iters:
        k = (1 - step / warmup_iters) * (1 - ratio)
        factor *= 1 - k
    return factor


@pytest.mark.parametrize("steps_per_epoch", [1, 7, 100])
def test_warmup_multistep_matches_reference(steps_per_epoch: int) -> None:
    args = dict(steps_per_epoch=steps_per_epoch, warmup_iters=500, warmup_ratio=0.02,
                milestones=[8, 11], gamma=0.1)  # fmt: skip
    for step in range(0, 12 * steps_per_epoch + 600, 3):
        ref = _reference_factor(step, steps_per_epoch, 500, 0.02, [8, 11], 0.1)
        assert warmup_multistep_factor(step, **args) == pytest.approx(ref, rel=1e-12)


def test_scheduler_drives_the_optimizer_per_step() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.01)
    sched = WarmupMultiStepLR(opt, steps_per_epoch=10, warmup_iters=20, warmup_ratio=0.02,
                              milestones=[3, 5], gamma=0.1)  # fmt: skip
    lrs = []
    for _ in range(60):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.01 * 0.02)
    assert lrs[10] == pytest.approx(0.01 * (1 - 0.5 * 0.98))
    assert lrs[20] == pytest.approx(0.01)
    assert lrs[29] == pytest.approx(0.01) and lrs[30] == pytest.approx(0.001)
    assert lrs[50] == pytest.approx(0.0001)
    # state survives a save / load (resume)
    fresh = WarmupMultiStepLR(torch.optim.SGD([p], lr=0.01), steps_per_epoch=10, warmup_iters=20,
                              milestones=[3, 5])  # fmt: skip
    fresh.load_state_dict(sched.state_dict())
    assert fresh.last_epoch == 60


def test_scheduler_rejects_bad_arguments() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        WarmupMultiStepLR(opt, steps_per_epoch=0)
    with pytest.raises(ValueError, match="milestones"):
        WarmupMultiStepLR(opt, steps_per_epoch=1, milestones=[11, 8])


# --------------------------------------------------------------------------------------------
# The module around the real SMP network (tiny widths), on hand-made batches.
# --------------------------------------------------------------------------------------------

SIZE = 64


def make_module(stage: str = "main", mir: bool = False, batch_size: int = 2) -> SMPLitModule:
    torch.manual_seed(0)
    net = hydra.utils.instantiate(tiny_net_config(mir=mir))
    return SMPLitModule(
        net=net,
        optimizer=functools.partial(torch.optim.SGD, lr=0.02, momentum=0.9, weight_decay=1e-4),
        scheduler=functools.partial(WarmupMultiStepLR, warmup_iters=5, milestones=[1]),
        metrics=functools.partial(ParsingMetrics, num_classes=59),
        batch_size=batch_size,
        stage=stage,
    )


def make_batch(train: bool = True) -> dict:
    """Two images: one with two persons (face/hair/t-shirt/pants parts), one with nobody."""
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, SIZE, SIZE, generator=g)
    p0 = torch.zeros(2, SIZE, SIZE, dtype=torch.uint8)
    p0[0, 4:12, 6:16] = 3
    p0[0, 12:36, 4:18] = 12
    p0[0, 36:60, 4:18] = 17
    p0[1, 8:40, 36:56] = 12
    p0[1, 40:62, 36:56] = 17
    p1 = torch.zeros(0, SIZE, SIZE, dtype=torch.uint8)
    meta = {"ori_size": (SIZE, SIZE), "img_size": (SIZE, SIZE), "pad_size": (SIZE, SIZE),
            "scale": (1.0, 1.0), "flipped": False, "dataset": "synthetic"}  # fmt: skip
    return {"images": images, "parsing": [p0, p1], "image_ids": ["a", "b"], "metas": [meta, meta]}


def test_training_step_returns_the_summed_loss_and_keeps_terms() -> None:
    module = make_module()
    loss = module.training_step(make_batch(), 0)
    terms = module.last_loss_terms
    assert set(terms) == {"loss", "loss_center", "loss_part", "loss_mask", "loss_offset"}
    assert torch.isfinite(loss) and loss.requires_grad
    parts = sum(v for k, v in terms.items() if k != "loss")
    assert loss.detach() == pytest.approx(float(parts), rel=1e-5)


def test_mir_stage_trains_only_mir_on_loss_mir() -> None:
    module = make_module(stage="mir", mir=True)
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("net.mir_head.") for n in trainable)
    module.train()
    assert not module.net.backbone.training and module.net.mir_head.training
    loss = module.training_step(make_batch(), 0)
    assert torch.equal(loss.detach(), module.last_loss_terms["loss_mir"])
    loss.backward()
    assert all(p.grad is None for n, p in module.named_parameters() if n not in trainable)


def test_mir_stage_without_mir_module_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="enable MIR"):
        make_module(stage="mir", mir=False)
    with pytest.raises(ValueError, match="stage must be one of"):
        make_module(stage="bogus")


def test_lr_is_scaled_to_the_real_total_batch() -> None:
    module = make_module(batch_size=4)
    # 2 devices x 4 images x 2 accumulation = 16 images per step: half the paper's 32.
    module._trainer = SimpleNamespace(world_size=2, accumulate_grad_batches=2,
                                      estimated_stepping_batches=100, num_training_batches=20)  # fmt: skip
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert conf["lr_scheduler"]["interval"] == "step"
    assert sched.base_lrs[0] == pytest.approx(0.01)
    assert sched.steps_per_epoch == 10  # 20 batches / 2 accumulation
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 * 0.02)  # warmup starts at 2 %
    assert opt.param_groups[0]["momentum"] == 0.9


def validation_batch(module: SMPLitModule, timer: InferenceTimer, batch: dict) -> list[dict]:
    """One validation batch through the hooks in the order of Lightning's evaluation loop
    (callbacks' batch start, step, callbacks' batch end, then the module's batch end)."""
    timer.on_validation_batch_start(None, module, batch, 0)
    with torch.no_grad():
        preds = module.validation_step(batch, 0)
    timer.on_validation_batch_end(None, module, preds, batch, 0)
    module.on_validation_batch_end(preds, batch, 0)
    return preds


def test_validation_feeds_the_metric_and_tracks_the_best() -> None:
    module = make_module().eval()
    batch = make_batch(train=False)
    timer = InferenceTimer()
    preds = validation_batch(module, timer, batch)
    assert len(preds) == 2 and all(p["parsing"].shape[-2:] == (SIZE, SIZE) for p in preds)
    values = module.val_metrics.compute()
    assert {"APp50", "APpvol", "PCP50", "mIoU"} <= set(values)
    assert timer.images == 2 and timer.seconds > 0
    # separate objects per stage: the test metric saw nothing
    assert module.test_metrics is not module.val_metrics
    assert int(module.test_metrics.num_gt) == 0 and int(module.val_metrics.num_gt) == 2
    # The epoch end logs the metrics and the running best, which is this epoch's APpvol.
    logged = {}
    module.log = lambda name, value, **kwargs: logged.__setitem__(name, float(value))
    module._trainer = SimpleNamespace(state=SimpleNamespace(fn="fit"), sanity_checking=False)
    module.on_validation_epoch_end()
    assert logged["val/APpvol_best"] == logged["val/APpvol"] == pytest.approx(values["APpvol"])


class SlowBatchEnd(pl.Callback):
    """A callback whose validation batch end takes ``seconds`` (as the image logger's forward)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_validation_batch_end(self, *args, **kwargs) -> None:
        time.sleep(self.seconds)


def test_fps_times_the_step_without_the_metric_update_or_later_callbacks(tmp_path) -> None:
    # Through a real Trainer: Lightning calls the callbacks' batch end (the timer's first) before
    # the module's, which updates the metric; a slow update must not reach val/fps.
    module = make_module().eval()
    step_s, update_s = 0.05, 0.5
    predict, update = module.predict_images, module.val_metrics.update

    def slow_predict(*args, **kwargs):
        time.sleep(step_s)
        return predict(*args, **kwargs)

    def slow_update(*args, **kwargs):
        time.sleep(update_s)
        return update(*args, **kwargs)

    module.predict_images, module.val_metrics.update = slow_predict, slow_update
    timer = InferenceTimer()
    trainer = pl.Trainer(accelerator="cpu", callbacks=[timer, SlowBatchEnd(update_s)], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    loader = torch.utils.data.DataLoader([make_batch(train=False)] * 3, batch_size=None)
    (logged,) = trainer.validate(module, dataloaders=loader, verbose=False)
    assert timer.images == 6 and logged["val/num_images"] == 6  # the metric was fed
    assert 3 * step_s <= timer.seconds < 3 * update_s  # the step in, the update and logger out
    assert logged["val/fps"] == pytest.approx(6 / timer.seconds, rel=1e-5)


def test_the_timer_warns_when_a_callback_before_it_would_be_timed() -> None:
    timer = InferenceTimer()
    with pytest.warns(UserWarning, match=r"after \['SlowBatchEnd'\].*List the timer first"):
        timer.setup(SimpleNamespace(callbacks=[SlowBatchEnd(0), timer]), None, "validate")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        timer.setup(SimpleNamespace(callbacks=[timer, SlowBatchEnd(0)]), None, "validate")


@pytest.mark.parametrize(
    ("fn", "sanity", "counted"),
    [("fit", False, True), ("fit", True, False), ("validate", False, False)],
)
def test_appvol_best_is_the_max_over_fit_epochs_and_in_the_checkpoint(fn, sanity, counted) -> None:
    module = make_module()
    logged = []
    module.log = lambda name, value, **kwargs: logged.append((name, float(value)))
    module._trainer = SimpleNamespace(state=SimpleNamespace(fn=fn), sanity_checking=sanity)
    epochs = iter([0.25, 0.625, 0.5])
    module._log_eval = lambda prefix, metric: {"APpvol": next(epochs)}
    for _ in range(3):
        module.on_validation_epoch_end()
    best = [v for name, v in logged if name == "val/APpvol_best"]
    # the sanity check and `evaluate split=val` never count; while fitting, the running max
    assert best == ([0.25, 0.625, 0.625] if counted else [])
    stored = module.state_dict()["val_appvol_best.max_value"]  # what a resumed run restores
    assert float(stored) == (0.625 if counted else float("-inf"))


def test_nonfinite_loss_stops_before_the_step_naming_step_and_terms(tmp_path) -> None:
    module = make_module()
    real_loss = module.net.loss

    def poisoned(outputs, parsing):
        losses = real_loss(outputs, parsing)
        losses["loss_part"] = losses["loss_part"] * float("nan")
        losses["loss"] = sum(v for k, v in losses.items() if k != "loss")
        return losses

    module.net.loss = poisoned
    before = {k: v.detach().clone() for k, v in module.named_parameters()}
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, callbacks=[NonFiniteLossGuard()],
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    loader = torch.utils.data.DataLoader([make_batch()], batch_size=None)
    with pytest.raises(NonFiniteLossError) as err:
        trainer.fit(module, train_dataloaders=loader)
    msg = str(err.value)
    assert "global step 0" in msg and "loss_part=nan  <-- non-finite" in msg
    assert "loss_center=" in msg and "loss_mask=" in msg
    # no optimiser step happened: every weight is unchanged (BN running stats may move)
    assert all(torch.equal(before[k], p) for k, p in module.named_parameters())


def test_predictions_do_not_depend_on_the_eval_batch_size(tmp_path) -> None:
    """Batch sizes 1, 2 and 4 give the same person maps (images of several padded sizes)."""
    from conftest import compose_config, tiny_data_overrides

    cfg = compose_config("eval", [*tiny_data_overrides(tmp_path / "data"), "data.num_val=6",
                                  "data.num_train=1"], tmp_path)  # fmt: skip
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("validate")
    torch.manual_seed(0)
    low = {f"test_cfg.{k}": 0.0 for k in ("ctr_score_thr", "cate_score_thr", "update_thr",
                                           "cand_score_thr", "mask_thr")}  # fmt: skip
    module = make_module()
    module.net = hydra.utils.instantiate(tiny_net_config(**low)).eval()
    results = {}
    for batch_size in (1, 2, 4):
        datamodule.eval_batch_size = batch_size
        preds = {}
        with torch.no_grad():
            for batch in datamodule.val_dataloader():
                outputs = module.validation_step(batch, 0)
                module.on_validation_batch_end(outputs, batch, 0)
                preds.update(zip(batch["image_ids"], outputs))
        results[batch_size] = preds
    sizes = {b["metas"][0]["pad_size"] for b in datamodule.val_dataloader()}
    assert len(sizes) > 1  # batches really are padded: the test means something
    assert sum(len(p["scores"]) for p in results[1].values()) > 0
    for batch_size in (2, 4):
        assert results[batch_size].keys() == results[1].keys()
        for image_id, pred in results[1].items():
            other = results[batch_size][image_id]
            assert torch.equal(pred["parsing"], other["parsing"]), (batch_size, image_id)
            assert torch.equal(pred["scores"], other["scores"]), (batch_size, image_id)
    assert module.val_metrics.compute()["APp@0.1"] >= 0  # the metric was fed on the way
