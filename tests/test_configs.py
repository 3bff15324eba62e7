"""The Hydra tree: every experiment, group option, sweep preset and entry config composes."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from conftest import CONF_DIR, compose_config

EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))
PAPER_ROWS = {
    # name: (dataset, classes, depth, dcn, epochs, milestones, grid scale)
    "mhp_r50": ("mhp", 59, 50, False, 36, [27, 33], 1.0),
    "mhp_r50_dcn": ("mhp", 59, 50, True, 36, [27, 33], 1.0),
    "mhp_r101": ("mhp", 59, 101, False, 36, [27, 33], 1.0),
    "mhp_r101_dcn": ("mhp", 59, 101, True, 36, [27, 33], 1.0),
    "mhp_r101_dcn_1x": ("mhp", 59, 101, True, 12, [8, 11], 1.0),
    "densepose_r101_dcn": ("densepose", 15, 101, True, 36, [27, 33], 2.0),
    "cihp_r101_dcn": ("cihp", 20, 101, True, 36, [27, 33], 1.0),  # the MHP recipe (issue 14)
}


def group_options(group: str, fast: tuple[str, ...] = ()) -> list:
    """Every option of a group; those not in ``fast`` are marked slow (composing takes ~1 s)."""
    names = sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))
    return [n if n in fast else pytest.param(n, marks=pytest.mark.slow) for n in names]


def test_every_paper_row_has_an_experiment() -> None:
    assert set(PAPER_ROWS) | {"synthetic"} == set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_with_the_paper_recipe(name: str, tmp_path: Path) -> None:
    cfg = compose_config("train", [f"experiment={name}"], tmp_path)
    for key in cfg:  # every interpolation outside Hydra's own node resolves
        if key != "hydra" and OmegaConf.is_config(cfg[key]):
            OmegaConf.to_container(cfg[key], resolve=True)
    net = cfg.model.net
    assert net.num_classes == cfg.data.num_classes
    assert cfg.model.metrics.num_classes == cfg.data.num_classes
    # the paper's optimiser defaults are never touched by an experiment of the paper
    if name in PAPER_ROWS:
        dataset, classes, depth, dcn, epochs, milestones, grid = PAPER_ROWS[name]
        assert cfg.data.dataset_name == dataset and cfg.data.num_classes == classes
        assert net.backbone.depth == depth
        assert list(net.backbone.dcn_stages) == [False, dcn, dcn, dcn]
        assert cfg.trainer.max_epochs == epochs
        assert list(cfg.model.scheduler.milestones) == milestones
        assert net.grid_scale == grid
        assert cfg.model.optimizer.lr == 0.02 and cfg.model.base_batch_size == 32
        assert cfg.model.optimizer.momentum == 0.9 and cfg.model.optimizer.weight_decay == 1e-4
        assert cfg.model.scheduler.warmup_iters == 500 and cfg.model.scheduler.warmup_ratio == 0.02
        assert cfg.trainer.gradient_clip_val == 35
        assert net.epsilon == 0.2 and net.rfr is True
        # the accelerators present (DDP when several), 4 images per device (8 x 4 = the paper's
        # 32), the lr scaled to the real total batch, the machine's precision, then MIR
        trainer = OmegaConf.to_container(cfg.trainer)  # unresolved: the precision resolver
        assert (trainer["accelerator"], trainer["devices"], trainer["strategy"]) == (
            "auto", "auto", "auto",
        )  # fmt: skip
        assert trainer["precision"] == "${default_precision:${trainer.accelerator}}"
        assert cfg.trainer.precision == "32-true"  # no GPU here
        assert trainer["sync_batchnorm"] is True and trainer["benchmark"] is False
        assert cfg.data.batch_size == 4 and cfg.model.batch_size == 4 and cfg.model.scale_lr
        assert cfg.stage == "main_mir" and cfg.mir_stage.trainer.max_epochs == 6
    else:
        assert cfg.data.dataset_name == "synthetic"
        assert net.backbone.depth == 18 and net.backbone.pretrained == "none"
        # the CPU default, one process, fp32, main stage only
        assert cfg.trainer.accelerator == "cpu" and cfg.trainer.devices == 1
        assert cfg.trainer.precision == "32-true" and cfg.stage == "main"


@pytest.mark.parametrize("name", group_options("experiment", fast=("densepose_r101_dcn",)))
def test_evaluate_takes_the_experiments(name: str, tmp_path) -> None:
    cfg = compose_config("eval", [f"experiment={name}", "ckpt_path=x.ckpt"], tmp_path)
    assert cfg.task_name == "eval" and cfg.split == "test"
    assert cfg.data.num_classes == PAPER_ROWS.get(name, ("", 59))[1]


def test_predict_config_composes(tmp_path) -> None:
    cfg = compose_config(
        "predict", ["experiment=densepose_r101_dcn", "ckpt_path=x", "input=a", "output=b"], tmp_path
    )
    assert cfg.task_name == "predict" and cfg.data.dataset_name == "densepose"


@pytest.mark.parametrize("trainer", group_options("trainer", fast=("ddp_sim",)))
def test_trainer_options_compose(trainer: str, tmp_path) -> None:
    cfg = compose_config("train", [f"trainer={trainer}"], tmp_path)
    assert cfg.trainer.gradient_clip_val == 35
    if trainer in ("default", "cpu", "ddp_sim"):  # runnable on this machine: build them
        built = hydra.utils.instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
        assert built.gradient_clip_val == 35
    if trainer in ("ddp", "ddp_slurm"):
        assert cfg.trainer.sync_batchnorm is True
    if trainer == "ddp_sim":
        assert cfg.trainer.strategy == "ddp_spawn" and cfg.trainer.devices == 2


@pytest.mark.parametrize("logger", group_options("logger", fast=("many_loggers",)))
def test_logger_options_compose_and_build(logger: str, tmp_path, monkeypatch) -> None:
    from smp_parsing.utils.instantiators import instantiate_loggers

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_config("train", [f"logger={logger}"], tmp_path)
    loggers = instantiate_loggers(cfg.logger)
    assert len(loggers) == len(cfg.logger)


@pytest.mark.parametrize("debug", group_options("debug", fast=("fdr",))[1:])
def test_debug_presets_compose(debug: str, tmp_path) -> None:
    cfg = compose_config("train", [f"debug={debug}"], tmp_path)
    assert cfg.task_name == "debug" and cfg.data.num_workers == 0


def test_callbacks_build(tmp_path) -> None:
    from smp_parsing.utils.callbacks import AtomicModelCheckpoint, NonFiniteLossGuard
    from smp_parsing.utils.instantiators import instantiate_callbacks

    cfg = compose_config("train", ["experiment=synthetic"], tmp_path)
    callbacks = instantiate_callbacks(cfg.callbacks)
    kinds = {type(c) for c in callbacks}
    assert AtomicModelCheckpoint in kinds and NonFiniteLossGuard in kinds
    ckpt = next(c for c in callbacks if isinstance(c, AtomicModelCheckpoint))
    assert ckpt.monitor == "val/APpvol" and ckpt.save_last


@pytest.mark.parametrize(
    ("preset", "axes"),
    [("table3", {"model.net.rfr", "stage"}), ("table5", {"grid", "model.net.epsilon"})],
)
def test_sweep_presets_are_one_multirun(preset: str, axes: set[str], tmp_path) -> None:
    cfg = compose_config("train", ["experiment=mhp_r101_dcn_1x", f"sweep={preset}"], tmp_path)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert set(cfg.hydra.sweeper.params) == axes
    if preset == "table5":  # Table 5 reports the full model: MIR trains after the main stage
        cfg = compose_config("train", ["experiment=synthetic", "sweep=table5"], tmp_path)
        assert cfg.stage == "main_mir" and cfg.mir_stage.model.net.mir is True


def test_stage_and_schedule_groups_are_the_one_source(tmp_path) -> None:
    # the MIR stage's changes live in one file: stage=mir composes them at the top level (the
    # saved config is what runs), over the experiment's schedule ...
    mir = compose_config("train", ["experiment=mhp_r101_dcn", "stage=mir"], tmp_path)
    assert mir.stage == "mir" and mir.model.stage == "mir" and mir.model.net.mir is True
    assert mir.trainer.max_epochs == 6 and list(mir.model.scheduler.milestones) == [5]
    assert mir.model.scheduler.warmup_iters == 100 and mir.model.scheduler.warmup_ratio == 0.02
    assert "mir_stage" not in mir
    # ... stage=main_mir keeps them as the node its second stage merges, and nothing else differs
    main_mir = compose_config("train", ["experiment=mhp_r101_dcn"], tmp_path)
    assert main_mir.model.stage == "main" and main_mir.model.net.mir is False
    from smp_parsing.train import stage_config

    merged = OmegaConf.to_container(stage_config(main_mir, "mir", after_main=False))
    alone = OmegaConf.to_container(mir)
    for key in ("stage", "hydra"):  # the choice itself, and Hydra's record of the overrides
        merged.pop(key), alone.pop(key)
    assert merged == alone
    # the schedule group sets epochs and milestones; an explicit choice wins over the experiment's
    assert compose_config("train", ["schedule=3x"], tmp_path).trainer.max_epochs == 36
    one_x = compose_config("train", ["experiment=mhp_r101_dcn", "schedule=1x"], tmp_path)
    assert one_x.trainer.max_epochs == 12 and list(one_x.model.scheduler.milestones) == [8, 11]
    # the backbone and grid are only chosen in the defaults list, not in the net's own file
    net_file = OmegaConf.load(Path(CONF_DIR) / "model" / "net" / "smp.yaml")
    assert "backbone" not in net_file and "grid_scale" not in net_file
    r50 = compose_config("train", ["backbone=r50", "grid=2x"], tmp_path).model.net
    assert r50.backbone.depth == 50 and r50.grid_scale == 2.0


@pytest.mark.parametrize("trainer", ["ddp", "gpu"])
def test_command_line_trainer_wins_over_the_experiment(trainer: str, tmp_path) -> None:
    cfg = compose_config("train", ["experiment=mhp_r101_dcn", f"trainer={trainer}"], tmp_path)
    assert cfg.trainer.accelerator == "gpu" and cfg.data.batch_size == 4


def test_every_trainer_config_keeps_cudnn_benchmark_off(tmp_path) -> None:
    # multi-scale training: cuDNN would re-tune its algorithms for every new input shape
    for path in sorted((Path(CONF_DIR) / "trainer").glob("*.yaml")):
        cfg = compose_config("train", [f"trainer={path.stem}"], tmp_path)
        assert cfg.trainer.benchmark is False, path.name
        assert "16-mixed" != OmegaConf.to_container(cfg.trainer)["precision"], path.name


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["table3", "table5"])
def test_every_sweep_point_composes(preset: str, tmp_path) -> None:
    cfg = compose_config("train", ["experiment=mhp_r101_dcn_1x", f"sweep={preset}"], tmp_path)
    params = {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}
    for values in itertools.product(*params.values()):
        point = [f"{k}={v}" for k, v in zip(params, values)]
        job = compose_config("train", ["experiment=mhp_r101_dcn_1x", *point], tmp_path)
        assert job.trainer.max_epochs == 12


def test_optuna_search_composes(tmp_path) -> None:
    cfg = compose_config("train", ["experiment=synthetic", "hparams_search=optuna"], tmp_path)
    assert cfg.optimized_metric == "val/APpvol_best"
    assert "model.optimizer.lr" in cfg.hydra.sweeper.params


@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
    reason="hydra-submitit-launcher not installed (pip install 'smp_parsing[slurm]')",
)
def test_slurm_launcher_composes(tmp_path) -> None:
    cfg = compose_config("train", ["hydra/launcher=slurm", "trainer=ddp"], tmp_path)
    assert cfg.hydra.launcher.tasks_per_node == cfg.trainer.devices
    # SLURM warns with SIGUSR1 (Lightning's requeue signal) signal_delay_s before the limit:
    # the sbatch script asks for it once (submitit's own USR2 request is replaced)
    from submitit.slurm.slurm import _make_sbatch_string

    launcher = cfg.hydra.launcher
    script = _make_sbatch_string(
        command="python job.py", folder=str(tmp_path), signal_delay_s=launcher.signal_delay_s,
        additional_parameters=dict(launcher.additional_parameters),
    )  # fmt: skip
    signals = [line for line in script.splitlines() if line.startswith("#SBATCH --signal")]
    assert signals == ["#SBATCH --signal=USR1@120"] and "#SBATCH --requeue" in script
    assert launcher.max_num_timeout == 0
    # the paper experiments' devices=auto cannot size a submission: a clear error, not submitit's
    cfg = compose_config("train", ["hydra/launcher=slurm", "experiment=mhp_r101_dcn"], tmp_path)
    with pytest.raises(Exception, match="needs trainer.devices = GPUs per node as a number"):
        _ = cfg.hydra.launcher.tasks_per_node
    cfg = compose_config(
        "train", ["hydra/launcher=slurm", "experiment=mhp_r101_dcn", "trainer.devices=8"], tmp_path
    )
    assert cfg.hydra.launcher.tasks_per_node == cfg.hydra.launcher.gpus_per_node == 8


def test_run_dirs_never_collide() -> None:
    """Two jobs composed in the same second get different run and sweep directories."""
    import smp_parsing.utils  # noqa: F401

    dirs = []
    for _ in range(2):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("train", return_hydra_config=True, overrides=["paths.log_dir=/logs/"])
        run_dir = OmegaConf.select(cfg, "hydra.run.dir")
        assert run_dir == OmegaConf.select(cfg, "hydra.run.dir")  # stable within one job
        dirs.append((run_dir, OmegaConf.select(cfg, "hydra.sweep.dir")))
    assert dirs[0][0] != dirs[1][0] and dirs[0][1] != dirs[1][1]
    assert dirs[0][0].startswith("/logs/train/runs/")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [([], 12345), (["seed=5", "data=mhp"], 5), (["experiment=synthetic", "seed=null"], None)],
)
def test_train_augmentation_is_seeded_by_the_run_seed(overrides, expected, tmp_path) -> None:
    # conf/train.yaml sets data.train_transforms.seed; the data group, merged after it, must not
    cfg = compose_config("train", overrides, tmp_path)
    assert hydra.utils.instantiate(cfg.data.train_transforms).seed == expected
