"""One training step of SMP against Mask R-CNN's, target building, peak memory (issue 7.3).

- ``smp_step`` / ``mask_rcnn_step``: one SGD step (zero grad, forward, loss, backward,
  update) on the same batch (default 2 images of 512 x 512) and the same GT persons,
  timed in alternating rounds in one process; the ratio is SMP / Mask R-CNN.
- ``targets``: :meth:`SMP.build_targets` for ``target_images`` images (8) with
  ``persons`` persons each, reported per image against the step time per image (the
  issue-3 goal: targets < 5% of a training step).
- Peak resident memory of each side, each measured in its own fresh process
  (``python -m benchmarks.bench_training --memory smp``): ``ru_maxrss`` is a high-water
  mark, so two models in one process would hide the smaller one.

Usage::

    python -m benchmarks.bench_training [--size 512 512] [--batch 2] [--json f]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.common import (
    REPO_ROOT,
    autocast,
    build_mask_rcnn,
    build_smp,
    images_tensor,
    machine_info,
    peak_rss_mib,
    person_maps,
    resolve_device,
    set_threads,
    synchronize,
    time_alternating,
    time_call,
)


def make_batch(
    batch: int, height: int, width: int, persons: int, *, num_classes: int, device: torch.device
) -> tuple[Tensor, list[Tensor]]:
    """Random images and GT person maps (``persons`` per image, different per image)."""
    images = images_tensor(batch, height, width, device=device)
    parsing = [
        person_maps(persons, height, width, num_classes=num_classes, seed=i).to(device)
        for i in range(batch)
    ]
    return images, parsing


def mask_rcnn_targets(parsing: list[Tensor]) -> list[dict[str, Tensor]]:
    """Mask R-CNN GT from person maps: one box, label 1 ("person") and mask per person."""
    targets = []
    for maps in parsing:
        masks = (maps > 0).to(torch.uint8)
        rows, cols = (maps > 0).any(2), (maps > 0).any(1)  # (N, H), (N, W)
        idx_h = torch.arange(maps.shape[1], device=maps.device)
        idx_w = torch.arange(maps.shape[2], device=maps.device)
        y0 = torch.where(rows, idx_h, maps.shape[1]).amin(1)
        y1 = torch.where(rows, idx_h, -1).amax(1) + 1
        x0 = torch.where(cols, idx_w, maps.shape[2]).amin(1)
        x1 = torch.where(cols, idx_w, -1).amax(1) + 1
        boxes = torch.stack((x0, y0, x1, y1), 1).float()
        labels = torch.ones(len(maps), dtype=torch.int64, device=maps.device)
        targets.append({"boxes": boxes, "labels": labels, "masks": masks})
    return targets


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def smp_step_fn(
    net: nn.Module, images: Tensor, parsing: list[Tensor], *, device: torch.device, amp: bool
) -> Callable[[], float]:
    """A closure running one SMP training step; returns the loss."""
    net.train()
    optimizer = torch.optim.SGD(_trainable(net), lr=1e-3, momentum=0.9, weight_decay=1e-4)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            outputs = net(images)
        loss = net.loss(outputs, parsing)["loss"]
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def mask_rcnn_step_fn(
    peer: nn.Module, images: Tensor, parsing: list[Tensor], *, device: torch.device, amp: bool
) -> Callable[[], float]:
    """A closure running one Mask R-CNN training step on the same batch; returns the loss."""
    peer.train()
    optimizer = torch.optim.SGD(_trainable(peer), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    inputs = list(images)
    targets = mask_rcnn_targets(parsing)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            losses = peer(inputs, targets)
        loss = sum(losses.values())
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def build_side(side: str, backbone: str, height: int, width: int, overrides=None) -> nn.Module:
    """The network of one side: ``"smp"`` (SMP with ``backbone``) or ``"mask_rcnn"``."""
    if side == "smp":
        return build_smp(backbone, overrides=overrides)
    if side == "mask_rcnn":
        return build_mask_rcnn(min_size=min(height, width), max_size=max(height, width))
    raise ValueError(f"unknown side {side!r}: smp | mask_rcnn")


def memory_of_side(
    side: str,
    *,
    backbone: str,
    batch: int,
    height: int,
    width: int,
    persons: int,
    steps: int,
    device: torch.device,
    amp: bool = False,
    overrides: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Peak RSS (and CUDA peak) of ``steps`` training steps of one side, in this process."""
    model = build_side(side, backbone, height, width, overrides).to(device)
    num_classes = model.num_classes if side == "smp" else 59
    images, parsing = make_batch(
        batch, height, width, persons, num_classes=num_classes, device=device
    )
    make = smp_step_fn if side == "smp" else mask_rcnn_step_fn
    step = make(model, images, parsing, device=device, amp=amp)
    before = peak_rss_mib()
    for _ in range(steps):
        step()
    synchronize(device)
    out = {"peak_rss_mib": peak_rss_mib(), "rss_before_steps_mib": before}
    if device.type == "cuda":
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def memory_in_subprocess(side: str, *, threads: int, **kwargs: Any) -> dict[str, float]:
    """Run :func:`memory_of_side` in a fresh interpreter and return its figures."""
    cmd = [sys.executable, "-m", "benchmarks.bench_training", "--memory", side,
           "--threads", str(threads), "--backbone", kwargs["backbone"],
           "--batch", str(kwargs["batch"]), "--size", str(kwargs["height"]), str(kwargs["width"]),
           "--persons", str(kwargs["persons"]), "--device", str(kwargs["device"]),
           "--overrides", json.dumps(kwargs.get("overrides") or {})]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory run of {side} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(
    *,
    backbone: str = "r50",
    batch: int = 2,
    height: int = 512,
    width: int = 512,
    persons: int = 10,
    target_images: int = 8,
    warmup: int = 1,
    repeats: int = 3,
    device: str = "auto",
    amp: bool | None = None,
    mask_rcnn: bool = True,
    memory: bool = True,
    threads: int = 2,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Training-step, target and memory figures (issue 7.3 and issue 3's target goal)."""
    dev = resolve_device(device)
    amp = dev.type == "cuda" if amp is None else amp
    net = build_side("smp", backbone, height, width, overrides).to(dev)
    images, parsing = make_batch(
        batch, height, width, persons, num_classes=net.num_classes, device=dev
    )
    fns = {"smp_step": smp_step_fn(net, images, parsing, device=dev, amp=amp)}
    if mask_rcnn:
        peer = build_side("mask_rcnn", backbone, height, width).to(dev)
        fns["mask_rcnn_step"] = mask_rcnn_step_fn(peer, images, parsing, device=dev, amp=amp)
    timings = time_alternating(fns, warmup=warmup, repeats=repeats, device=dev)
    result: dict[str, Any] = {
        "backbone": backbone,
        "batch": batch,
        "size": [height, width],
        "persons_per_image": persons,
        "amp_bf16": amp,
        "machine": machine_info(dev),
    }
    for name, timing in timings.items():
        result[f"{name}_ms"] = timing.ms
        result[f"{name}_runs_ms"] = [round(1e3 * r, 2) for r in timing.runs]
    result["smp_images_per_s"] = 1e3 * batch / result["smp_step_ms"]
    if mask_rcnn:
        result["ratio_step_vs_mask_rcnn"] = result["smp_step_ms"] / result["mask_rcnn_step_ms"]

    target_maps = [
        person_maps(persons, height, width, num_classes=net.num_classes, seed=100 + i).to(dev)
        for i in range(target_images)
    ]
    targets = time_call(
        lambda: net.build_targets(target_maps), warmup=warmup, repeats=repeats, device=dev
    )
    result["targets_images"] = target_images
    result["targets_ms"] = targets.ms
    result["targets_share_of_step"] = (targets.ms / target_images) / (result["smp_step_ms"] / batch)
    if memory:
        kwargs = dict(backbone=backbone, batch=batch, height=height, width=width,
                      persons=persons, device=dev, overrides=overrides)  # fmt: skip
        result["smp_memory"] = memory_in_subprocess("smp", threads=threads, **kwargs)
        if mask_rcnn:
            result["mask_rcnn_memory"] = memory_in_subprocess(
                "mask_rcnn", threads=threads, **kwargs
            )
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="r50")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", nargs=2, type=int, default=[512, 512], metavar=("H", "W"))
    parser.add_argument("--persons", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--memory", choices=["smp", "mask_rcnn"], default=None,
                        help="only measure the peak memory of this side (used in a subprocess)")  # fmt: skip
    parser.add_argument("--overrides", default="{}", help="JSON dict of SMP config overrides")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    overrides = json.loads(args.overrides)
    if args.memory is not None:
        figures = memory_of_side(
            args.memory, backbone=args.backbone, batch=args.batch, height=args.size[0],
            width=args.size[1], persons=args.persons, steps=1,
            device=resolve_device(args.device), overrides=overrides,
        )  # fmt: skip
        print(json.dumps(figures))
        return figures
    result = run(
        backbone=args.backbone, batch=args.batch, height=args.size[0], width=args.size[1],
        persons=args.persons, warmup=args.warmup, repeats=args.repeats, device=args.device,
        threads=args.threads, overrides=overrides,
    )  # fmt: skip
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("_runs_ms")}, indent=1))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
