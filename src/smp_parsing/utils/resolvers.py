"""OmegaConf resolvers used by ``conf/`` (run-directory names, arithmetic on config values).

``${run_id:}`` gives a short identifier unique to this process and call site, so that two jobs
started in the same second (a sweep, or two users on one machine) never share a run directory.
Hydra's own ``${now:...}`` only has one-second resolution.

``${run_dir:...}`` is the training run directory (:func:`~smp_parsing.utils.run_context.choose_run_dir`:
the resumed run's own, one per SLURM / torchrun job, else a new one) and
``${default_precision:<accelerator>}`` the machine's training precision
(:func:`~smp_parsing.utils.accelerator.default_precision`).
"""

from __future__ import annotations

import os
import uuid

from omegaconf import OmegaConf

from smp_parsing.utils.accelerator import default_precision
from smp_parsing.utils.run_context import choose_run_dir, job_key, local_run_name, project_root


def _run_id() -> str:
    """Return ``<pid>-<6 hex chars>``: the pid tells runs apart on one host, the uuid across hosts."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _run_dir(runs_root: str, ckpt_path=None, resume=None, overrides=None, stage=None) -> str:
    overrides = (
        list(OmegaConf.to_container(overrides)) if OmegaConf.is_config(overrides) else overrides
    )
    return choose_run_dir(runs_root, ckpt_path, resume, overrides, stage)


def _slurm_devices(devices: object) -> int:
    """``trainer.devices`` as the GPUs (tasks) per node of a SLURM job: a number."""
    try:
        return int(devices)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ValueError(
            f"hydra/launcher=slurm needs trainer.devices = GPUs per node as a number (e.g. "
            f"trainer.devices=8 or trainer=ddp_slurm), not {devices!r}: the submission must "
            "know how many tasks to start on each node."
        ) from None


def register_resolvers() -> None:
    """Register the project's resolvers once (idempotent, safe to call from every entry point)."""
    if not OmegaConf.has_resolver("run_id"):
        # use_cache: the run dir is resolved several times per job and must not change in between.
        OmegaConf.register_new_resolver("run_id", _run_id, use_cache=True)
    if not OmegaConf.has_resolver("run_dir"):
        OmegaConf.register_new_resolver("run_dir", _run_dir, use_cache=True)
    if not OmegaConf.has_resolver("run_name"):
        # a sweep directory: the job key under SLURM / torchrun, else date + pid + random hex
        OmegaConf.register_new_resolver(
            "run_name", lambda: job_key() or local_run_name(), use_cache=True
        )
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", project_root)
    if not OmegaConf.has_resolver("default_precision"):
        OmegaConf.register_new_resolver("default_precision", default_precision)
    if not OmegaConf.has_resolver("slurm_devices"):
        OmegaConf.register_new_resolver("slurm_devices", _slurm_devices)
    if not OmegaConf.has_resolver("mul"):
        OmegaConf.register_new_resolver("mul", lambda a, b: a * b)
    if not OmegaConf.has_resolver("len"):
        OmegaConf.register_new_resolver("len", lambda x: len(x))
