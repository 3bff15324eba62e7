"""Stop training at the first non-finite loss, before the bad gradient reaches the weights.

Under fp16 loss scaling (``trainer.precision=16-mixed``, never a default) an overflowing step is
normal: the GradScaler finds the inf/NaN gradients, skips that optimiser step and lowers its
scale, and the weights stay finite. The guard then lets ``max_scaler_skips`` such steps in a row
pass (with a warning) and stops only when the overflow persists. Under fp32 and bf16 (no scaler)
the first non-finite loss stops the run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import lightning.pytorch as pl
import torch
from lightning.pytorch import Callback

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Raised when the total training loss is NaN or infinite."""


def format_loss_terms(terms: Mapping[str, torch.Tensor | float]) -> str:
    """Render ``{"loss_center": 0.5, ...}`` as ``loss_center=0.5, ...`` with non-finite ones marked."""
    parts = []
    for name, value in terms.items():
        v = float(value.detach().float().cpu()) if isinstance(value, torch.Tensor) else float(value)
        flag = "" if math.isfinite(v) else "  <-- non-finite"
        parts.append(f"{name}={v:.6g}{flag}")
    return ", ".join(parts)


class NonFiniteLossGuard(Callback):
    """Raise :class:`NonFiniteLossError` naming the step and every loss term.

    Hooked on ``on_before_backward`` so that the optimiser never steps on a NaN gradient: the
    weights of the last checkpoint and of the in-memory model stay finite. The loss terms are read
    from ``pl_module.last_loss_terms`` (set by :class:`~smp_parsing.lit_module.SMPLitModule`).

    Args:
        max_scaler_skips: with a GradScaler (fp16), consecutive non-finite steps left to the
            scaler (it skips their optimiser step) before the guard stops the run.
    """

    def __init__(self, max_scaler_skips: int = 20) -> None:
        self.max_scaler_skips = max_scaler_skips
        self.scaler_skips = 0  # consecutive steps left to the GradScaler

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        finite = bool(torch.isfinite(loss.detach()).all())
        # Under DDP every rank must stop together (a rank that raised alone would leave the
        # others waiting in the gradient all-reduce): any rank's NaN stops all of them.
        if not trainer.strategy.reduce_boolean_decision(not finite, all=False):
            self.scaler_skips = 0
            return
        scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
        if scaler is not None and self.scaler_skips < self.max_scaler_skips:
            # every rank takes this branch together (the decision above is shared)
            self.scaler_skips += 1
            log.warning(
                "Non-finite loss at global step %d under fp16 loss scaling: the GradScaler skips "
                "this step (%d in a row; the run stops after %d).",
                trainer.global_step, self.scaler_skips, self.max_scaler_skips,
            )  # fmt: skip
            return
        terms = getattr(pl_module, "last_loss_terms", None) or {"loss": loss}
        where = "another rank" if finite else f"rank {trainer.global_rank}"
        persisted = (
            f" ({self.scaler_skips + 1} steps in a row under fp16 loss scaling)" if scaler else ""
        )
        raise NonFiniteLossError(
            f"Non-finite training loss on {where}{persisted} at global step {trainer.global_step} "
            f"(epoch {trainer.current_epoch}, batch {trainer.fit_loop.epoch_loop.batch_idx}): "
            f"{format_loss_terms(terms)}. Training stopped before the optimiser step; try a lower "
            "learning rate, a longer warmup, or check the batch's annotations."
        )
