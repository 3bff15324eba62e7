"""Shared helpers of the benchmarks: threads, timing, model builders, synthetic workloads.

Every figure of the benchmarks is a **median** over ``repeats`` runs taken after
``warmup`` untimed runs (the first runs pay for allocator growth, lazy kernels and
caches). When two sides are compared (SMP vs Mask R-CNN), :func:`time_alternating`
runs them in the same process, one after the other in every round, so that a load
change on the shared machine hits both sides alike; the ratio is the ratio of medians.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"
if str(REPO_ROOT) not in sys.path:  # the oracle outputs come from tests/models/test_roundtrip
    sys.path.insert(0, str(REPO_ROOT))

MHP_NUM_CLASSES = 59  # background + 58 part classes (MHP v2)
MASK_RCNN_DETECTIONS = 20  # fixed number of Mask R-CNN detections (issue 7)
# Narrow heads for smoke tests (with the r18 preset): every code path, a fraction of the cost.
TINY_OVERRIDES: dict[str, Any] = {
    "fpn_channels": 32,
    "kernel_channels": 32,
    "mask_feature.feat_channels": 16,
    "mask_feature.num_groups": 8,
    "part_head.tower_width": 32,
    "part_head.num_convs": 1,
    "part_head.num_groups": 8,
    "center_head.fusion_channels": 32,
    "center_head.tower_width": 32,
    "center_head.num_convs": 1,
    "center_head.num_groups": 8,
    "offset_head.branch_channels": 2,
    "rfr_module.num_groups": 8,
}


# ----------------------------------------------------------------------- command line
def bench_parser(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's command line with ``--json``, described by the first paragraph of ``doc``
    (the benchmark's module docstring)."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    return parser


def write_figures(path: Path | None, figures: Mapping[str, Any]) -> None:
    """Write ``figures`` to ``path`` as indented JSON (the ``--json`` of :func:`bench_parser`);
    nothing when ``path`` is ``None``."""
    if path is not None:
        path.write_text(json.dumps(figures, indent=2))


# ----------------------------------------------------------------------- environment
def set_threads(num_threads: int) -> int:
    """Fix the intra-op threads of torch (and of OpenMP/MKL for later-spawned work).

    Args:
        num_threads: threads to use (2 on the reference machine).

    Returns:
        ``torch.get_num_threads()`` after the change (what the figures state).
    """
    os.environ["OMP_NUM_THREADS"] = str(num_threads)
    os.environ["MKL_NUM_THREADS"] = str(num_threads)
    torch.set_num_threads(num_threads)
    with contextlib.suppress(RuntimeError):  # only settable before any inter-op work
        torch.set_num_interop_threads(1)
    return torch.get_num_threads()


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on (stated beside every table)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "cuda_available": torch.cuda.is_available(),
        "load_average_1_5_15": list(os.getloadavg()),
        "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but torch sees no CUDA device")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels so that wall-clock timing is honest on a GPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB.

    Read from ``VmHWM`` of ``/proc/self/status``: it belongs to the address space and
    starts afresh at ``exec``, whereas ``getrusage().ru_maxrss`` of a child keeps the
    parent's high-water mark from before the ``fork`` (a small child started by a big
    benchmark process would report the parent's size). ``ru_maxrss`` (KiB on Linux) is the
    fallback where ``/proc`` is missing.
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on the device when ``amp`` (the CUDA path of issue 7), else a no-op."""
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


# ----------------------------------------------------------------------- timing
@dataclass
class Timing:
    """Seconds of every timed run and their median."""

    runs: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else float("nan")

    @property
    def ms(self) -> float:
        """Median in milliseconds."""
        return 1e3 * self.median

    def as_dict(self) -> dict[str, Any]:
        return {"median_ms": self.ms, "runs_ms": [1e3 * r for r in self.runs]}


def time_call(fn: Callable[[], Any], *, warmup: int, repeats: int, device: torch.device) -> Timing:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    return time_alternating({"fn": fn}, warmup=warmup, repeats=repeats, device=device)["fn"]


def time_alternating(
    fns: Mapping[str, Callable[[], Any]], *, warmup: int, repeats: int, device: torch.device
) -> dict[str, Timing]:
    """Time several callables round-robin in one process.

    Each round runs every callable once, in the given order; warm-up rounds are not
    timed. Interleaving spreads a load change of the machine over all sides, so the
    ratio of two medians is meaningful even when absolute times drift.

    Args:
        fns: name -> callable without arguments.
        warmup: untimed rounds first (at least 1 recommended).
        repeats: timed rounds.
        device: synchronised before and after each call.

    Returns:
        name -> :class:`Timing`.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    timings = {name: Timing() for name in fns}
    for round_idx in range(warmup + repeats):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            if round_idx >= warmup:
                timings[name].runs.append(time.perf_counter() - start)
    return timings


# ----------------------------------------------------------------------- models
def smp_config(
    backbone: str = "r50",
    *,
    num_classes: int = MHP_NUM_CLASSES,
    grid: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Any:
    """The SMP network config of ``conf/`` (paper defaults) with a backbone preset.

    Composed by Hydra from the files training composes
    (:func:`smp_parsing.utils.compose.compose_config`): the network defaults of
    ``conf/model/net/smp.yaml``, then the ``backbone`` group (``conf/backbone/<backbone>.yaml``),
    then the ``grid`` group (``train.yaml``'s default when ``None``), then ``overrides`` (dotted
    keys below ``model.net``).
    ImageNet weights are switched off (``pretrained: none``): speed does not depend on
    them and the machine has no internet.

    Args:
        backbone: a preset name of ``conf/backbone`` (r18, r50, r50_dcn, r101, r101_dcn).
        num_classes: C incl. background (59 = MHP v2).
        grid: a preset name of ``conf/grid`` (0.5x, 1x, 2x) or ``None`` for the default.
        overrides: dotted key -> value, e.g. ``{"part_head.tower_width": 64}``.

    Returns:
        An ``omegaconf.DictConfig`` ready for ``hydra.utils.instantiate``.
    """
    from omegaconf import OmegaConf

    from smp_parsing.utils.compose import compose_config

    preset = CONF_DIR / "backbone" / f"{backbone}.yaml"
    if not preset.is_file():
        choices = sorted(p.stem for p in (CONF_DIR / "backbone").glob("*.yaml"))
        raise FileNotFoundError(f"no backbone preset {preset}; choose one of {choices}")
    # the training entry config: its defaults list chooses the grid (and backbone) when not given
    groups = [f"backbone={backbone}"]
    if grid is not None:
        grid_file = CONF_DIR / "grid" / f"{grid}.yaml"
        if not grid_file.is_file():
            raise FileNotFoundError(f"no grid preset {grid_file}")
        groups.append(f"grid={grid}")
    net = compose_config("train", groups).model.net
    # a plain (non-struct) root of its own: num_classes replaces the ${data.num_classes}
    # interpolation, and overrides may add keys
    cfg = OmegaConf.create(OmegaConf.to_container(net))
    cfg.num_classes = num_classes
    cfg.backbone.pretrained = "none"
    for key, value in (overrides or {}).items():
        OmegaConf.update(cfg, key, value, merge=True)
    return cfg


def build_smp(
    backbone: str = "r50",
    *,
    num_classes: int = MHP_NUM_CLASSES,
    grid: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> nn.Module:
    """Instantiate :class:`smp_parsing.models.SMP` from ``conf/`` (see :func:`smp_config`)."""
    from hydra.utils import instantiate

    torch.manual_seed(seed)
    return instantiate(
        smp_config(backbone, num_classes=num_classes, grid=grid, overrides=overrides)
    )


def build_mask_rcnn(
    *,
    detections: int = MASK_RCNN_DETECTIONS,
    min_size: int = 800,
    max_size: int = 1333,
    num_classes: int = 91,
    seed: int = 0,
) -> nn.Module:
    """torchvision Mask R-CNN R50-FPN, random weights, a fixed number of detections.

    ``box_score_thresh=0`` keeps every box after NMS, ``box_detections_per_img`` caps
    them: a random network then returns exactly ``detections`` boxes and masks per image,
    so its mask head does a fixed amount of work. ``min_size``/``max_size`` are its
    internal resize: set them to the input size so that both sides see the same pixels.
    """
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(seed)
    return maskrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=num_classes,
        box_score_thresh=0.0,
        box_detections_per_img=detections,
        min_size=min_size,
        max_size=max_size,
    )


def images_tensor(
    batch: int, height: int, width: int, *, device: torch.device, seed: int = 0
) -> Tensor:
    """Normalised-looking random images ``(B, 3, H, W)``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, height, width, generator=gen).to(device)


def inference_switches(**changes: Any) -> dict[str, Any]:
    """The inference switches ``predict`` applies (``conf/predict.yaml``'s ``inference`` choice).

    The keyword arguments of
    :func:`smp_parsing.models.deploy.prepare_for_inference`: ``fold_batchnorm``,
    ``winograd``, ``winograd_tile``, ``winograd_min_channels``, ``channels_last``;
    ``changes`` replace some of them (e.g. ``winograd=False`` for a variant).
    """
    from smp_parsing.models.deploy import inference_options
    from smp_parsing.utils.compose import compose_config

    switches = inference_options(compose_config("predict"))
    unknown = set(changes) - set(switches)
    if unknown:
        raise KeyError(f"no inference switch {sorted(unknown)} in conf/inference/")
    return {**switches, **changes}


STOCK_SWITCHES: dict[str, Any] = {
    "fold_batchnorm": False,
    "winograd": False,
    "channels_last": False,
}


def to_channels_last(module: nn.Module, images: Tensor | None = None) -> Tensor | None:
    """Convert a module (in place) and optionally an input to ``channels_last``."""
    module.to(memory_format=torch.channels_last)
    return None if images is None else images.contiguous(memory_format=torch.channels_last)


# ----------------------------------------------------------------------- persons / GT
def person_maps(
    num_persons: int,
    height: int,
    width: int,
    *,
    num_classes: int = MHP_NUM_CLASSES,
    parts_per_person: int = 6,
    seed: int = 0,
) -> Tensor:
    """``num_persons`` non-overlapping blocky persons on a grid, as ``(N, H, W)`` uint8 maps.

    Persons fill the cells of a ``rows x cols`` layout (as square as the image allows);
    each is a stack of ``parts_per_person`` bands of distinct random part classes. Band
    edges sit on the 4-pixel grid of F_mask so an oracle decode can be exact.

    Raises:
        ValueError: when the image is too small for that many persons (cells < 16 px).
    """
    gen = torch.Generator().manual_seed(seed)
    maps = torch.zeros(num_persons, height, width, dtype=torch.uint8)
    if num_persons == 0:
        return maps
    cols = max(1, int(round((num_persons * width / height) ** 0.5)))
    rows = -(-num_persons // cols)
    cell_h, cell_w = (height // rows) // 4 * 4, (width // cols) // 4 * 4
    if cell_h < 4 * parts_per_person + 8 or cell_w < 16:
        raise ValueError(f"{num_persons} persons do not fit in {height} x {width}")
    band = (cell_h - 8) // parts_per_person // 4 * 4
    for k in range(num_persons):
        y0, x0 = (k // cols) * cell_h + 4, (k % cols) * cell_w + 4
        pw = max(4, (cell_w - 8) // 4 * 4)
        classes = torch.randperm(num_classes - 1, generator=gen)[:parts_per_person] + 1
        for j, cls in enumerate(classes.tolist()):
            maps[k, y0 + j * band : y0 + (j + 1) * band, x0 : x0 + pw] = cls
    return maps


def oracle_outputs(
    parsing: Sequence[Tensor],
    net: nn.Module,
    *,
    kernel_channels: int | None = None,
) -> Any:
    """Head outputs a perfect ``net`` would give for GT ``parsing`` (decode workload).

    Built by the oracle of the round-trip test (``tests/models/test_roundtrip.py``:
    targets -> ideal logits, offsets, one-hot kernels over per-instance mask channels),
    with the channels of F_mask and of the kernels zero-padded to ``kernel_channels``
    so the mask matmul of the decode has the paper's size. Decoding them finds every
    person and part, so the decode does the work of a well-trained model on that image.

    Args:
        parsing: per image ``(N_i, H, W)`` person maps at the padded input size.
        net: the SMP network (grids, epsilon, strides come from it).
        kernel_channels: C_K of the decode workload (default: the network's).

    Returns:
        :class:`smp_parsing.models.outputs.SMPOutputs`.
    """
    from tests.models import test_roundtrip as oracle

    if list(net.part_grids) != list(oracle.PART_GRIDS) or net.center_grid != oracle.CENTER_GRID:
        raise ValueError("the oracle outputs support the 1x grids only")
    if kernel_channels is None:
        kernel_channels = net.mask_feature.out_channels
    targets = net.build_targets(list(parsing))
    out = oracle.ideal_outputs(targets)
    extra = kernel_channels - out.mask_feat.shape[1]
    if extra > 0:
        out.mask_feat = torch.cat([out.mask_feat, out.mask_feat.new_zeros(
            out.mask_feat.shape[0], extra, *out.mask_feat.shape[-2:])], 1)  # fmt: skip
        out.kernels = [
            torch.cat([k, k.new_zeros(k.shape[0], extra, *k.shape[-2:])], 1) for k in out.kernels
        ]
    return out


def metas_for(height: int, width: int, batch: int = 1) -> list[dict]:
    """Metas of unpadded, unscaled images of ``height x width``."""
    size = (height, width)
    return [
        {"img_size": size, "ori_size": size, "pad_size": size, "scale": (1.0, 1.0)}
        for _ in range(batch)
    ]


@contextlib.contextmanager
def inference_mode(*modules: nn.Module) -> Iterator[None]:
    """Eval mode + ``torch.inference_mode`` for the block."""
    for m in modules:
        m.eval()
    with torch.inference_mode():
        yield
