"""Compose the project's Hydra config outside ``@hydra.main`` (tests, benchmarks, notebooks).

One helper instead of hand-merged YAML files: what a test or a benchmark builds is what the
entry points compose, defaults lists, packages and interpolations included.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

from omegaconf import DictConfig, open_dict

# conf/ at the repository root (src/smp_parsing/utils/compose.py -> ../../../conf)
CONFIG_DIR = str(Path(__file__).resolve().parents[3] / "conf")


def compose_config(
    config_name: str | None = None,
    overrides: Sequence[str] = (),
    output_dir: str | PathLike[str] | None = None,
) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` (or only the ``+group=option`` overrides).

    Args:
        config_name: a primary config of ``conf/`` (``"train"``, ``"eval"``, ``"predict"``),
            or ``None`` to compose nothing but ``overrides`` (e.g. ``["+data=synthetic"]``).
        overrides: Hydra command-line overrides, as typed after the entry point.
        output_dir: a run folder: when given, the config is composed with its Hydra runtime
            section, registered as the current ``HydraConfig`` (so ``${hydra:...}``
            interpolations resolve and ``train(cfg)`` / ``evaluate(cfg)`` can be called as
            plain functions, as ``@hydra.main`` would), and ``paths.output_dir``,
            ``paths.log_dir`` and ``paths.data_dir`` point into it.

    Returns:
        The composed config (unresolved, struct mode as Hydra leaves it).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    # the resolvers the configs name are registered by importing smp_parsing.utils (this package)
    with_run = output_dir is not None
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides),
                      return_hydra_config=with_run)  # fmt: skip
    if not with_run:
        return cfg
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir)
        cfg.paths.data_dir = str(output_dir)
    return cfg


__all__ = ["CONFIG_DIR", "compose_config"]
