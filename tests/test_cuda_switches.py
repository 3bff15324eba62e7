"""Switches that must behave on CUDA, checked on the CPU: deterministic-safe ops, a skipped bad
batch under DDP, RNG states from a machine with another GPU count, fp16 loss-scaling skips."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from smp_parsing.models.targets.instances import extract_instances
from smp_parsing.utils.callbacks import NonFiniteLossError, NonFiniteLossGuard
from smp_parsing.utils.rng_state import collect_rng_state, restore_rng_state
from test_lit_module import make_batch, make_module


def test_instance_statistics_use_no_weighted_bincount(monkeypatch) -> None:
    # torch.bincount with weights has no deterministic CUDA kernel: under
    # trainer.deterministic=true it raises on a GPU. The statistics must not call it.
    real = torch.bincount

    def strict_bincount(input, weights=None, minlength=0):
        if weights is not None:
            raise RuntimeError("_bincount_cuda does not have a deterministic implementation")
        return real(input, minlength=minlength)

    monkeypatch.setattr(torch, "bincount", strict_bincount)
    maps = torch.zeros(2, 32, 32, dtype=torch.uint8)
    maps[0, 2:10, 4:8] = 3
    maps[1, 16:30, 10:20] = 12
    with torch.inference_mode():
        torch.use_deterministic_algorithms(True)
        try:
            out = extract_instances([maps[:1], maps[1:]], num_classes=59)
        finally:
            torch.use_deterministic_algorithms(False)
    assert out is not None


def fake_ddp_trainer(other_rank_skips: bool, on_bad_sample: str):
    calls = []

    def reduce_boolean_decision(decision, all=True):
        calls.append(decision)
        return decision or other_rank_skips  # any rank's empty batch

    trainer = SimpleNamespace(
        world_size=2,
        datamodule=SimpleNamespace(on_bad_sample=on_bad_sample),
        strategy=SimpleNamespace(reduce_boolean_decision=reduce_boolean_decision),
    )
    return trainer, calls


def test_a_bad_batch_on_one_rank_skips_the_step_on_every_rank() -> None:
    module = make_module()
    trainer, calls = fake_ddp_trainer(other_rank_skips=True, on_bad_sample="skip")
    module._trainer = trainer
    # this rank has a good batch, the other one an empty one: both skip (no lone all-reduce)
    assert module._skip_step(make_batch()) is True and calls == [False]
    assert module._skip_step(None) is True
    trainer, calls = fake_ddp_trainer(other_rank_skips=False, on_bad_sample="skip")
    module._trainer = trainer
    assert module._skip_step(make_batch()) is False and calls == [False]
    # under on_bad_sample=error a batch is never empty: no all-reduce (no sync) per step
    trainer, calls = fake_ddp_trainer(other_rank_skips=True, on_bad_sample="error")
    module._trainer = trainer
    assert module._skip_step(make_batch()) is False and calls == []


@pytest.mark.parametrize(("saved", "visible"), [(8, 1), (2, 4), (2, 0)])
def test_rng_state_from_a_machine_with_another_gpu_count(monkeypatch, saved, visible) -> None:
    state = collect_rng_state()
    state["cuda"] = [torch.full((16,), i, dtype=torch.uint8) for i in range(saved)]
    restored = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: visible > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, d: restored.__setitem__(d, s))
    expected = torch.rand(3)
    torch.manual_seed(123)
    restore_rng_state(state)
    assert torch.equal(torch.rand(3), expected)  # the CPU streams are restored as before
    assert sorted(restored) == list(range(min(saved, visible)))
    for device, value in restored.items():
        assert torch.equal(value, state["cuda"][device])


def guard_trainer(scaler):
    return SimpleNamespace(
        strategy=SimpleNamespace(reduce_boolean_decision=lambda d, all=True: d),
        precision_plugin=SimpleNamespace(scaler=scaler),
        global_step=3, current_epoch=0, global_rank=0,
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_idx=3)),
    )  # fmt: skip


def test_a_gradscaler_skipped_step_does_not_trip_the_guard() -> None:
    guard = NonFiniteLossGuard(max_scaler_skips=2)
    module = SimpleNamespace(last_loss_terms={})
    inf, one = torch.tensor(float("inf")), torch.tensor(1.0)
    fp16 = guard_trainer(scaler=object())
    guard.on_before_backward(fp16, module, inf)  # overflow: the scaler skips the step
    guard.on_before_backward(fp16, module, one)  # a finite step resets the count
    guard.on_before_backward(fp16, module, inf)
    guard.on_before_backward(fp16, module, inf)
    with pytest.raises(NonFiniteLossError, match="3 steps in a row under fp16"):
        guard.on_before_backward(fp16, module, inf)  # the overflow persists: stop
    # fp32 / bf16 (no scaler): the first non-finite loss stops the run
    with pytest.raises(NonFiniteLossError, match="global step 3"):
        NonFiniteLossGuard().on_before_backward(guard_trainer(scaler=None), module, inf)
