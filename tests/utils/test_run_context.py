"""Run directories (one per job, the resumed run's own), resume lookup, project root."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from smp_parsing.utils import run_context as rc

JOB_VARS = ("SLURM_JOB_ID", "SLURM_JOB_NAME", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID",
            "SLURM_STEP_ID", "TORCHELASTIC_RUN_ID")  # fmt: skip


@pytest.fixture
def no_job(monkeypatch):
    for name in JOB_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def make_run(root: Path, name: str, overrides: list[str], ckpts=("last.ckpt",), stage="main"):
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (run / "checkpoints").mkdir()
    for ckpt in ckpts:
        torch.save({"hyper_parameters": {"stage": stage}}, run / "checkpoints" / ckpt)
    return run


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({}, None),
        ({"SLURM_JOB_ID": "77", "SLURM_JOB_NAME": "train"}, "slurm-77"),
        ({"SLURM_JOB_ID": "77", "SLURM_JOB_NAME": "train", "SLURM_STEP_ID": "0"}, "slurm-77.0"),
        ({"SLURM_JOB_ID": "80", "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "3"},
         "slurm-77_3"),
        # an interactive allocation is not a job of its own (as Lightning's SLURM detection)
        ({"SLURM_JOB_ID": "77", "SLURM_JOB_NAME": "bash"}, None),
        ({"TORCHELASTIC_RUN_ID": "abc"}, "torchrun-abc"),
        ({"TORCHELASTIC_RUN_ID": "none"}, f"torchrun-{os.getppid()}"),
    ],
)  # fmt: skip
def test_job_key_is_the_same_for_every_rank_and_requeue(no_job, env, key) -> None:
    for name, value in env.items():
        no_job.setenv(name, value)
    assert rc.job_key() == key


def test_run_dir_is_keyed_on_the_job_not_the_process(no_job, tmp_path) -> None:
    local = {rc.choose_run_dir(str(tmp_path)) for _ in range(2)}
    assert len(local) == 2  # two local runs never share a directory
    no_job.setenv("SLURM_JOB_ID", "4242")
    no_job.setenv("SLURM_JOB_NAME", "smp")
    assert rc.choose_run_dir(str(tmp_path)) == str(tmp_path / "slurm-4242")
    assert rc.choose_run_dir(str(tmp_path), resume="auto") == str(tmp_path / "slurm-4242")


def test_a_resumed_checkpoint_continues_in_its_run_directory(no_job, tmp_path) -> None:
    run = make_run(tmp_path, "2026-01-01_00-00-00_1-abc", ["seed=1"])
    ckpt = run / "checkpoints" / "last.ckpt"
    assert rc.choose_run_dir(str(tmp_path), str(ckpt)) == str(run)
    assert rc.run_dir_of_checkpoint(ckpt) == run
    # a checkpoint from another task's tree (evaluate of a train checkpoint) does not redirect
    other = rc.choose_run_dir(str(tmp_path / "eval"), str(ckpt))
    assert Path(other).parent == tmp_path / "eval"
    # stage=mir initialised from a main checkpoint is a new run (its checkpoints/ would replace
    # the main ones); resuming a MIR run continues in place
    assert rc.choose_run_dir(str(tmp_path), str(ckpt), stage="mir") != str(run)
    mir = make_run(tmp_path, "mir_run", [], stage="mir")
    assert rc.choose_run_dir(str(tmp_path), str(mir / "checkpoints/last.ckpt"), stage="mir") == str(
        mir
    )


def test_resume_auto_finds_the_newest_interrupted_run_with_the_same_overrides(no_job, tmp_path):
    old = make_run(tmp_path, "a", ["seed=1", "data.batch_size=2"])
    time.sleep(0.01)
    make_run(tmp_path, "b", ["seed=2"])  # other overrides
    time.sleep(0.01)
    done = make_run(tmp_path, "c", ["data.batch_size=2", "seed=1"])
    (done / "metrics.json").write_text("{}")  # finished
    make_run(tmp_path, "d", ["seed=1", "data.batch_size=2"], ckpts=())  # nothing to resume
    overrides = ["data.batch_size=2", "seed=1", "resume=auto"]
    assert rc.choose_run_dir(str(tmp_path), resume="auto", overrides=overrides) == str(old)
    # without resume=auto (and outside a job) a run always starts afresh
    assert rc.choose_run_dir(str(tmp_path), overrides=overrides) not in {str(old), str(done)}


def test_find_resume_checkpoint_takes_the_newest_file(tmp_path) -> None:
    assert rc.find_resume_checkpoint(tmp_path) is None
    run = make_run(tmp_path, "r", [], ckpts=("epoch_000.ckpt", "last.ckpt"))
    time.sleep(0.01)
    (run / "hpc_ckpt_1.ckpt").write_bytes(b"x")  # Lightning's SLURM requeue checkpoint
    assert rc.find_resume_checkpoint(run) == run / "hpc_ckpt_1.ckpt"
    time.sleep(0.01)
    (run / "checkpoints" / "mir").mkdir()
    (run / "checkpoints" / "mir" / "preempted.ckpt").write_bytes(b"x")
    assert rc.find_resume_checkpoint(run) == run / "checkpoints" / "mir" / "preempted.ckpt"


def test_wants_resume(no_job) -> None:
    assert rc.wants_resume("auto") and not rc.wants_resume(False) and not rc.wants_resume(None)
    no_job.setenv("TORCHELASTIC_RUN_ID", "x")
    assert rc.wants_resume(None)  # a restarted torchrun / requeued SLURM job continues
    assert not rc.wants_resume(False)
    with pytest.raises(ValueError, match="resume must be"):
        rc.wants_resume("yes")


def test_project_root_does_not_depend_on_the_working_directory(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("PROJECT_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    root = Path(rc.project_root())
    assert (root / "conf" / "train.yaml").is_file() and root != tmp_path
    monkeypatch.setenv("PROJECT_ROOT", str(tmp_path))
    assert rc.project_root() == str(tmp_path)


@pytest.mark.parametrize(("gpus", "refused"), [(8, True), (1, False), (0, False)])
def test_auto_strategy_on_several_gpus_inside_a_local_multirun_is_refused(
    monkeypatch, tmp_path, gpus, refused
) -> None:
    from conftest import compose_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    # experiment=mhp_*: accelerator/devices/strategy auto -> Lightning's ddp on 8 GPUs, which
    # re-runs the command line (here: the whole sweep) in every rank
    cfg = compose_config("train", ["experiment=mhp_r101_dcn", "hydra.mode=MULTIRUN"], tmp_path)
    t = cfg.trainer
    if refused:
        with pytest.raises(ValueError, match="re-run the whole sweep in every rank"):
            rc.check_ddp_launch(t.strategy, t.devices, t.accelerator, t.num_nodes)
    else:
        rc.check_ddp_launch(t.strategy, t.devices, t.accelerator, t.num_nodes)
    assert rc.device_count("0,1") == 2 and rc.device_count([0, 1, 2]) == 3
