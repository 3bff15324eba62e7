"""Build callbacks and loggers from their config groups (one ``_target_`` node per entry)."""

from __future__ import annotations

import logging

import hydra
from lightning.pytorch import Callback
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig

from smp_parsing.utils.wandb_env import point_wandb_dir

log = logging.getLogger(__name__)


def _targets(cfg: DictConfig | None, what: str) -> list[tuple[str, DictConfig]]:
    """Return the ``(name, node)`` pairs of a group that carry a ``_target_``."""
    if not cfg:
        log.info("No %s configured.", what)
        return []
    if not isinstance(cfg, DictConfig):
        raise TypeError(f"The {what} config must be a mapping of name -> node, got {type(cfg)}.")
    return [(k, v) for k, v in cfg.items() if isinstance(v, DictConfig) and "_target_" in v]


def instantiate_callbacks(callbacks_cfg: DictConfig | None) -> list[Callback]:
    """Instantiate every callback of the ``callbacks`` group.

    Args:
        callbacks_cfg: mapping ``name -> {_target_: ..., **kwargs}``; entries set to ``null``
            (switched off by an override) are skipped.

    Returns:
        The callbacks, in config order.
    """
    callbacks: list[Callback] = []
    for name, node in _targets(callbacks_cfg, "callbacks"):
        log.info("Instantiating callback %s <%s>", name, node._target_)
        callbacks.append(hydra.utils.instantiate(node))
    return callbacks


def instantiate_loggers(logger_cfg: DictConfig | None) -> list[Logger]:
    """Instantiate every logger of the ``logger`` group (same layout as the callbacks)."""
    loggers: list[Logger] = []
    for name, node in _targets(logger_cfg, "loggers"):
        log.info("Instantiating logger %s <%s>", name, node._target_)
        logger = hydra.utils.instantiate(node)
        if isinstance(logger, WandbLogger) and logger.save_dir:
            point_wandb_dir(logger.save_dir)  # spawned DDP ranks write there too
        loggers.append(logger)
    return loggers
