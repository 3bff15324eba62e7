"""SMPLitModule and its optimiser recipe (paper appendix: SGD, linear warmup, step decay)."""

from __future__ import annotations

import pytest
import torch

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
