"""What the running Hydra job knows about itself: output dir, overrides, sweep membership."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode


def hydra_is_running() -> bool:
    """True inside a ``@hydra.main`` job (False under ``compose`` in tests or notebooks)."""
    return HydraConfig.initialized()


def job_overrides() -> list[str]:
    """The command-line overrides of this job (for a sweep job: its point of the grid)."""
    if not hydra_is_running():
        return []
    return list(HydraConfig.get().overrides.task)


def sweep_group() -> str | None:
    """Name shared by all jobs of one ``--multirun`` (its sweep directory), else ``None``.

    Used as the W&B ``group`` so that the runs of a sweep are shown together.
    """
    if not hydra_is_running():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    return Path(hc.sweep.dir).name


def job_number() -> int | None:
    """Index of this job within its sweep (``hydra.job.num``), ``None`` outside a multirun."""
    if not hydra_is_running():
        return None
    hc = HydraConfig.get()
    return int(hc.job.num) if hc.mode == RunMode.MULTIRUN else None


def check_ddp_launch(strategy: object) -> None:
    """Refuse ``strategy=ddp`` inside a local ``--multirun``.

    Lightning's ``ddp`` starts the other ranks by re-running the command line; inside a multirun
    of the basic (in-process) launcher that command is the whole sweep, so every rank would run
    every job. One job per device set needs a launcher that gives each job its own processes.

    Raises:
        ValueError: with the alternatives.
    """
    if strategy != "ddp" or not hydra_is_running():
        return
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN and str(hc.launcher._target_).endswith("BasicLauncher"):
        raise ValueError(
            "trainer strategy 'ddp' inside a local --multirun would re-run the whole sweep in "
            "every rank: use hydra/launcher=slurm (one SLURM job per sweep point), "
            "trainer=ddp_sim / strategy=ddp_spawn, or run the jobs one by one."
        )
