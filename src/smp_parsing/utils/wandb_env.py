"""Weights & Biases environment: offline unless the user has credentials, always finished.

W&B in online mode without a key blocks for about 100 s before failing (see
``shared/spec/environment.md``). We therefore switch to offline mode when neither
``WANDB_API_KEY`` nor a ``~/.netrc`` entry for the W&B host exists, and never touch an explicit
``WANDB_MODE`` the user has set.
"""

from __future__ import annotations

import logging
import netrc
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WANDB_HOST = "api.wandb.ai"


def has_wandb_credentials(netrc_path: str | os.PathLike | None = None) -> bool:
    """Return True when an API key is set in the environment or stored in a netrc file.

    Args:
        netrc_path: netrc file to read; defaults to ``$NETRC`` or ``~/.netrc``.
    """
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = Path(netrc_path or os.environ.get("NETRC") or Path.home() / ".netrc")
    if not path.is_file():
        return False
    host = os.environ.get("WANDB_BASE_URL", f"https://{WANDB_HOST}").split("://")[-1].rstrip("/")
    try:
        return netrc.netrc(str(path)).authenticators(host) is not None
    except (netrc.NetrcParseError, OSError) as err:
        log.warning("Cannot read %s (%s); treating W&B as not logged in.", path, err)
        return False


def ensure_wandb_mode(netrc_path: str | os.PathLike | None = None) -> str:
    """Set ``WANDB_MODE=offline`` when no credentials exist and no mode was chosen.

    Returns:
        The effective mode (``online``, ``offline``, ``disabled`` ...).
    """
    if "WANDB_MODE" not in os.environ and not has_wandb_credentials(netrc_path):
        os.environ["WANDB_MODE"] = "offline"
        log.info(
            "No W&B API key found: logging to W&B in offline mode (sync later with `wandb sync`)."
        )
    return os.environ.get("WANDB_MODE", "online")


def point_wandb_dir(save_dir: str | os.PathLike) -> None:
    """Make ``save_dir`` the W&B directory of every process of this job (``WANDB_DIR``).

    The logger passes ``dir=save_dir`` to ``wandb.init`` in the process that creates the run.
    Under ``ddp_spawn`` (``trainer=ddp_sim``) that is the parent: Lightning's ``WandbLogger``
    creates the run before pickling itself, and the spawned rank 0 attaches to it, with W&B's
    default directory, so its media (images, masks, tables) landed in ``./wandb`` of the working
    directory. Spawned processes inherit the environment, so they write under ``save_dir`` too.

    Args:
        save_dir: the ``WandbLogger``'s ``save_dir`` (the job's output directory).
    """
    os.environ["WANDB_DIR"] = str(save_dir)


def finish_wandb(failed: bool) -> None:
    """Finish the active W&B run, if any, so the next job of a sweep starts a fresh one.

    Args:
        failed: marks the run as crashed (exit code 1) instead of finished.
    """
    if "wandb" not in sys.modules:  # never imported: nothing to finish, and do not pay the import
        return
    import wandb

    if wandb.run is not None:
        log.info("Closing the W&B run %s.", wandb.run.id)
        wandb.finish(exit_code=1 if failed else 0)


def log_tables_run(
    tables: Mapping[str, tuple[Sequence[str], Sequence[Sequence[Any]]]],
    save_dir: str | os.PathLike,
    project: str = "smp_parsing",
    group: str | None = None,
    job_type: str | None = None,
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> str:
    """Log tables as ``wandb.Table``s in one short W&B run of their own, then finish it.

    For results computed outside a training job (``report``'s sweep table): with ``group`` set to
    the sweep's group the table sits next to the sweep's runs in the dashboard.

    Args:
        tables: ``{key: (columns, rows)}``.
        save_dir: folder the run's files go to (``<save_dir>/wandb/``).
        project: W&B project.
        group: W&B group (the sweep's: its multirun directory name).
        job_type: W&B job type (e.g. ``report``).
        name: run name.
        config: run config.

    Returns:
        The run's id.
    """
    ensure_wandb_mode()
    import wandb

    Path(save_dir).mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=project, group=group, job_type=job_type, name=name,
                     dir=str(save_dir), config=dict(config or {}))  # fmt: skip
    try:
        run.log({key: wandb.Table(columns=list(columns), data=[list(r) for r in rows])
                 for key, (columns, rows) in tables.items()})  # fmt: skip
    except BaseException:
        run.finish(exit_code=1)
        raise
    run.finish()
    return run.id
