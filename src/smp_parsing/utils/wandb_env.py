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
from pathlib import Path

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
