"""W&B: offline without credentials, always finished, and a real offline run with our keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from smp_parsing.utils import wandb_env


@pytest.fixture
def clean_env(monkeypatch, tmp_path: Path):
    for var in ("WANDB_MODE", "WANDB_API_KEY", "NETRC", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_offline_when_no_credentials(clean_env, monkeypatch) -> None:
    assert wandb_env.ensure_wandb_mode() == "offline"
    import os

    assert os.environ["WANDB_MODE"] == "offline"


def test_key_or_netrc_keeps_online(clean_env, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_env.ensure_wandb_mode() == "online"
    monkeypatch.delenv("WANDB_API_KEY")
    netrc = clean_env / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password secret\n")
    netrc.chmod(0o600)
    assert wandb_env.has_wandb_credentials()
    netrc.write_text("machine example.com\n  login user\n  password secret\n")
    assert not wandb_env.has_wandb_credentials()


def test_explicit_mode_is_respected(clean_env, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_env.ensure_wandb_mode() == "disabled"


def test_task_wrapper_finishes_wandb_on_failure(clean_env, monkeypatch) -> None:
    """A crashing task still closes its W&B run (marked failed) so the next sweep job is clean."""
    import wandb
    from omegaconf import OmegaConf

    from smp_parsing.utils.task_wrapper import task_wrapper

    monkeypatch.setenv("WANDB_MODE", "offline")

    @task_wrapper
    def crashing_task(cfg):
        wandb.init(project="t", dir=str(clean_env))
        assert wandb.run is not None
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        crashing_task(OmegaConf.create({"paths": {"output_dir": str(clean_env)}}))
    assert wandb.run is None
