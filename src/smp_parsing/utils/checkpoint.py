"""Rebuild a trained :class:`~smp_parsing.lit_module.SMPLitModule` from a checkpoint file.

Training stores the resolved ``model`` config in every checkpoint (``smp_model_config``), so
``evaluate`` and ``predict`` need only ``ckpt_path``: the network is built exactly as it was
trained, whatever the defaults of the command line. Backbone pretrained-weight loading is switched
off for the rebuild (the checkpoint overwrites every weight, and no download must be attempted).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

# Keys of a backbone config that request ImageNet weights; cleared before a rebuild.
PRETRAINED_KEYS = ("pretrained", "weights", "weights_path", "checkpoint")


def read_checkpoint(ckpt_path: str | Path) -> dict[str, Any]:
    """Load a checkpoint on the CPU with a clear error for missing or unreadable files."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated file, not a torch file, ...
        raise ValueError(
            f"{path}: not a readable checkpoint ({type(err).__name__}: {err})"
        ) from err
    if "state_dict" not in ckpt:
        raise ValueError(f"{path}: no 'state_dict' entry; is this a Lightning checkpoint?")
    return ckpt


def _no_pretrained(model_cfg: DictConfig) -> DictConfig:
    backbone = OmegaConf.select(model_cfg, "net.backbone")
    if isinstance(backbone, DictConfig):
        for key in PRETRAINED_KEYS:
            if key in backbone and backbone[key] not in (None, False):
                backbone[key] = False if isinstance(backbone[key], bool) else "none"
    return model_cfg


def load_lit_module(
    ckpt_path: str | Path,
    fallback_model_cfg: DictConfig | None = None,
    overrides: DictConfig | dict | None = None,
):
    """Instantiate the LightningModule of a checkpoint and load its weights (strict).

    Args:
        ckpt_path: a checkpoint written by ``smp_parsing.train``.
        fallback_model_cfg: ``model`` config used when the checkpoint carries none.
        overrides: merged into the model config before building, for settings that do not
            change the weights, e.g. ``{"net": {"test_cfg": {"ctr_score_thr": 0.05}}}``.

    Returns:
        The module in eval mode, on the CPU.

    Raises:
        ValueError: the checkpoint has no config and no fallback is given, or its weights do not
            fit the network (names the file).
    """
    ckpt = read_checkpoint(ckpt_path)
    stored = ckpt.get("smp_model_config")
    if stored is not None:
        model_cfg = OmegaConf.create(stored)
    elif fallback_model_cfg is not None:
        log.warning("%s carries no model config: building the network from the command line.",
                    ckpt_path)  # fmt: skip
        model_cfg = fallback_model_cfg.copy()
    else:
        raise ValueError(f"{ckpt_path}: carries no model config and no fallback was given")
    if overrides:
        model_cfg = OmegaConf.merge(model_cfg, overrides)
    model = hydra.utils.instantiate(_no_pretrained(model_cfg))
    model.model_config = OmegaConf.to_container(model_cfg, resolve=True)
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as err:
        raise ValueError(f"{ckpt_path}: weights do not fit the network built: {err}") from err
    return model.eval()
