"""The paper's learning-rate policy: linear warmup over iterations, step decay at epochs.

mmdetection's ``lr_config = dict(policy='step', warmup='linear', warmup_iters=500,
warmup_ratio=0.02, step=[8, 11])`` (paper appendix, Listing 1) multiplies the base rate by

    warmup(i) = 1 - (1 - i / warmup_iters) * (1 - warmup_ratio)   for i < warmup_iters, else 1
    decay(e)  = gamma ** #{m in milestones : e >= m}

where ``i`` is the optimiser step and ``e`` the epoch. Both factors are applied together here as
one per-step scheduler, because chaining a warmup scheduler and an epoch ``MultiStepLR`` in PyTorch
makes the later one overwrite the earlier one's rate.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


def warmup_multistep_factor(
    step: int,
    steps_per_epoch: int,
    warmup_iters: int,
    warmup_ratio: float,
    milestones: Sequence[int],
    gamma: float,
) -> float:
    """Return the multiplier of the base learning rate at optimiser step ``step``.

    Args:
        step: optimiser steps done so far (0 for the first step).
        steps_per_epoch: optimiser steps in one epoch (after gradient accumulation), >= 1.
        warmup_iters: length of the linear warmup in steps (0 disables it).
        warmup_ratio: multiplier at step 0 (the paper: 0.02).
        milestones: epochs after which the rate is multiplied by ``gamma`` (sorted).
        gamma: decay factor at each milestone.
    """
    if step < warmup_iters:
        warm = 1.0 - (1.0 - step / warmup_iters) * (1.0 - warmup_ratio)
    else:
        warm = 1.0
    epoch = step // steps_per_epoch
    return warm * gamma ** bisect.bisect_right(list(milestones), epoch)


class WarmupMultiStepLR(LRScheduler):
    """Per-step scheduler implementing :func:`warmup_multistep_factor` (call ``step()`` each step).

    Args:
        optimizer: the wrapped optimiser (its ``lr`` is the base rate).
        steps_per_epoch: optimiser steps per epoch.
        warmup_iters: warmup length in steps.
        warmup_ratio: starting multiplier of the warmup.
        milestones: epochs of the decays, e.g. ``[8, 11]`` for the 1x schedule.
        gamma: decay factor.
        last_epoch: index of the last step done (``-1`` to start fresh; PyTorch's naming).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        steps_per_epoch: int,
        warmup_iters: int = 500,
        warmup_ratio: float = 0.02,
        milestones: Sequence[int] = (8, 11),
        gamma: float = 0.1,
        last_epoch: int = -1,
    ) -> None:
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        if not 0.0 < warmup_ratio <= 1.0:
            raise ValueError(f"warmup_ratio must be in (0, 1], got {warmup_ratio}")
        if list(milestones) != sorted(milestones):
            raise ValueError(f"milestones must be increasing epochs, got {list(milestones)}")
        self.steps_per_epoch = int(steps_per_epoch)
        self.warmup_iters = int(warmup_iters)
        self.warmup_ratio = float(warmup_ratio)
        self.milestones = [int(m) for m in milestones]
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        """Multiplier of the base rate at optimiser step ``step``."""
        return warmup_multistep_factor(
            step,
            self.steps_per_epoch,
            self.warmup_iters,
            self.warmup_ratio,
            self.milestones,
            self.gamma,
        )

    def get_lr(self) -> list[float]:
        # ``last_epoch`` counts scheduler.step() calls, i.e. optimiser steps here.
        f = self.factor(max(self.last_epoch, 0))
        return [base * f for base in self.base_lrs]
