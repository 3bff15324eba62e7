"""smp_parsing.utils.compose: the one helper that composes conf/ for tests and benchmarks."""

from __future__ import annotations

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from smp_parsing.utils.compose import compose_config


def test_compose_a_primary_config_without_a_run():
    cfg = compose_config("eval", ["ckpt_path=x.ckpt", "inference=deploy", "split=val"])
    assert cfg.task_name == "eval" and cfg.ckpt_path == "x.ckpt" and cfg.split == "val"
    assert cfg.inference.fold_batchnorm and "hydra" not in cfg
    assert OmegaConf.is_struct(cfg)  # as Hydra leaves it: a typo in a key raises


def test_compose_with_a_run_folder_registers_the_hydra_config(tmp_path):
    cfg = compose_config("train", ["experiment=synthetic"], tmp_path)
    assert HydraConfig.get().runtime.output_dir == str(tmp_path)
    assert cfg.paths.output_dir == cfg.paths.log_dir == cfg.paths.data_dir == str(tmp_path)
    assert cfg.hydra.job.num == 0


def test_compose_groups_only():
    cfg = compose_config(None, ["+model/net=smp", "+backbone=r18", "+grid=2x"])
    assert set(cfg) == {"model"}  # nothing but the groups asked for
    assert cfg.model.net.backbone.depth == 18 and cfg.model.net.grid_scale == 2.0
