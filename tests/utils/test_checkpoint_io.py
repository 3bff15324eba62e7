"""Atomic checkpoint writes through Lightning's CheckpointIO plugin (every save of the trainer)."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch

from conftest import compose_config
from smp_parsing.utils.checkpoint_io import AtomicCheckpointIO, is_local, writes_atomically


def test_save_replaces_the_file_in_one_step(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "sub" / "hpc_ckpt_1.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1}, target)
    assert torch.load(target, weights_only=True) == {"global_step": 1}
    real_save = torch.save

    def killed_midway(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"half a chec")
        raise OSError("job killed")

    monkeypatch.setattr(torch, "save", killed_midway)
    with pytest.raises(OSError, match="job killed"):
        io.save_checkpoint({"global_step": 2}, target)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(target, weights_only=True) == {"global_step": 1}  # the old one, whole
    assert [p.name for p in target.parent.iterdir()] == ["hpc_ckpt_1.ckpt"]  # no temp file


def test_remote_paths_keep_lightnings_writer() -> None:
    assert is_local("/x/y.ckpt") and is_local("file:///x/y.ckpt") and not is_local("s3://b/y")


TRAINER_CONFIGS = sorted(
    p.stem for p in (Path(__file__).parents[2] / "conf" / "trainer").glob("*.yaml")
)


@pytest.mark.parametrize("entry", ["train", "eval", "predict"])
@pytest.mark.parametrize("trainer", TRAINER_CONFIGS)
def test_every_trainer_writes_checkpoints_atomically(entry: str, trainer: str, tmp_path) -> None:
    # every trainer config of every entry point (the checkpointing callbacks refuse the others)
    overrides = [f"trainer={trainer}"] + (["ckpt_path=x.ckpt"] if entry != "train" else [])
    cfg = compose_config(entry, overrides, tmp_path)
    targets = [p["_target_"] for p in cfg.trainer.plugins]
    assert "smp_parsing.utils.checkpoint_io.AtomicCheckpointIO" in targets
    if trainer == "default" and entry == "train":
        built = hydra.utils.instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
        assert isinstance(built.strategy.checkpoint_io, AtomicCheckpointIO)


def test_the_atomic_writer_is_found_behind_a_wrapper(tmp_path) -> None:
    from lightning.pytorch import Trainer
    from lightning.pytorch.plugins.io import AsyncCheckpointIO

    def trainer(plugins):
        return Trainer(plugins=plugins, logger=False, enable_checkpointing=False,
                       default_root_dir=tmp_path)  # fmt: skip

    assert writes_atomically(trainer([AtomicCheckpointIO()]))
    assert writes_atomically(trainer([AsyncCheckpointIO(AtomicCheckpointIO())]))
    assert not writes_atomically(trainer(None))  # Lightning's TorchCheckpointIO
