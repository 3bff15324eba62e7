"""Send the composed config and the model size to every logger once per run."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import OmegaConf


@rank_zero_only
def log_hyperparameters(object_dict: dict[str, Any]) -> None:
    """Log the resolved config (all groups) and parameter counts to the trainer's loggers.

    Args:
        object_dict: ``cfg``, ``model`` and ``trainer`` as built by :func:`smp_parsing.train.train`.
    """
    cfg = object_dict["cfg"]
    model = object_dict["model"]
    trainer = object_dict["trainer"]
    if not trainer.loggers:
        return
    hparams: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    hparams.pop("hydra", None)
    hparams["model/params/total"] = sum(p.numel() for p in model.parameters())
    hparams["model/params/trainable"] = sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )
    for logger in trainer.loggers:
        logger.log_hyperparams(hparams)
