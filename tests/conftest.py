"""Shared pytest set-up: offline W&B, a writable matplotlib cache, few threads."""

from __future__ import annotations

import os
import socket
import tempfile

# Set before any test module imports lightning / wandb / matplotlib.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), "smp_parsing_mpl"))
os.environ.setdefault("HYDRA_FULL_ERROR", "1")

import pytest
import torch

# Two cores on the reference machine: keep intra-op threads modest so tests are stable.
torch.set_num_threads(min(2, torch.get_num_threads()))


# --------------------------------------------------------------------------------------------
# Experiment framework (train / evaluate / predict / sweeps): tiny configs shared by its tests.
# --------------------------------------------------------------------------------------------
CONF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")

# Narrow heads, small grids and an untrained ResNet-18: the network code paths of the paper model
# at a size that trains a step in well under a second on 2 cores.
TINY_NET_OVERRIDES = [
    "model.net.backbone.depth=18",
    "model.net.backbone.pretrained=none",
    "model.net.fpn_channels=32",
    "model.net.kernel_channels=16",
    "model.net.num_grids=[12,10,8,6,4]",
    "model.net.center_grid=12",
    "model.net.mask_feature.feat_channels=16",
    "model.net.mask_feature.num_groups=8",
    "model.net.part_head.tower_width=32",
    "model.net.part_head.num_convs=1",
    "model.net.part_head.num_groups=8",
    "model.net.center_head.tower_width=32",
    "model.net.center_head.fusion_channels=32",
    "model.net.center_head.num_convs=1",
    "model.net.center_head.num_groups=8",
    "model.net.rfr_module.num_groups=8",
    "model.net.mir_head.feat_channels=16",
    "model.net.mir_head.num_convs=1",
    "model.net.mir_head.fc_channels=32",
    "model.net.mir_head.num_groups=8",
]


def tiny_net_config(num_classes: int = 59, **changes):
    """The network config of ``conf/model/net/smp.yaml`` shrunk as in ``TINY_NET_OVERRIDES``."""
    from omegaconf import OmegaConf

    from smp_parsing.utils.compose import compose_config as compose

    net = compose(
        None, ["+model/net=smp", "+backbone=r18", "+grid=1x", *TINY_NET_OVERRIDES]
    ).model.net
    cfg = OmegaConf.create(OmegaConf.to_container(net))  # a plain root (no ${data.*} left)
    cfg.num_classes = num_classes
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def tiny_parsing_batch() -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Two 64 x 64 images and their person maps for the 5-class tiny network: image 0 holds two
    blocky persons (classes 1 + 2, and 3), image 1 one person (class 4)."""
    generator = torch.Generator().manual_seed(5)
    images = torch.randn(2, 3, 64, 64, generator=generator)
    first = torch.zeros(2, 64, 64, dtype=torch.uint8)
    first[0, 4:20, 6:22] = 1
    first[0, 20:50, 4:24] = 2
    first[1, 10:40, 36:60] = 3
    second = torch.zeros(1, 64, 64, dtype=torch.uint8)
    second[0, 16:60, 20:44] = 4
    return images, [first, second]


TINY_TRAINER_OVERRIDES = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.num_sanity_val_steps=0",
    "trainer.log_every_n_steps=1",
    "logger=csv",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
    "extras.print_config=false",
    "test=false",
]


# A freshly initialised network scores nothing above the paper's thresholds; these make it emit
# persons so that the metrics are not all zero (decode-only settings: the weights stay valid).
LOW_THRESHOLDS = [
    "+model_overrides.net.test_cfg.ctr_score_thr=0.0",
    "+model_overrides.net.test_cfg.cate_score_thr=0.0",
    "+model_overrides.net.test_cfg.update_thr=0.0",
    "+model_overrides.net.test_cfg.cand_score_thr=0.0",
]


def tiny_data_overrides(synthetic_root) -> list[str]:
    """A 4 + 2 image synthetic MHP set of ~96 px images, read at 64 px, batches of 2."""
    return [
        "data=synthetic",
        f"data.data_dir={synthetic_root}",
        *TINY_DATA_COMMON,
        "data.num_train=4",
        "data.num_val=2",
        "data.generator.size=96",
        # the whole recipe pinned, equal to experiment=synthetic's: a train run (with the
        # experiment) and an evaluation (data=synthetic alone) must see the same files, and a
        # different recipe would regenerate the shared tiny set under the other tests' feet
        "data.generator.max_persons=3",
        "data.generator.scale_range=[0.5,0.95]",
        "data.generator.extremity_scale=1.8",
        "data.generator.occlusion=0.1",
        "data.generator.texture_strength=0.1",
        "data.generator.background_clutter=2",
        "data.generator.noise_std=2",
        "data.generator.upper_clothes=[t-shirt]",
        "data.generator.lower_clothes=[skirt]",
        "data.generator.accessories=[]",
    ]


# Sizes and loader settings that apply to any data set config (mhp, densepose, synthetic).
TINY_DATA_COMMON = [
    "data.train_transforms.resize.short_sides=[64]",
    "data.train_transforms.resize.max_long_side=96",
    "data.test_transforms.resize.short_sides=[64]",
    "data.test_transforms.resize.max_long_side=96",
    "data.batch_size=2",
    "data.eval_batch_size=2",
    "data.num_workers=0",
    "data.pin_memory=false",
    "data.persistent_workers=false",
]


def compose_config(config_name: str, overrides: list[str], output_dir):
    """Compose ``conf/<config_name>.yaml`` as ``@hydra.main`` would, with the run in ``output_dir``.

    :func:`smp_parsing.utils.compose.compose_config`: the Hydra runtime config is registered
    too, so ``${hydra:...}`` interpolations resolve and the entry points can be called as plain
    functions (``train(cfg)``).
    """
    from smp_parsing.utils.compose import compose_config as compose

    return compose(config_name, overrides, output_dir)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """The tiny synthetic MHP set, generated once per test session (MHP v2 layout on disk)."""
    import hydra

    root = tmp_path_factory.mktemp("synthetic_mhp")
    cfg = compose_config("train", tiny_data_overrides(root / "data"), root)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    return root / "data"


def tiny_train_overrides(synthetic_root, *extra: str) -> list[str]:
    """``experiment=synthetic`` shrunk to a couple of steps on the tiny set."""
    return [
        "experiment=synthetic",
        *TINY_NET_OVERRIDES,
        *tiny_data_overrides(synthetic_root),
        *TINY_TRAINER_OVERRIDES,
        *extra,
    ]


@pytest.fixture(scope="session")
def trained_run(synthetic_root, tmp_path_factory):
    """One tiny training run (2 steps + validation), shared by the evaluate/predict/DDP tests.

    Returns:
        The run directory (holds ``checkpoints/last.ckpt`` and ``metrics.json``).
    """
    from smp_parsing.train import train

    run_dir = tmp_path_factory.mktemp("trained_run")
    # every logger (CSV, TensorBoard, offline W&B) so that the logging paths run once, with the
    # prediction images of the image-logging callback
    overrides = tiny_train_overrides(synthetic_root, "logger=many_loggers", "tags=[tiny]")
    train(compose_config("train", overrides, run_dir))
    return run_dir


@pytest.fixture
def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a torch.distributed (gloo) rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
