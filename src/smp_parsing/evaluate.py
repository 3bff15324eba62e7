"""Evaluate a checkpoint: ``python -m smp_parsing.evaluate ckpt_path=<.ckpt> [split=val]``.

Prints the metrics table (AP^p_50, AP^p_vol, PCP_50, mIoU, AP^p and PCP per threshold, FPS) and
writes ``metrics.json`` into the run directory. The network is rebuilt from the config stored in
the checkpoint, and the data are the run's own (data set, synthetic preset, test transform, stored
in the checkpoint, see ``utils/checkpoint.py``): no ``experiment=`` needed. ``data.<key>=...``
changes one setting of it, ``data=<name>`` / ``experiment=<name>`` evaluates another data set of
the same label space (both logged). ``trainer=ddp_sim`` / ``trainer=ddp`` evaluate on several
processes with the same result (the metric state is synchronised, not averaged).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

import smp_parsing.utils  # noqa: F401  (registers the config resolvers)
from smp_parsing.models.deploy import inference_options, prepare_for_inference
from smp_parsing.train import CONFIG_DIR
from smp_parsing.utils.checkpoint import inference_data_config, load_lit_module, read_checkpoint
from smp_parsing.utils.instantiators import instantiate_callbacks, instantiate_loggers
from smp_parsing.utils.metrics_table import format_metrics_table
from smp_parsing.utils.run_files import METRICS_FILE, metrics_summary, write_json_atomic
from smp_parsing.utils.task_wrapper import apply_extras, task_wrapper

log = logging.getLogger(__name__)

SPLITS = ("val", "test")


@task_wrapper
def evaluate(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Score ``cfg.ckpt_path`` on the ``cfg.split`` split of ``cfg.data``.

    Returns:
        ``(metric_dict, object_dict)``; ``metric_dict`` maps ``<split>/<name>`` to floats.
    """
    if cfg.split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {cfg.split!r}")
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    ckpt = read_checkpoint(cfg.ckpt_path)
    # the run's own data (set, preset, test transform) unless the command line says otherwise
    data_cfg = inference_data_config(ckpt, cfg.ckpt_path, cfg)
    fallback = OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=True))
    model = load_lit_module(cfg.ckpt_path, fallback, cfg.get("model_overrides"), checkpoint=ckpt)
    log.info("Instantiating datamodule <%s> (%s)", data_cfg._target_, data_cfg.dataset_name)
    datamodule: pl.LightningDataModule = hydra.utils.instantiate(data_cfg)
    loggers = instantiate_loggers(cfg.get("logger"))
    # the panels of a training run's validation (images, IoU table, curves), job type "eval"
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer, logger=loggers or False, callbacks=callbacks, enable_checkpointing=False
    )
    # the network as trained unless cfg.inference asks for the deploy rewrites (BN folding,
    # Winograd, channels_last: same outputs up to float rounding, faster)
    done = prepare_for_inference(
        model.net.eval(), device=trainer.strategy.root_device, **inference_options(cfg)
    )
    log.info("Inference network: %s", done)
    run = trainer.validate if cfg.split == "val" else trainer.test
    results = run(model=model, datamodule=datamodule)
    metric_dict = {k: float(v) for k, v in (results[0] if results else {}).items()}
    head = f"{cfg.split}/"
    metrics = {k[len(head) :]: v for k, v in metric_dict.items() if k.startswith(head)}

    print(format_metrics_table(metrics, f"{cfg.split} metrics of {cfg.ckpt_path}"))
    if trainer.is_global_zero:
        path = write_json_atomic(
            Path(cfg.paths.output_dir) / METRICS_FILE,
            metrics_summary(
                "eval",
                {cfg.split: metrics},
                ckpt_path=str(cfg.ckpt_path),
                dataset=str(data_cfg.dataset_name),
                data_dir=str(data_cfg.data_dir),
            ),
        )
        log.info("Wrote %s", path)
    objects = {"cfg": cfg, "data_cfg": data_cfg, "datamodule": datamodule, "model": model}
    return metric_dict, {**objects, "trainer": trainer}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval.yaml")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    apply_extras(cfg)
    evaluate(cfg)


if __name__ == "__main__":
    main()
