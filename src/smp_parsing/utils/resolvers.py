"""OmegaConf resolvers used by ``conf/`` (run-directory names, arithmetic on config values).

``${run_id:}`` gives a short identifier unique to this process and call site, so that two jobs
started in the same second (a sweep, or two users on one machine) never share a run directory.
Hydra's own ``${now:...}`` only has one-second resolution.
"""

from __future__ import annotations

import os
import uuid

from omegaconf import OmegaConf


def _run_id() -> str:
    """Return ``<pid>-<6 hex chars>``: the pid tells runs apart on one host, the uuid across hosts."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:6]}"


def register_resolvers() -> None:
    """Register the project's resolvers once (idempotent, safe to call from every entry point)."""
    if not OmegaConf.has_resolver("run_id"):
        # use_cache: the run dir is resolved several times per job and must not change in between.
        OmegaConf.register_new_resolver("run_id", _run_id, use_cache=True)
    if not OmegaConf.has_resolver("mul"):
        OmegaConf.register_new_resolver("mul", lambda a, b: a * b)
    if not OmegaConf.has_resolver("len"):
        OmegaConf.register_new_resolver("len", lambda x: len(x))
