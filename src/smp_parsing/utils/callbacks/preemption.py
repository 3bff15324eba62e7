"""Stop at the end of the current step on SIGTERM / SIGINT and save the exact state reached.

Lightning turns SIGTERM into a stop of its loops (``trainer.received_sigterm``, then
``SIGTERMException`` at a step boundary) but saves nothing, and under DDP its handler runs a
``dist.broadcast`` inside the signal handler, at whatever point each rank happens to be: a rank
signalled twice (by the scheduler and by rank 0's launcher) or at another moment than rank 0
issues one collective more than the others, and the next collective mixes up (measured: a gloo
run crashed in the next broadcast). This callback, from the first training batch on,

- replaces the SIGTERM handler (and, with ``catch_sigint``, SIGINT's) by one that only records
  the signal; in one process the flag is read at the end of every step; under DDP the ranks
  agree on it (a 1-element all-reduce, a host sync) at the end of every ``sync_every_n_steps``-th
  global step and of each epoch's last batch, the same steps on every rank, and all of them set
  Lightning's flag together, so every rank stops after the same step, at most
  ``sync_every_n_steps`` steps after the signal; a second Ctrl-C aborts at once;
- saves ``<dirpath>/preempted.ckpt`` in ``on_exception`` (before Lightning finalises the
  loggers), atomically through the trainer's ``AtomicCheckpointIO`` plugin (a temporary file in
  the same directory, then ``os.replace``; a trainer without it is refused): weights,
  optimiser, schedulers, loop progress (epoch and batch within it: the train sampler skips the
  batches already trained, ``data/sampler.py``), callbacks (``ModelCheckpoint``'s best score and
  top-k) and the RNG states (``SMPLitModule.on_save_checkpoint``);
- makes the DataLoader workers ignore SIGTERM / SIGINT / SIGUSR1 / SIGUSR2: SLURM and a
  terminal signal the whole process group, and a worker killed by it makes the main process
  raise "DataLoader worker is killed by signal" (torch's SIGCHLD handler) at an arbitrary point
  instead of stopping at a step boundary. The main process still shuts its workers down when it
  exits (and they exit when it dies).

SLURM's pre-timeout signal (SIGUSR1, ``hydra/launcher=slurm``): under Lightning's
``SLURMEnvironment`` with ``auto_requeue``, Lightning's own handler would save
``hpc_ckpt_<n>.ckpt`` from inside the signal handler (mid-step; with a barrier, the same
collective hazard under DDP) and requeue. This callback takes that signal over (installed before
Lightning's, which then leaves it alone): the ranks stop after the same step as above, save
``preempted.ckpt`` and rank 0 requeues the job (``scontrol requeue``, as Lightning does); the
requeued job keeps its id, hence its run directory, and resumes from that checkpoint by itself.
Without this callback Lightning's requeue runs as usual (``hpc_ckpt``; ``smp_parsing.train``
resumes from it too). ``smp_parsing.train`` turns the stop into :class:`Preempted`, with one
line saying how to resume.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterable
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch.utils.data import DataLoader

from smp_parsing.utils.checkpoint_io import require_atomic_checkpoint_io

log = logging.getLogger(__name__)

# 128 + SIGTERM, what a shell reports for a process stopped by SIGTERM: not a success (a script
# chaining `train && evaluate` must not evaluate an unfinished model), not a crash either.
PREEMPTED_EXIT_CODE = 143
# Signals a DataLoader worker ignores. SLURM's `--signal=USR1@<s>` reaches every process of the
# job step, workers included: by default SIGUSR1 kills a worker, and a worker forked after
# Lightning installed its requeue handler would run that handler (save a checkpoint, requeue)
# in the worker. The main process handles them all.
WORKER_IGNORED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
# the data module methods whose loaders run during a fit
LOADER_METHODS = ("train_dataloader", "val_dataloader")


class Preempted(SystemExit):
    """Training stopped by a signal after saving ``checkpoint`` (exit status 143).

    Attributes:
        checkpoint: the checkpoint of the step reached.
        resume_command: the command line that continues the run.
    """

    def __init__(self, checkpoint: str, resume_command: str) -> None:
        super().__init__(PREEMPTED_EXIT_CODE)
        self.checkpoint = checkpoint
        self.resume_command = resume_command


class IgnoreTerminationSignals:
    """``worker_init_fn`` wrapper: ignore SIGTERM, SIGINT, SIGUSR1 and SIGUSR2 in a DataLoader
    worker (:data:`WORKER_IGNORED_SIGNALS`), then call
    the wrapped function (a class, not a closure, so that it pickles for ``spawn`` workers).

    Without a wrapped function it calls Lightning's ``pl_worker_init_function`` when
    ``seed_everything(workers=True)`` asked for it, as Lightning would have (it only adds its
    own to loaders without a ``worker_init_fn``).
    """

    def __init__(self, fn: Callable[[int], Any] | None = None) -> None:
        self.fn = fn

    def __call__(self, worker_id: int) -> None:
        for signum in WORKER_IGNORED_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        if self.fn is not None:
            self.fn(worker_id)
        elif os.environ.get("PL_SEED_WORKERS") == "1":
            from lightning.fabric.utilities.seed import pl_worker_init_function

            pl_worker_init_function(worker_id)


def _shielded(method: Callable[[], Any]) -> Callable[[], Any]:
    """A data module's ``*_dataloader`` method whose loaders get :class:`IgnoreTerminationSignals`
    (set on the data module instance for the duration of a fit; a function, not a callable
    object, because Lightning compares the ``__code__`` of hooks to find the overridden ones)."""

    @functools.wraps(method)
    def build() -> Any:
        loaders = method()
        shield_workers(loaders)
        return loaders

    build.smp_shielded = True  # type: ignore[attr-defined]
    return build


def _loaders(obj: Any) -> Iterable[DataLoader]:
    if isinstance(obj, DataLoader):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _loaders(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            yield from _loaders(value)


def shield_workers(loaders: Any) -> int:
    """Make the workers the ``loaders`` start from now on ignore the job signals
    (:data:`WORKER_IGNORED_SIGNALS`).

    Returns:
        How many loaders were changed (loaders without workers, or already shielded, are not).
    """
    changed = 0
    for loader in _loaders(loaders):
        if loader.num_workers > 0 and not isinstance(
            loader.worker_init_fn, IgnoreTerminationSignals
        ):
            loader.worker_init_fn = IgnoreTerminationSignals(loader.worker_init_fn)
            changed += 1
    return changed


def slurm_job_id() -> str:
    """The id ``scontrol requeue`` takes (``<array job>_<task>`` for an array task)."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job is not None:
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ["SLURM_JOB_ID"]


def requeue_slurm_job() -> bool:
    """``scontrol requeue <this job>``; False (and a warning) when it fails."""
    job_id = slurm_job_id()
    if not re.fullmatch(r"[0-9_]+", job_id):
        raise ValueError(f"not a SLURM job id: {job_id!r}")
    try:
        result = subprocess.run(["scontrol", "requeue", job_id], check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        log.warning("Requeuing SLURM job %s failed: %s", job_id, err)
        return False
    if result.returncode != 0:
        log.warning("Requeuing SLURM job %s failed (scontrol exit %d)", job_id, result.returncode)
        return False
    log.info("Requeued SLURM job %s: it resumes from its newest checkpoint.", job_id)
    return True


class PreemptionCheckpoint(Callback):
    """On SIGTERM / SIGINT: stop after the current step and save its exact state.

    Args:
        dirpath: directory of the checkpoint (the run's ``checkpoints/``).
        filename: its name, without ``.ckpt``.
        catch_sigint: stop gracefully on the first SIGINT too (SIGTERM always, by Lightning).
        sync_every_n_steps: under DDP, the ranks agree on a signal (one all-reduce) at every
            global step that is a multiple of this, and at the last batch of each epoch; 1: at
            every step. In one process the signal is read at every step (no collective).
    """

    def __init__(
        self,
        dirpath: str | os.PathLike,
        filename: str = "preempted",
        catch_sigint: bool = True,
        sync_every_n_steps: int = 10,
    ) -> None:
        if sync_every_n_steps < 1:
            raise ValueError(f"sync_every_n_steps must be >= 1, got {sync_every_n_steps}")
        self.dirpath = str(dirpath)
        self.filename = filename
        self.catch_sigint = catch_sigint
        self.sync_every_n_steps = int(sync_every_n_steps)
        self._last_sync_step: int | None = None  # the global step of the ranks' last agreement
        self.saved_path: str | None = None
        self.saved_step: int | None = None
        self._trainer: pl.Trainer | None = None
        self._previous: dict[int, Any] = {}  # handlers replaced during the fit
        self.signalled: int | None = None  # the signal received, not yet acted on
        self.requeue_signal: int | None = None  # SLURM's, when this callback requeues
        self.requeued = False

    @property
    def path(self) -> str:
        return os.path.join(self.dirpath, f"{self.filename}.ckpt")

    # ------------------------------------------------------------------ signals
    def _on_signal(self, signum: int, frame: Any) -> None:
        # No collective, no I/O beyond a log line: this runs between two bytecodes of the step.
        if signum == signal.SIGINT and self.signalled is not None:
            # a second Ctrl-C: abort now, as without this callback
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        if self.signalled is None:
            name = signal.Signals(signum).name
            log.warning("%s: stopping after the current step%s.", name,
                        " (Ctrl-C again to abort now)" if signum == signal.SIGINT else "")  # fmt: skip
        self.signalled = signum

    def _sync_now(self, trainer: pl.Trainer) -> bool:
        """Whether the ranks agree on the signal at the end of this batch: a function of the
        global step and of the position in the epoch, hence the same on every rank (the train
        sampler gives every rank the same number of batches)."""
        step = trainer.global_step
        if step == self._last_sync_step:
            return False  # once per global step (gradient accumulation: several batches)
        progress = trainer.fit_loop.epoch_loop.batch_progress
        last_batch = (
            progress.is_last_batch
            or progress.current.ready >= trainer.num_training_batches
            or 0 <= trainer.max_steps <= step
        )
        return step % self.sync_every_n_steps == 0 or last_batch

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        # Every rank runs this at the same steps: agree on the signal, then raise Lightning's
        # flag everywhere; its loop stops at the end of this step (SIGTERMException).
        stop = self.signalled is not None
        if trainer.world_size > 1:
            if not self._sync_now(trainer):
                return
            self._last_sync_step = trainer.global_step
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            trainer._signal_connector.received_sigterm = True

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        require_atomic_checkpoint_io(trainer, self)
        self._trainer = trainer
        self.saved_path = self.saved_step = None
        self.signalled, self.requeued = None, False
        self._last_sync_step = None
        # SLURM's requeue signal: installed now, before Lightning registers its handlers (it
        # does not replace a handler that is already there).
        env = trainer._accelerator_connector.cluster_environment
        self.requeue_signal = None
        if isinstance(env, SLURMEnvironment) and env.auto_requeue and _in_main_thread():
            self.requeue_signal = env.requeue_signal or signal.SIGUSR1
            self._previous[self.requeue_signal] = signal.signal(
                self.requeue_signal, self._on_signal
            )
        # The loaders are built later (and the persistent validation workers started before any
        # hook runs between building and iterating): shield them as the data module builds them.
        datamodule = trainer.datamodule
        for name in LOADER_METHODS if datamodule is not None else ():
            method = getattr(datamodule, name, None)
            if is_overridden(name, datamodule) and not getattr(method, "smp_shielded", False):
                setattr(datamodule, name, _shielded(method))

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._restore(trainer)

    def _restore(self, trainer: pl.Trainer) -> None:
        """Undo :meth:`setup` (after a fit, or an exception: Lightning skips ``teardown`` then)."""
        self._trainer = None
        datamodule = trainer.datamodule
        for name in LOADER_METHODS if datamodule is not None else ():
            if getattr(datamodule.__dict__.get(name), "smp_shielded", False):
                delattr(datamodule, name)  # back to the class's method
        if _in_main_thread():
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
        self._previous = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Here, not in setup: Lightning installs its SIGTERM handler after setup (and snapshots
        # every handler then, to restore them when the fit ends).
        if _in_main_thread():
            signums = [signal.SIGTERM] + ([signal.SIGINT] if self.catch_sigint else [])
            self._previous.update({s: signal.signal(s, self._on_signal) for s in signums})
        # loaders not built by a data module (the train loader's workers start at its first
        # batch; validation workers started by the sanity check are not reached)
        shield_workers(trainer.train_dataloader)
        # the first agreement comes after a step (a resumed run: not at its restored step)
        self._last_sync_step = trainer.global_step

    # --------------------------------------------------------------- the save
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if trainer.state.fn != "fit":
            return
        self._restore(trainer)
        # Only the loops' own stop: they raise it at a step boundary, so the state is that of the
        # last completed step (a KeyboardInterrupt or an error may come from inside a step).
        if not isinstance(exception, SIGTERMException):
            return
        trainer.save_checkpoint(self.path)  # every rank (it may gather state); rank 0 writes
        self.saved_path = self.path
        self.saved_step = trainer.global_step
        if trainer.is_global_zero:
            log.info(
                "Stopped by a signal at epoch %d, global step %d: saved %s",
                trainer.current_epoch, trainer.global_step, self.saved_path,
            )  # fmt: skip
            for logger in trainer.loggers:  # flushed before the requeue may end the job
                logger.save()
            if self.signalled is not None and self.signalled == self.requeue_signal:
                self.requeued = requeue_slurm_job()


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
