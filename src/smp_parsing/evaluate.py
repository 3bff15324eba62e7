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
from smp_parsing.utils.instantiators import instantiate_loggers
from smp_parsing.utils.run_files import METRICS_FILE, write_json_atomic
from smp_parsing.utils.task_wrapper import apply_extras, task_wrapper

log = logging.getLogger(__name__)

SPLITS = ("val", "test")
HEADLINE = ("APp50", "APpvol", "PCP50", "mIoU", "pixel_acc", "fps")


def format_metrics_table(metrics: dict[str, float], title: str = "") -> str:
    """Plain-text table: the headline metrics, then AP^p and PCP per IoU threshold.

    Args:
        metrics: ``{"APp50": 0.41, "APp@0.1": ..., "PCP@0.1": ..., "fps": ...}``.
        title: first line.
    """
    lines = [title] if title else []
    width = max((len(k) for k in metrics), default=8)
    for key in HEADLINE:
        if key in metrics:
            lines.append(f"  {key:<{width}}  {metrics[key]:.4f}")
    thresholds = sorted(
        {k.split("@", 1)[1] for k in metrics if k.startswith(("APp@", "PCP@"))}, key=float
    )
    if thresholds:
        lines.append("  " + "thr".ljust(6) + "".join(f"{t:>8}" for t in thresholds))
        for name in ("APp", "PCP"):
            row = "".join(f"{metrics.get(f'{name}@{t}', float('nan')):>8.4f}" for t in thresholds)
            lines.append("  " + name.ljust(6) + row)
    return "\n".join(lines)


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
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer, logger=loggers or False, enable_checkpointing=False
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
            {
                "ckpt_path": str(cfg.ckpt_path),
                "split": cfg.split,
                "dataset": str(data_cfg.dataset_name),
                "data_dir": str(data_cfg.data_dir),
                "metrics": metrics,
            },
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
