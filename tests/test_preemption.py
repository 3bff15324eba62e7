"""Pre-emption: SIGTERM a real training process mid-epoch, rerun the job, compare with a straight run.

The runs go through the real entry point (``python -m smp_parsing.train``: Hydra run directory,
signal handling, exit status) in subprocesses. The interrupted job runs as a SLURM job would
(``SLURM_JOB_ID`` set, nothing else of SLURM, so Lightning does not switch to its SLURM
environment): its rerun with the very same command line is what a requeue does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from conftest import TINY_NET_OVERRIDES, tiny_data_overrides

TESTS_DIR = Path(__file__).resolve().parent
PAUSE_STEP = 5  # 4 steps per epoch: the first step of the second epoch, mid-epoch


class PauseAtStep(pl.Callback):
    """During the step that reaches global step ``step`` (after its backward), write ``marker``
    and wait (up to 2 min) for a signal: the signal arrives mid-step, as a scheduler's does."""

    def __init__(self, step: int, marker: str) -> None:
        self.step = step
        self.marker = Path(marker)

    def on_after_backward(self, trainer, pl_module) -> None:
        if trainer.global_step != self.step - 1:
            return
        if trainer.global_rank == 0:
            self.marker.write_text(str(os.getpid()))
        saver = next(c for c in trainer.callbacks if type(c).__name__ == "PreemptionCheckpoint")
        deadline = time.monotonic() + 120
        while saver.signalled is None and time.monotonic() < deadline:
            time.sleep(0.05)


def train_command(synthetic_root: Path, log_dir: Path, *extra: str) -> list[str]:
    overrides = [
        "experiment=synthetic",
        *TINY_NET_OVERRIDES,
        *tiny_data_overrides(synthetic_root),
        # 4 steps of one image per epoch, a persistent loader worker (the data position and the
        # worker's signal shield are part of what is tested), validation at every epoch end
        "data.batch_size=1",
        "data.num_workers=1",
        "data.persistent_workers=true",
        "trainer.max_epochs=2",
        "trainer.limit_val_batches=1",
        "trainer.num_sanity_val_steps=0",
        "trainer.log_every_n_steps=1",
        "trainer.deterministic=true",
        "logger=csv",
        "callbacks.rich_progress_bar=null",
        "callbacks.model_summary=null",
        "callbacks.image_logger=null",
        "extras.print_config=false",
        "test=false",
        f"paths.log_dir={log_dir}/",
        *extra,
    ]
    return [sys.executable, "-m", "smp_parsing.train", *overrides]


def run(cmd: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def the_run_dir(log_dir: Path) -> Path:
    runs = sorted((log_dir / "train" / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def job_env(*drop: str, **extra: str) -> dict[str, str]:
    """This process's environment with the tests on ``PYTHONPATH`` (for ``PauseAtStep``), one
    OpenMP thread, no variable of SLURM or torchelastic (nor those named in ``drop``) and
    ``extra`` on top."""
    env = {**os.environ, "PYTHONPATH": f"{TESTS_DIR}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    for key in [k for k in env if k.startswith(("SLURM_", "TORCHELASTIC_", *drop))]:
        del env[key]
    return {**env, **extra}


def paused_job(
    synthetic_root: Path, log_dir: Path, marker: Path, step: int, *extra: str
) -> list[str]:
    """The training command with ``PauseAtStep(step, marker)`` among its callbacks."""
    return train_command(
        synthetic_root, log_dir, *extra,
        "+callbacks.pause._target_=test_preemption.PauseAtStep",
        f"+callbacks.pause.step={step}", f"+callbacks.pause.marker={marker}",
    )  # fmt: skip


def signal_at_pause(
    job: list[str], env: dict[str, str], marker: Path, signum: int
) -> tuple[int, str]:
    """Start ``job``, send its process group ``signum`` once it waits at the pause step and
    return its exit status and output (stdout and stderr together)."""
    # its own process group: the signal reaches the DataLoader worker too, as SLURM's does
    proc = subprocess.Popen(job, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), "the job never reached the pause step"
        os.killpg(proc.pid, signum)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, output


def assert_same_weights(a: dict, b: dict, global_step: int) -> None:
    """Both checkpoints end at ``global_step`` with identical weights."""
    assert a["global_step"] == b["global_step"] == global_step
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


@pytest.mark.slow
def test_sigterm_mid_epoch_then_requeue_equals_straight_run(synthetic_root, tmp_path) -> None:
    env = job_env(HYDRA_FULL_ERROR="1")
    straight = run(train_command(synthetic_root, tmp_path / "straight"), env)
    assert straight.returncode == 0, straight.stderr[-3000:]

    marker = tmp_path / "paused"
    job = paused_job(synthetic_root, tmp_path / "job", marker, PAUSE_STEP)
    slurm_env = {**env, "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "smp"}
    returncode, output = signal_at_pause(job, slurm_env, marker, signal.SIGTERM)
    assert returncode == 143, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    run_dir = the_run_dir(tmp_path / "job")
    assert run_dir.name == "slurm-4242"
    preempted = run_dir / "checkpoints" / "preempted.ckpt"
    assert "Resume with: python -m smp_parsing.train" in output and str(preempted) in output
    state = torch.load(preempted, map_location="cpu", weights_only=True)
    assert state["global_step"] == PAUSE_STEP and state["epoch"] == 1  # the exact step, mid-epoch
    best_before = next(
        v for k, v in state["callbacks"].items() if "ModelCheckpoint{'monitor': 'val" in k
    )
    assert best_before["best_model_score"] is not None  # epoch 0 was validated

    # the requeued job: the very same command line, into the same directory, from preempted.ckpt
    resumed = run(job, slurm_env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert the_run_dir(tmp_path / "job") == run_dir
    assert (
        f"Resuming from the run's newest checkpoint {preempted}" in resumed.stdout + resumed.stderr
    )

    a = torch.load(the_run_dir(tmp_path / "straight") / "checkpoints/last.ckpt", weights_only=True)
    b = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert_same_weights(a, b, global_step=8)
    # ModelCheckpoint kept its state across the restart: same best score and top-k as straight
    cb_a, cb_b = (
        next(v for k, v in c["callbacks"].items() if "ModelCheckpoint{'monitor': 'val" in k)
        for c in (a, b)
    )
    assert cb_b["best_model_score"] == cb_a["best_model_score"]
    assert [Path(p).name for p in cb_b["best_k_models"]] == [
        Path(p).name for p in cb_a["best_k_models"]
    ]
    assert Path(cb_b["best_model_path"]).parent == run_dir / "checkpoints"
    # one CSV log, continued: the steps before the signal and after it
    steps = (run_dir / "csv" / "main" / "metrics.csv").read_text()
    assert not list((run_dir / "csv").glob("version_*"))
    assert "train/loss_step" in steps.splitlines()[0]


@pytest.mark.slow
def test_slurm_usr1_stops_at_a_step_requeues_and_the_requeued_job_resumes(
    synthetic_root, tmp_path
) -> None:
    # Under Lightning's SLURM environment (auto-requeue) SIGUSR1 ahead of the time limit: every
    # process stops after the same step, preempted.ckpt is saved and rank 0 runs `scontrol
    # requeue <job id>` (Lightning's own handler, which this replaces, would save hpc_ckpt from
    # inside the signal handler, mid-step); a fake scontrol records the call and, as SLURM does
    # when it requeues a running job, sends the job SIGTERM.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol_calls"
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\nkill -TERM $PPID\n')
    (bin_dir / "scontrol").chmod(0o755)
    env = job_env(
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", SLURM_JOB_ID="4343",
        SLURM_JOB_NAME="smp", SLURM_NTASKS="1", SLURM_PROCID="0", SLURM_LOCALID="0",
        SLURM_NODEID="0",
    )  # fmt: skip
    marker = tmp_path / "paused"
    job = paused_job(synthetic_root, tmp_path / "job", marker, PAUSE_STEP)
    # SLURM signals every process of the step
    returncode, output = signal_at_pause(job, env, marker, signal.SIGUSR1)
    assert returncode == 143, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert calls.read_text().split() == ["requeue", "4343"]  # once: not from the worker too
    assert "SLURM job is requeued" in output
    run_dir = the_run_dir(tmp_path / "job")
    assert run_dir.name == "slurm-4343" and not list(run_dir.glob("hpc_ckpt_*"))
    state = torch.load(run_dir / "checkpoints" / "preempted.ckpt", weights_only=True)
    assert state["global_step"] == PAUSE_STEP  # the step reached, not a mid-step state

    resumed = run(job, env)  # the requeued job: same command, same job id
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert the_run_dir(tmp_path / "job") == run_dir
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == 8


@pytest.mark.slow
def test_sigterm_under_ddp_stops_every_rank_at_the_same_step(synthetic_root, tmp_path) -> None:
    # Lightning's `ddp` (the strategy the paper experiments get on several GPUs) on 2 CPU
    # processes (gloo): rank 1 is the command line re-run by rank 0. Both ranks get the signal,
    # Lightning broadcasts rank 0's flag every step, both stop after the same step and save one
    # checkpoint together; the rerun resumes it and ends with the weights of a straight run.
    env = job_env("LOCAL_RANK")
    # the ranks agree on the signal at every step here (the exact step is asserted; the check
    # every n steps: test_a_signal_on_one_ddp_rank_stops_every_rank_at_the_same_step_within_n)
    ddp = ["+trainer.strategy=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
           "data.num_workers=0", "data.persistent_workers=false",
           "callbacks.preemption.sync_every_n_steps=1"]  # fmt: skip
    straight = run(train_command(synthetic_root, tmp_path / "straight", *ddp), env)
    assert straight.returncode == 0, straight.stderr[-3000:]

    marker = tmp_path / "paused"
    step = 3  # 2 steps per epoch and rank: the first step of the second epoch
    job = paused_job(synthetic_root, tmp_path / "job", marker, step, *ddp)
    returncode, output = signal_at_pause(job, env, marker, signal.SIGTERM)
    assert returncode == 143, output[-3000:]
    run_dir = the_run_dir(tmp_path / "job")
    state = torch.load(run_dir / "checkpoints" / "preempted.ckpt", weights_only=True)
    assert state["global_step"] == step

    resumed = run([*job, f"ckpt_path={run_dir / 'checkpoints' / 'preempted.ckpt'}"], env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert the_run_dir(tmp_path / "job") == run_dir
    a = torch.load(the_run_dir(tmp_path / "straight") / "checkpoints/last.ckpt", weights_only=True)
    b = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert_same_weights(a, b, global_step=4)


# --------------------------------------------------------------------------------------------
# How often the DDP ranks agree on a signal: 2 CPU processes (gloo), Lightning's BoringModel.
# --------------------------------------------------------------------------------------------


class SignalOneRank(pl.Callback):
    """Rank ``rank`` alone sends itself SIGTERM during the step that reaches global step
    ``step`` (after its backward); every rank counts the all-reduces of its strategy's
    ``reduce_boolean_decision`` (the pre-emption check's only collective here)."""

    def __init__(self, rank: int, step: int) -> None:
        self.rank, self.step = rank, step
        self.reduces = 0

    def setup(self, trainer, pl_module, stage) -> None:
        reduce = trainer.strategy.reduce_boolean_decision

        def counted(*args, **kwargs):
            self.reduces += 1
            return reduce(*args, **kwargs)

        trainer.strategy.reduce_boolean_decision = counted

    def on_after_backward(self, trainer, pl_module) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step - 1:
            os.kill(os.getpid(), signal.SIGTERM)


def _ddp_rank(rank: int, port: int, out_dir: str, every: int, signal_step: int) -> None:
    """One of 2 DDP ranks (gloo), started as torchrun would (Lightning launches nothing when
    ``LOCAL_RANK`` is set): fits BoringModel until the signal stops it, writes ``rank<r>.pt``."""
    from lightning.pytorch.demos.boring_classes import BoringModel
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from smp_parsing.utils.callbacks import PreemptionCheckpoint
    from smp_parsing.utils.checkpoint_io import AtomicCheckpointIO

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2",
                      NODE_RANK="0", RANK=str(rank), LOCAL_RANK=str(rank))  # fmt: skip
    saver = PreemptionCheckpoint(dirpath=Path(out_dir, "checkpoints"), sync_every_n_steps=every)
    spy = SignalOneRank(1, signal_step)
    trainer = pl.Trainer(
        strategy="ddp", accelerator="cpu", devices=2, max_epochs=1, limit_train_batches=12,
        limit_val_batches=0, plugins=[AtomicCheckpointIO()], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[saver, spy], default_root_dir=out_dir,
    )  # fmt: skip
    stopped = False
    try:
        trainer.fit(BoringModel())
    except SIGTERMException:
        stopped = True
    result = {"stopped": stopped, "step": trainer.global_step, "reduces": spy.reduces}
    torch.save(result, Path(out_dir, f"rank{rank}.pt"))


@pytest.mark.parametrize(
    ("every", "stop_step", "reduces"),
    # the signal in step 5 of 12: seen at the next multiple of `every`, or at the epoch's last
    # batch (every=100: step 12, its only check; the fit then stops after the epoch end)
    [(1, 5, 5), (4, 8, 2), (100, 12, 1)],
)
def test_a_signal_on_one_ddp_rank_stops_every_rank_at_the_same_step_within_n(
    tmp_path, free_port, every: int, stop_step: int, reduces: int
) -> None:
    import torch.multiprocessing as mp

    signal_step = 5
    mp.start_processes(_ddp_rank, args=(free_port, str(tmp_path), every, signal_step), nprocs=2,
                       start_method="fork")  # fmt: skip
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["stopped"] and ranks[1]["stopped"]  # rank 0 was not signalled
    # every rank after the same step, within `every` steps of the signal
    assert ranks[0]["step"] == ranks[1]["step"] == stop_step
    assert signal_step <= stop_step < signal_step + every
    # one all-reduce per `every` steps on each rank (every=4: 2 in 8 steps), not one per step
    assert ranks[0]["reduces"] == ranks[1]["reduces"] == reduces
    state = torch.load(tmp_path / "checkpoints" / "preempted.ckpt", weights_only=False)
    assert state["global_step"] == stop_step
