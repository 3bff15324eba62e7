"""Resume and checkpoint safety: atomic writes; an interrupted run resumed equals an uninterrupted one."""

from __future__ import annotations

import os
import random
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from conftest import compose_config, tiny_train_overrides
from smp_parsing.train import train
from smp_parsing.utils.callbacks import AtomicModelCheckpoint, PreemptionCheckpoint
from smp_parsing.utils.checkpoint_io import AtomicCheckpointIO
from smp_parsing.utils.rng_state import collect_rng_state, restore_rng_state


def boring_fit(tmp_path: Path, callback: pl.Callback, epochs: int = 1, **kwargs) -> pl.Trainer:
    """Fit Lightning's ``BoringModel`` (2 steps an epoch) with ``callback`` and the trainer's
    checkpoint writer of ``conf/trainer/default.yaml`` (``AtomicCheckpointIO``)."""
    from lightning.pytorch.demos.boring_classes import BoringModel

    trainer = pl.Trainer(
        default_root_dir=tmp_path, max_epochs=epochs, limit_train_batches=2, limit_val_batches=1,
        callbacks=[callback], logger=False, enable_progress_bar=False, enable_model_summary=False,
        **{"plugins": [AtomicCheckpointIO()], **kwargs},
    )  # fmt: skip
    trainer.fit(BoringModel())
    return trainer


class SaveSpy:
    """Records the files ``torch.save`` writes and the ``os.replace`` calls (the real save path:
    trainer -> strategy -> checkpoint writer), optionally checking the target at each write."""

    def __init__(self, monkeypatch, check=None, fail: bool = False) -> None:
        self.saved: list[str] = []
        self.replaced: list[tuple[str, str]] = []
        real_save, real_replace = torch.save, os.replace

        def save(obj, path, *args, **kwargs):
            self.saved.append(str(path))
            if check is not None:
                check(str(path))
            if fail:
                Path(path).write_bytes(b"half a chec")
                raise OSError("disk full / job killed")
            return real_save(obj, path, *args, **kwargs)

        def replace(src, dst, *args, **kwargs):
            self.replaced.append((str(src), str(dst)))
            return real_replace(src, dst, *args, **kwargs)

        monkeypatch.setattr(torch, "save", save)
        monkeypatch.setattr(os, "replace", replace)


def test_checkpoint_is_replaced_atomically(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"old complete checkpoint")

    def check(path: str) -> None:  # the target is never written in place: old or whole
        assert path != str(target)
        old = target.read_bytes() == b"old complete checkpoint"
        assert old or torch.load(target, weights_only=False)["global_step"] >= 0

    spy = SaveSpy(monkeypatch, check)
    # no version counter: last.ckpt is replaced (as in a resumed run), not kept beside last-v1
    cb = AtomicModelCheckpoint(
        dirpath=tmp_path,
        filename="e{epoch}",
        auto_insert_metric_name=False,
        save_last=True,
        enable_version_counter=False,
    )
    trainer = boring_fit(tmp_path, cb)
    assert spy.saved and all(Path(p).parent == tmp_path for p in spy.saved)
    assert torch.load(target, weights_only=False)["global_step"] == trainer.global_step == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e0.ckpt", "last.ckpt"]  # no temp file
    assert cb._last_global_step_saved == 2 and cb._last_checkpoint_saved == str(target)


def test_a_write_killed_midway_leaves_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"old complete checkpoint")
    SaveSpy(monkeypatch, fail=True)
    cb = AtomicModelCheckpoint(
        dirpath=tmp_path, save_last=True, save_top_k=0, enable_version_counter=False
    )
    with pytest.raises(OSError, match="disk full"):
        boring_fit(tmp_path, cb)
    assert target.read_bytes() == b"old complete checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # the temp file removed


def test_lightning_saves_through_the_atomic_writer_one_temp_file_per_save(
    tmp_path: Path, monkeypatch
) -> None:
    # A real fit reaches the trainer's AtomicCheckpointIO for every checkpoint file, and each
    # save is one temp file + one rename (the callback adds no second layer of its own).
    written = []
    save = pl.Trainer.save_checkpoint

    def trainer_save(self, filepath, *args, **kwargs):
        written.append(Path(filepath).name)
        return save(self, filepath, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "save_checkpoint", trainer_save)
    spy = SaveSpy(monkeypatch)
    callback = AtomicModelCheckpoint(
        dirpath=tmp_path, save_last=True, filename="e{epoch}", auto_insert_metric_name=False
    )
    boring_fit(tmp_path, callback, epochs=2)
    pid = os.getpid()
    names = [Path(p).name for p in spy.saved]
    assert names and all(name.endswith(f".tmp-{pid}") for name in names), names
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["e1.ckpt", "last.ckpt"]
    assert not list(tmp_path.glob("*.tmp-*"))
    # one temp file and one rename per trainer.save_checkpoint, the rename onto its target
    assert len(spy.saved) == len(spy.replaced) == len(written)
    assert [Path(dst).name for _, dst in spy.replaced] == written
    assert all(src == f"{dst}.tmp-{pid}" for src, dst in spy.replaced)


@pytest.mark.parametrize("callback", ["model_checkpoint", "preemption"])
def test_checkpointing_callbacks_refuse_a_trainer_without_the_atomic_writer(
    tmp_path: Path, callback: str
) -> None:
    cb = (
        AtomicModelCheckpoint(dirpath=tmp_path)
        if callback == "model_checkpoint"
        else PreemptionCheckpoint(dirpath=tmp_path)
    )
    with pytest.raises(RuntimeError, match=r"write checkpoints atomically.*AtomicCheckpointIO"):
        boring_fit(tmp_path, cb, plugins=None)
    assert not list(tmp_path.rglob("*.ckpt"))


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
