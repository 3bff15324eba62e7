"""Train SMP: ``python -m smp_parsing.train experiment=<name> [overrides]``.

Stages (``stage=...``, paper section 4.3):
    ``main``      the whole network on the eq. 2 loss (default);
    ``mir``       only the MIR plug-in, the rest frozen, initialised from ``ckpt_path``
                  (``experiment=... stage=mir ckpt_path=<main run>/checkpoints/last.ckpt``);
    ``main_mir``  both, one after the other, in one job (what a Table 3 sweep needs).

``ckpt_path=<run>/checkpoints/last.ckpt`` with ``stage=main`` resumes an interrupted run
(weights, optimiser, schedule, loop counters, data position, RNG, best score) in that run's own
directory (hydra/default.yaml), with the same CSV / TensorBoard versions and W&B run.
``resume=auto`` finds the newest checkpoint of the run by itself; inside a SLURM / torchrun job
that is the default, so a requeued job continues where it stopped (in whichever stage).
SIGTERM / SIGINT stop after the current step with ``checkpoints/preempted.ckpt``, exit status 143
and one line saying how to resume (utils/callbacks/preemption.py). The job writes
``<output_dir>/metrics.json`` with the best/last checkpoint paths and the final metrics (the mark
of a finished run), and returns ``cfg.optimized_metric`` for Optuna.
"""

from __future__ import annotations

import logging
import shlex
import uuid
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

import smp_parsing.utils  # noqa: F401  (registers the config resolvers)
from smp_parsing.utils.accelerator import deterministic_mode
from smp_parsing.utils.callbacks.preemption import Preempted, PreemptionCheckpoint
from smp_parsing.utils.checkpoint import inference_metadata
from smp_parsing.utils.hyperparams import log_hyperparameters
from smp_parsing.utils.instantiators import instantiate_callbacks, instantiate_loggers
from smp_parsing.utils.run_context import (
    START_OVERRIDES,
    check_ddp_launch,
    find_resume_checkpoint,
    job_key,
    job_number,
    job_overrides,
    sweep_group,
    wants_resume,
)
from smp_parsing.utils.run_files import METRICS_FILE, metrics_summary, write_json_atomic
from smp_parsing.utils.task_wrapper import apply_extras, task_wrapper
from smp_parsing.utils.wandb_env import finish_wandb

log = logging.getLogger(__name__)

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
STAGE_PLANS: dict[str, tuple[str, ...]] = {
    "main": ("main",),
    "mir": ("mir",),
    "main_mir": ("main", "mir"),
}


def stage_config(cfg: DictConfig, stage: str, after_main: bool) -> DictConfig:
    """Return the config of one stage of the job (a copy; ``cfg`` is left as it is).

    ``stage=main`` and ``stage=mir`` are composed statically by Hydra (conf/stage/): the job's
    config is the stage's. Only ``stage=main_mir`` runs two configs in one job: its MIR stage is
    the job's config with the ``mir_stage`` node (conf/stage/overrides/mir.yaml, the same file
    ``stage=mir`` composes at the top level) merged over it. When the MIR stage follows a main
    stage its checkpoints (every callback's ``dirpath``) go to ``<checkpoints>/mir`` and
    Lightning's own files (SLURM ``hpc_ckpt_*``) to ``<run>/mir``.
    """
    out = cfg.copy()
    overrides = cfg.get("mir_stage")
    with open_dict(out):
        out.pop("mir_stage", None)
        if stage == "mir" and overrides is not None:
            out.merge_with(overrides)
        if out.model.get("stage") != stage:
            raise ValueError(
                f"stage {stage!r} of stage={cfg.stage}: the config trains model.stage="
                f"{out.model.get('stage')!r} (conf/stage/)"
            )
        if stage == "mir" and after_main:
            for cb in (out.get("callbacks") or {}).values():
                if isinstance(cb, DictConfig) and cb.get("dirpath"):
                    cb.dirpath = str(Path(cb.dirpath) / "mir")
            if out.trainer.get("default_root_dir"):
                out.trainer.default_root_dir = str(Path(out.trainer.default_root_dir) / "mir")
    return out


def save_stage_config(cfg: DictConfig, stage: str) -> Path | None:
    """Write a stage's config as ``<run>/.hydra/config_<stage>.yaml`` (rank 0).

    For ``stage=main_mir``, whose second stage is not the job's composed config
    (``.hydra/config.yaml``): each stage's file is what that stage ran.
    """
    if rank_zero_only.rank != 0:
        return None
    path = Path(cfg.paths.output_dir) / ".hydra" / f"config_{stage}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, path, resolve=True)
    return path


def load_init_weights(model: pl.LightningModule, ckpt_path: str, trainable: list[str]) -> None:
    """Load a main-stage checkpoint into a MIR-stage model.

    Only keys of the modules trained in this stage (``net.<mir module>``) may be missing: anything
    else missing or unexpected means the checkpoint belongs to a different network.

    Raises:
        ValueError: naming the checkpoint and the offending keys.
    """
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"]
    result = model.load_state_dict(state, strict=False)
    prefixes = tuple(f"net.{m}." for m in trainable)
    missing = [k for k in result.missing_keys if not k.startswith(prefixes)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{ckpt_path}: does not match the network of this config: missing "
            f"{missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected "
            f"{result.unexpected_keys[:5]}{'...' if len(result.unexpected_keys) > 5 else ''}"
        )


def checkpoint_stage(ckpt_path: str) -> str:
    """Stage recorded in a checkpoint's hyper-parameters (``main`` when absent)."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    return str(ckpt.get("hyper_parameters", {}).get("stage", "main"))


def _last_checkpoint(ckpt_cb: Any) -> str | None:
    """``last.ckpt`` of a checkpoint callback; after ``ddp_spawn`` only rank 0's copy of the
    callback knew the path, so it is looked up on disk."""
    path = getattr(ckpt_cb, "last_model_path", "") or None
    if path is None and getattr(ckpt_cb, "dirpath", None) and getattr(ckpt_cb, "save_last", False):
        candidate = (
            Path(ckpt_cb.dirpath) / f"{ckpt_cb.CHECKPOINT_NAME_LAST}{ckpt_cb.FILE_EXTENSION}"
        )
        path = str(candidate) if candidate.is_file() else None
    return path


def wandb_run_id(run_dir: str | Path, stage: str) -> str:
    """The W&B run id of this run and stage, kept in ``<run>/wandb_id_<stage>.txt``: a resumed or
    requeued run logs into the same W&B run (``resume="allow"``)."""
    path = Path(run_dir) / f"wandb_id_{stage}.txt"
    if path.is_file():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]
    if rank_zero_only.rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(run_id + "\n")
    return run_id


def continue_loggers(cfg: DictConfig) -> None:
    """Make a resumed run write into the logs it started (in place, on ``cfg.logger``).

    CSV and TensorBoard get the stage as their version (``csv/main/metrics.csv``, appended to
    on resume; ``tensorboard/mir/``) instead of a new ``version_<n>`` per start; W&B gets the
    run's stored id with ``resume="allow"``.
    """
    loggers = cfg.get("logger") or {}
    with open_dict(cfg):
        for lg in loggers.values():
            if not isinstance(lg, DictConfig):
                continue
            target = str(lg.get("_target_", ""))
            if target.endswith(("CSVLogger", "TensorBoardLogger")) and lg.get("version") is None:
                lg.version = cfg.model.stage
            if target.endswith("WandbLogger"):
                if not lg.get("id"):
                    lg.id = wandb_run_id(cfg.paths.output_dir, cfg.model.stage)
                lg.resume = "allow"


def resume_command(ckpt_path: str | None) -> str:
    """The command line that continues this run from ``ckpt_path``."""
    keep = [o for o in job_overrides() if o.split("=", 1)[0].lstrip("+~") not in START_OVERRIDES]
    args = [*keep, f"ckpt_path={ckpt_path}"] if ckpt_path else [*keep, "resume=auto"]
    return " ".join(["python -m smp_parsing.train", *(shlex.quote(a) for a in args)])


def stage_metrics(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    """``{"APp50": ..}`` from logged ``{"<prefix>/APp50": tensor, ..}`` (other prefixes dropped)."""
    head = f"{prefix}/"
    return {k[len(head) :]: float(v) for k, v in metrics.items() if k.startswith(head)}


def fit_stage(
    cfg: DictConfig, datamodule: pl.LightningDataModule, ckpt_path: str | None, resume: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build model, callbacks, loggers and trainer of one stage, fit, and optionally test.

    Args:
        cfg: the stage's config (see :func:`stage_config`).
        datamodule: shared by the stages of a job.
        ckpt_path: checkpoint to resume from (``resume``) or to initialise the weights from.
        resume: pass ``ckpt_path`` to ``Trainer.fit`` (full state) instead of loading weights.
    """
    log.info("Instantiating model <%s> (stage %s)", cfg.model._target_, cfg.model.stage)
    model: pl.LightningModule = hydra.utils.instantiate(cfg.model)
    model.model_config = OmegaConf.to_container(cfg.model, resolve=True)
    model.inference_config = inference_metadata(cfg)
    if ckpt_path and not resume:
        log.info("Initialising the weights from %s", ckpt_path)
        load_init_weights(model, ckpt_path, list(cfg.model.get("mir_modules", [])))

    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    continue_loggers(cfg)
    group = sweep_group()
    if OmegaConf.select(cfg, "logger.wandb") is not None:
        with open_dict(cfg):
            if group:  # all jobs of one --multirun share a W&B group
                cfg.logger.wandb.group = cfg.logger.wandb.get("group") or group
                cfg.logger.wandb.name = f"{cfg.task_name}-{group}-{job_number()}"
            if cfg.model.stage == "mir" and cfg.logger.wandb.get("name"):
                cfg.logger.wandb.name = f"{cfg.logger.wandb.name}-mir"
    loggers = instantiate_loggers(cfg.get("logger"))
    with open_dict(cfg):
        cfg.trainer.deterministic = deterministic_mode(
            cfg.trainer.get("deterministic"), cfg.trainer.get("accelerator")
        )
    log.info("Instantiating trainer <%s>", cfg.trainer._target_)
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)

    object_dict = {"cfg": cfg, "datamodule": datamodule, "model": model, "trainer": trainer}
    log_hyperparameters(object_dict)

    log.info("Starting training (stage %s)", cfg.model.stage)
    try:
        # weights_only: a checkpoint is data (Lightning's default depends on the torch version)
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path if resume else None,
                    weights_only=True)  # fmt: skip
    except SIGTERMException:
        # SIGTERM / SIGINT (PreemptionCheckpoint saved the step reached) or SLURM's requeue
        raise preempted(trainer) from None
    metric_dict: dict[str, Any] = {k: v for k, v in trainer.callback_metrics.items()}

    ckpt_cb = trainer.checkpoint_callback
    best = getattr(ckpt_cb, "best_model_path", "") or None
    summary: dict[str, Any] = {
        "stage": cfg.model.stage,
        "best_model_path": best,
        "best_model_score": getattr(ckpt_cb, "best_model_score", None),
        "last_model_path": _last_checkpoint(ckpt_cb),
        "monitor": getattr(ckpt_cb, "monitor", None),
        "val": stage_metrics(trainer.callback_metrics, "val"),
        "global_step": trainer.global_step,
        "epochs": trainer.current_epoch,
        "interrupted": trainer.interrupted,
    }
    if cfg.get("test"):
        if best is None:
            log.warning("No best checkpoint (no monitored metric): testing the current weights.")
        log.info("Starting testing (%s)", best or "current weights")
        trainer.test(model=model, datamodule=datamodule, ckpt_path=best, weights_only=True)
        metric_dict.update(trainer.callback_metrics)
        summary["test"] = stage_metrics(trainer.callback_metrics, "test")
    object_dict["summary"] = summary
    return metric_dict, object_dict


def preempted(trainer: pl.Trainer) -> Preempted:
    """The :class:`Preempted` exit of a run stopped by a signal, after logging how to resume."""
    saver = next((c for c in trainer.callbacks if isinstance(c, PreemptionCheckpoint)), None)
    ckpt = (saver.saved_path if saver else None) or _last_checkpoint(trainer.checkpoint_callback)
    command = resume_command(ckpt)
    if trainer.is_global_zero:
        where = f"checkpoint {ckpt}" if ckpt else "no checkpoint saved"
        requeue = " (a requeued SLURM / torchrun job resumes by itself)" if job_key() else ""
        if saver is not None and saver.requeued:
            requeue = " (the SLURM job is requeued: it resumes by itself)"
        log.warning("Stopped at global step %d, %s. Resume with: %s%s",
                    trainer.global_step, where, command, requeue)  # fmt: skip
    return Preempted(ckpt or "", command)


@task_wrapper
def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the stages of ``cfg.stage``; returns ``(metric_dict, object_dict)``.

    ``metric_dict`` holds the last logged values (``train/*``, ``val/*``, ``test/*``) of the last
    stage; ``object_dict`` the objects built (``cfg``, ``datamodule``, ``model``, ``trainer``) and the
    ``summary`` written to ``metrics.json``.
    """
    if cfg.stage not in STAGE_PLANS:
        raise ValueError(f"stage must be one of {sorted(STAGE_PLANS)}, got {cfg.stage!r}")
    t = cfg.trainer
    check_ddp_launch(
        t.get("strategy"), t.get("devices", 1), t.get("accelerator"), t.get("num_nodes")
    )
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)

    log.info("Instantiating datamodule <%s>", cfg.data._target_)
    datamodule: pl.LightningDataModule = hydra.utils.instantiate(cfg.data)

    ckpt_path = cfg.get("ckpt_path")
    if not ckpt_path and wants_resume(cfg.get("resume")):
        found = find_resume_checkpoint(cfg.paths.output_dir)
        if found is not None:
            log.info("Resuming from the run's newest checkpoint %s", found)
            ckpt_path = str(found)
        else:
            log.info("Nothing to resume in %s: starting the run", cfg.paths.output_dir)
    plan = STAGE_PLANS[cfg.stage]
    if plan == ("mir",) and not ckpt_path:
        raise ValueError("stage=mir trains MIR on top of a trained network: pass ckpt_path=<.ckpt>")
    if ckpt_path and not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path}: no such checkpoint file")
    first = 0
    if ckpt_path and len(plan) > 1 and checkpoint_stage(ckpt_path) == "mir":
        # interrupted in the MIR stage of a main_mir job: the main stage is done
        first = plan.index("mir")
        log.info("%s is a MIR-stage checkpoint: resuming the MIR stage", ckpt_path)

    metric_dict: dict[str, Any] = {}
    object_dict: dict[str, Any] = {}
    stages: dict[str, Any] = {}
    for i, stage in enumerate(plan[first:], first):
        s_cfg = stage_config(cfg, stage, after_main=i > 0)
        if len(plan) > 1:
            save_stage_config(s_cfg, stage)
        if i == first:
            # Resume when the checkpoint is of this very stage; otherwise it only gives weights.
            resume = bool(ckpt_path) and (stage == "main" or checkpoint_stage(ckpt_path) == "mir")
            s_ckpt = ckpt_path
        else:
            prev = object_dict["summary"]
            s_ckpt, resume = prev["best_model_path"] or prev["last_model_path"], False
        metric_dict, object_dict = fit_stage(s_cfg, datamodule, s_ckpt, resume)
        stages[stage] = object_dict["summary"]
        if i + 1 < len(plan):
            # A stage's W&B run ends with it: the next stage restarts the step counter, which
            # W&B would refuse in the same run (Lightning's logger reuses an active run).
            finish_wandb(failed=False)

    last = dict(object_dict["summary"])
    splits = {split: last.pop(split) for split in ("val", "test") if split in last}
    summary = metrics_summary(
        "train",
        splits,
        **last,
        stages=stages,
        # every value logged last (train/ losses included), keyed as logged
        logged={k: v for k, v in metric_dict.items()},
        overrides=job_overrides(),
        output_dir=cfg.paths.output_dir,
    )
    if object_dict["trainer"].is_global_zero:
        path = write_json_atomic(Path(cfg.paths.output_dir) / METRICS_FILE, summary)
        log.info("Wrote %s", path)
    object_dict["summary"] = summary
    return metric_dict, object_dict


def get_metric_value(metric_dict: dict[str, Any], metric_name: str | None) -> float | None:
    """Return ``metric_dict[metric_name]`` as a float for the hyper-parameter optimiser.

    Raises:
        KeyError: listing the available metrics when the name is not among them.
    """
    if not metric_name:
        return None
    if metric_name not in metric_dict:
        raise KeyError(
            f"optimized_metric={metric_name!r} was not logged; available: {sorted(metric_dict)}"
        )
    value = metric_dict[metric_name]
    return float(value.item() if isinstance(value, torch.Tensor) else value)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train.yaml")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the optimised metric (for the Optuna sweeper)."""
    apply_extras(cfg)
    metric_dict, _ = train(cfg)
    return get_metric_value(metric_dict, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
