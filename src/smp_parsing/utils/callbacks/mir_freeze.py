"""The MIR plug-in stage's freeze (paper section 4.3) as Lightning's ``BaseFinetuning``.

Only the MIR modules train; everything else keeps its weights and stays in eval mode (BatchNorm
statistics frozen, not recomputed from the batch). ``BaseFinetuning.freeze(train_bn=False)``
would instead stop BN from tracking statistics and normalise with each batch's, which changes
the frozen network's outputs, so the modes are set here. Nothing unfreezes later in the stage.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.optim import Optimizer


class MIRStageFreeze(BaseFinetuning):
    """Freeze all of ``pl_module.net`` but ``modules`` before the optimiser is built.

    Args:
        modules: attribute paths inside ``pl_module.net`` that train (``model.mir_modules``).
    """

    def __init__(self, modules: Sequence[str] = ("mir_head",)) -> None:
        super().__init__()
        self.modules = [str(m) for m in modules]

    def trainable(self, net: nn.Module) -> list[nn.Module]:
        """The modules that train.

        Raises:
            ValueError: the network has no such module (built without MIR).
        """
        found = []
        for path in self.modules:
            try:
                found.append(net.get_submodule(path))
            except AttributeError:
                raise ValueError(
                    f"stage='mir' trains net.{path}, but the network has no such module: enable MIR "
                    "in the network config (model.net) or fix model.mir_modules."
                ) from None
        return found

    def freeze_net(self, net: nn.Module) -> None:
        """Freeze ``net`` but the MIR modules (idempotent); usable without a Trainer."""
        trainable = self.trainable(net)
        if hasattr(net, "freeze_for_mir"):
            # SMP also switches its loss to MIR-only and keeps the frozen modules in eval mode
            # across train() calls itself.
            net.freeze_for_mir()
            return
        net.requires_grad_(False)
        self.make_trainable(trainable)
        self.keep_modes(net)

    def keep_modes(self, net: nn.Module) -> None:
        """Frozen modules in eval mode, the trained ones as the net is (train while fitting)."""
        if hasattr(net, "freeze_for_mir"):
            return  # SMP.train does it
        training = net.training
        net.eval()
        for module in self.trainable(net):
            module.train(training)

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        self.freeze_net(pl_module.net)

    def finetune_function(self, pl_module: pl.LightningModule, epoch: int, opt: Optimizer) -> None:
        """Nothing unfreezes during the MIR stage."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # BaseFinetuning would put back the param groups stored at the first epoch start (with
        # that moment's learning rate) on resume; this stage never adds groups, and the restored
        # optimiser already holds the right ones.
        self._restarting = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.keep_modes(pl_module.net)
