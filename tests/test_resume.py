"""Resume and checkpoint safety: atomic writes; an interrupted run resumed equals an uninterrupted one."""

from __future__ import annotations

import os
import random
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from conftest import compose_config, tiny_train_overrides
from smp_parsing.train import train
from smp_parsing.utils.callbacks import AtomicModelCheckpoint
from smp_parsing.utils.rng_state import collect_rng_state, restore_rng_state


def fake_trainer(save):
    return SimpleNamespace(
        save_checkpoint=save, is_global_zero=True, global_step=7, loggers=[],
        strategy=SimpleNamespace(barrier=lambda *a, **k: None),
    )  # fmt: skip


def test_checkpoint_is_replaced_atomically(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"old complete checkpoint")
    seen = {}

    def save(path, weights_only=False):
        seen["path"] = path
        assert not target.read_bytes().startswith(b"new")  # the target is never written in place
        Path(path).write_bytes(b"new complete checkpoint")

    cb = AtomicModelCheckpoint(dirpath=tmp_path)
    cb._save_checkpoint(fake_trainer(save), str(target))
    assert Path(seen["path"]).parent == tmp_path and seen["path"] != str(target)
    assert target.read_bytes() == b"new complete checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temp file left
    assert cb._last_global_step_saved == 7 and cb._last_checkpoint_saved == str(target)


def test_a_write_killed_midway_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"old complete checkpoint")

    def save(path, weights_only=False):
        Path(path).write_bytes(b"half a chec")
        raise OSError("disk full / job killed")

    with pytest.raises(OSError, match="disk full"):
        AtomicModelCheckpoint(dirpath=tmp_path)._save_checkpoint(fake_trainer(save), str(target))
    assert target.read_bytes() == b"old complete checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # the temp file removed


def test_lightning_saves_through_the_atomic_override(tmp_path: Path, monkeypatch) -> None:
    # The tests above call _save_checkpoint by hand; this one checks that a real fit reaches it
    # (a Lightning release that renamed the hook would silently bypass the atomic write).
    from lightning.pytorch.demos.boring_classes import BoringModel

    written = []
    save = pl.Trainer.save_checkpoint

    def spy(self, filepath, *args, **kwargs):
        written.append(Path(filepath).name)
        return save(self, filepath, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "save_checkpoint", spy)
    callback = AtomicModelCheckpoint(
        dirpath=tmp_path, save_last=True, filename="e{epoch}", auto_insert_metric_name=False
    )
    trainer = pl.Trainer(
        default_root_dir=tmp_path, max_epochs=2, limit_train_batches=2, limit_val_batches=1,
        callbacks=[callback], logger=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(BoringModel())
    pid = os.getpid()
    assert written and all(name.endswith(f".tmp-{pid}") for name in written), written
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["e1.ckpt", "last.ckpt"]
    assert not list(tmp_path.glob("*.tmp-*"))


def test_rng_state_round_trip_and_weights_only_loadable(tmp_path: Path) -> None:
    state = collect_rng_state()
    torch.save({"rng_state": state}, tmp_path / "s.pt")
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)["rng_state"]
    expected = (random.random(), np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    restore_rng_state(loaded)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected  # noqa: NPY002


class CrashAtEpoch(pl.Callback):
    """Kill the run when epoch ``epoch`` starts (its predecessor's checkpoint is on disk)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError(f"simulated crash at the start of epoch {self.epoch}")


@pytest.mark.parametrize("workers", [0, 1])
def test_resumed_run_equals_uninterrupted_run(synthetic_root, tmp_path: Path, workers) -> None:
    # Deterministic kernels; the data order is a function of (seed, epoch) and the train
    # augmentation (flip p=0.5) of (seed, epoch, sample index), so the resumed epoch sees the
    # images and flips the uninterrupted run saw, with a persistent loader worker too (whose
    # first resumed epoch Lightning sets up before it restores the epoch; see data/sampler.py).
    common = tiny_train_overrides(
        synthetic_root, "trainer.max_epochs=3", "trainer.deterministic=true",
        "callbacks.image_logger=null", f"data.num_workers={workers}",
        f"data.persistent_workers={'true' if workers else 'false'}",
    )  # fmt: skip
    train(compose_config("train", common, tmp_path / "straight"))

    crash = ["+callbacks.crash._target_=test_resume.CrashAtEpoch", "+callbacks.crash.epoch=2"]
    with pytest.raises(RuntimeError, match="simulated crash at the start of epoch 2"):
        train(compose_config("train", [*common, *crash], tmp_path / "crashed"))
    last = tmp_path / "crashed" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 4  # 2 epochs x 2 steps

    _, objects = train(
        compose_config("train", [*common, f"ckpt_path={last}"], tmp_path / "resumed")
    )
    assert objects["trainer"].global_step == 6

    a = torch.load(tmp_path / "straight/checkpoints/last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "resumed/checkpoints/last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 6
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    # every optimiser buffer (SGD momentum, AdamW moments and step counts) continues exactly
    state_a = a["optimizer_states"][0]["state"]
    state_b = b["optimizer_states"][0]["state"]
    assert state_a.keys() == state_b.keys() and state_a
    for key in state_a:
        assert state_a[key].keys() == state_b[key].keys()
        for name, value in state_a[key].items():
            assert torch.equal(value, state_b[key][name]), (key, name)
    assert a["lr_schedulers"][0]["last_epoch"] == b["lr_schedulers"][0]["last_epoch"] == 6
    assert not list((tmp_path / "resumed" / "checkpoints").glob("*.tmp-*"))
    assert os.path.exists(tmp_path / "resumed" / "metrics.json")


class SignalAtStep(pl.Callback):
    """Send this process ``signum`` in the step that reaches global step ``step`` (after its
    backward; in stage ``stage`` only when given)."""

    def __init__(self, step: int, signum: int = 2, stage: str | None = None) -> None:
        self.step, self.signum, self.stage = step, signum, stage

    def on_after_backward(self, trainer, pl_module) -> None:
        if trainer.global_step == self.step - 1 and self.stage in (None, pl_module.hparams.stage):
            os.kill(os.getpid(), self.signum)


def test_sigint_stops_after_the_step_with_its_checkpoint(synthetic_root, tmp_path) -> None:
    from smp_parsing.utils.callbacks import Preempted

    # Ctrl-C mid-epoch: the step finishes, preempted.ckpt holds it, the exit says how to resume
    overrides = tiny_train_overrides(
        synthetic_root, "data.batch_size=1", "trainer.limit_train_batches=4",
        "+callbacks.sig._target_=test_resume.SignalAtStep", "+callbacks.sig.step=2",
    )  # fmt: skip
    with pytest.raises(Preempted) as info:
        train(compose_config("train", overrides, tmp_path))
    ckpt = tmp_path / "checkpoints" / "preempted.ckpt"
    assert info.value.code == 143 and info.value.checkpoint == str(ckpt)
    assert info.value.resume_command.endswith(f"ckpt_path={ckpt}")
    state = torch.load(ckpt, weights_only=True)
    assert state["global_step"] == 2 and state["epoch"] == 0
    assert state["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"] == 2
    assert not (tmp_path / "metrics.json").exists()  # not a finished run
    import signal

    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


@pytest.mark.slow
def test_a_job_interrupted_in_its_mir_stage_resumes_the_mir_stage(synthetic_root, tmp_path):
    common = tiny_train_overrides(
        synthetic_root,
        "stage=main_mir",
        "mir_stage.trainer.max_epochs=2",
        "callbacks.image_logger=null",
    )
    crash = ["+callbacks.sig._target_=test_resume.SignalAtStep", "+callbacks.sig.step=3",
             "+callbacks.sig.signum=15", "+callbacks.sig.stage=mir"]  # fmt: skip
    with pytest.raises(SystemExit):
        train(compose_config("train", [*common, *crash], tmp_path))
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()  # the main stage finished
    assert (tmp_path / "checkpoints" / "mir" / "preempted.ckpt").is_file()
    # the requeued job (resume=auto): the newest checkpoint is the MIR stage's, main is done
    _, objects = train(compose_config("train", [*common, "resume=auto"], tmp_path))
    summary = objects["summary"]
    assert list(summary["stages"]) == ["mir"] and objects["trainer"].global_step == 4
    assert Path(summary["last_model_path"]).parent == tmp_path / "checkpoints" / "mir"
