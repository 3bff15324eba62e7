"""Run-level safety net shared by the entry points (the lightning-hydra-template pattern).

Whatever happens inside a task, the W&B run is finished (a failed sweep job must not leak its run
into the next job of the same process) and the output directory is printed. A run stopped by a
signal (:class:`~smp_parsing.utils.callbacks.preemption.Preempted`) is marked as pre-empted in
W&B, not as crashed: its resume continues the same W&B run.
"""

from __future__ import annotations

import functools
import logging
import sys
import warnings
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from smp_parsing.utils.callbacks.preemption import Preempted
from smp_parsing.utils.wandb_env import ensure_wandb_mode, finish_wandb

log = logging.getLogger(__name__)


def apply_extras(cfg: DictConfig) -> None:
    """Apply the optional niceties of ``cfg.extras`` before a task starts.

    - ``ignore_warnings``: silence Python warnings (noisy third-party deprecations).
    - ``print_config``: print the composed config as a rich tree (and save it to the run dir).
    """
    extras = cfg.get("extras")
    if not extras:
        return
    if extras.get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    if extras.get("print_config"):
        from smp_parsing.utils.rich_config import print_config_tree

        print_config_tree(cfg, save_to_file=True)


def task_wrapper(task: Callable[[DictConfig], tuple[dict, dict]]) -> Callable:
    """Wrap a ``task(cfg) -> (metric_dict, object_dict)`` with the run-level guarantees."""

    @functools.wraps(task)
    def wrapped(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
        ensure_wandb_mode()
        failed = True
        try:
            result = task(cfg)
            failed = False
            return result
        except Preempted:
            failed = False
            _mark_wandb_preempting()
            raise
        except Exception:
            log.exception("Task %s failed.", task.__name__)
            raise
        finally:
            out_dir = OmegaConf.select(cfg, "paths.output_dir", default=None)
            log.info("Output dir: %s", out_dir)
            finish_wandb(failed=failed)

    return wrapped


def _mark_wandb_preempting() -> None:
    if "wandb" in sys.modules:  # never imported: no run to mark
        import wandb

        if wandb.run is not None:
            wandb.run.mark_preempting()
