"""Inference speed of SMP (per backbone) against torchvision Mask R-CNN R50-FPN (issue 7.1).

For every backbone preset, at batch 1 in eval mode, the medians of:

- ``backbone_fpn``: ResNet + FPN alone (the part every detector pays);
- ``forward``: the full SMP forward (all heads);
- ``decode``: :meth:`SMP.predict` on the outputs a perfect network would give for an image
  with ``persons`` persons (see :func:`benchmarks.common.oracle_outputs`): a random network
  finds no human, so its decode would be trivially cheap and the figure meaningless;
- ``total``: forward + decode in one call.

With ``mask_rcnn`` on, torchvision's Mask R-CNN R50-FPN (random weights, exactly 20
detections) runs on the same input in the same rounds as the SMP calls, so the ratio
``SMP-R50 total / Mask R-CNN`` is taken under the same machine load.

Usage::

    python -m benchmarks.bench_inference [--backbones r50 r101] [--size 800 1216] [--json f]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (
    MASK_RCNN_DETECTIONS,
    autocast,
    build_mask_rcnn,
    build_smp,
    images_tensor,
    machine_info,
    metas_for,
    oracle_outputs,
    person_maps,
    resolve_device,
    set_threads,
    time_alternating,
    to_channels_last,
)
from smp_parsing.models.fold_bn import fold_frozen_batchnorm

PAPER_FPS_1X = 7.47  # Table 5, SMP-R101 1x grid on one V100


def decode_workload(net: torch.nn.Module, persons: int, height: int, width: int, device):
    """Oracle outputs of one ``height x width`` image holding ``persons`` persons."""
    maps = person_maps(persons, height, width, num_classes=net.num_classes)
    out = oracle_outputs([maps], net)
    return _outputs_to(out, device)


def _outputs_to(out, device):
    for name in ("center", "offsets", "mask_feat"):
        setattr(out, name, getattr(out, name).to(device))
    out.cate = [t.to(device) for t in out.cate]
    out.kernels = [t.to(device) for t in out.kernels]
    return out


def _total_fn(net, images, metas, device, amp):
    """Forward + decode of ``net`` on ``images`` (what a user's inference costs)."""

    def total() -> None:
        with torch.inference_mode():
            with autocast(device, amp):
                out = net(images)
            net.predict(out, metas)

    return total


def bench_smp_inference(
    backbone: str,
    *,
    height: int,
    width: int,
    persons: int,
    warmup: int,
    repeats: int,
    device: torch.device,
    amp: bool = False,
    channels_last: bool = False,
    mask_rcnn: bool = False,
    fold_bn: bool = True,
    with_decode: bool = True,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Time one SMP backbone preset (and optionally Mask R-CNN in the same rounds).

    Args:
        backbone: preset of ``conf/backbone``.
        height, width: input size (no resize inside SMP).
        persons: persons in the decode workload.
        warmup, repeats: untimed / timed rounds.
        device: where the networks run.
        amp: bf16 autocast around the forward passes.
        channels_last: convert networks and input to ``channels_last``.
        mask_rcnn: also time Mask R-CNN on the same input, alternating with SMP, and (when
            ``channels_last`` is off) two SMP variants: ``total_unfolded`` (BatchNorm not
            folded, the network as trained) and ``total_channels_last`` (the
            ``channels_last: true`` switch on top of ``fold_bn``).
        fold_bn: fold BatchNorm into the convolutions first, as ``predict`` does by
            default (:func:`~smp_parsing.models.fold_bn.fold_frozen_batchnorm`).
        with_decode: time the decode alone too (it does not depend on the backbone, so the
            runner times it in one row only; ``total`` always includes it).
        overrides: dotted config overrides of the SMP network.

    Returns:
        Medians in ms (``backbone_fpn_ms``, ``forward_ms``, ``decode_ms``, ``total_ms`` and
        ``mask_rcnn_ms``, ``total_channels_last_ms`` and their ratios), the run lists,
        shapes and counts.
    """
    net = build_smp(backbone, overrides=overrides).to(device).eval()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    if fold_bn:  # what `predict` does (fold_batchnorm: true)
        fold_frozen_batchnorm(net)
    images = images_tensor(1, height, width, device=device)
    if channels_last:
        images = to_channels_last(net, images)
    metas = metas_for(height, width)
    oracle = decode_workload(net, persons, height, width, device)
    detected: dict[str, int] = {}

    def backbone_fpn() -> None:
        with torch.inference_mode(), autocast(device, amp):
            net.fpn(net.backbone(images))

    def forward() -> None:
        with torch.inference_mode(), autocast(device, amp):
            net(images)

    def decode() -> None:
        with torch.inference_mode():
            detected["smp_persons"] = len(net.predict(oracle, metas)[0]["scores"])

    fns = {"backbone_fpn": backbone_fpn, "forward": forward}
    if with_decode:
        fns["decode"] = decode
    fns["total"] = _total_fn(net, images, metas, device, amp)
    if mask_rcnn and not channels_last:
        # Figures behind the inference switches, same weights, same rounds: the network as
        # trained (BN not folded) and with the `channels_last: true` switch of the config.
        variants = {
            "total_unfolded": ({}, False),
            "total_channels_last": ({"channels_last": True}, fold_bn),
        }
        for name, (extra, fold) in variants.items():
            variant = build_smp(backbone, overrides={**(overrides or {}), **extra}).to(device)
            variant.eval().load_state_dict(state)
            if fold:
                fold_frozen_batchnorm(variant)
            fns[name] = _total_fn(variant, images, metas, device, amp)
    if mask_rcnn:
        peer = build_mask_rcnn(min_size=min(height, width), max_size=max(height, width))
        peer = peer.to(device).eval()
        peer_input = [images[0]]
        if channels_last:
            to_channels_last(peer)

        def mask_rcnn_call() -> None:
            with torch.inference_mode(), autocast(device, amp):
                detected["mask_rcnn_detections"] = len(peer(peer_input)[0]["scores"])

        fns["mask_rcnn"] = mask_rcnn_call
    timings = time_alternating(fns, warmup=warmup, repeats=repeats, device=device)
    result: dict[str, Any] = {
        "backbone": backbone,
        "size": [height, width],
        "persons_in_decode": persons,
        "decode_timed_alone": with_decode,
        "amp_bf16": amp,
        "channels_last": channels_last,
        "fold_bn": fold_bn,
        "parameters_m": sum(p.numel() for p in net.parameters()) / 1e6,
        **detected,
    }
    for name, timing in timings.items():
        result[f"{name}_ms"] = timing.ms
        result[f"{name}_runs_ms"] = [round(1e3 * r, 2) for r in timing.runs]
    result["fps_total"] = 1e3 / result["total_ms"]
    if mask_rcnn:
        result["ratio_total_vs_mask_rcnn"] = result["total_ms"] / result["mask_rcnn_ms"]
        for name in ("total_unfolded", "total_channels_last"):
            if f"{name}_ms" in result:
                result[f"ratio_{name}_vs_mask_rcnn"] = result[f"{name}_ms"] / result["mask_rcnn_ms"]
        if detected.get("mask_rcnn_detections") != MASK_RCNN_DETECTIONS:
            result["warning"] = (
                f"Mask R-CNN returned {detected.get('mask_rcnn_detections')} detections, "
                f"not {MASK_RCNN_DETECTIONS}"
            )
    return result


def run(
    *,
    backbones: Sequence[str] = ("r50", "r50_dcn", "r101", "r101_dcn"),
    height: int = 800,
    width: int = 1216,
    persons: int = 20,
    warmup: int = 1,
    repeats: int = 5,
    device: str = "auto",
    amp: bool | None = None,
    channels_last: bool | None = None,
    mask_rcnn_with: str | None = "r50",
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Inference table of issue 7.1 (and the CUDA/AMP variant of 7.6 on a GPU).

    ``amp`` / ``channels_last`` default to on for CUDA and off for the CPU (the paper's
    GPU setting vs. the fp32 CPU path); ``mask_rcnn_with`` names the backbone row whose
    rounds include Mask R-CNN (``None``: no peer).
    """
    dev = resolve_device(device)
    amp = dev.type == "cuda" if amp is None else amp
    channels_last = dev.type == "cuda" if channels_last is None else channels_last
    rows = [
        bench_smp_inference(
            name,
            height=height,
            width=width,
            persons=persons,
            warmup=warmup,
            repeats=repeats,
            device=dev,
            amp=amp,
            channels_last=channels_last,
            mask_rcnn=name == mask_rcnn_with,
            with_decode=i == 0 or name == mask_rcnn_with,
            overrides=overrides,
        )
        for i, name in enumerate(backbones)
    ]
    result = {"rows": rows, "machine": machine_info(dev), "paper_fps_1x": PAPER_FPS_1X}
    if dev.type != "cuda":
        result["gpu_note"] = "no CUDA device present: the AMP/channels-last GPU run was skipped"
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["r50", "r50_dcn", "r101", "r101_dcn"])
    parser.add_argument("--size", nargs=2, type=int, default=[800, 1216], metavar=("H", "W"))
    parser.add_argument("--persons", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    result = run(
        backbones=args.backbones,
        height=args.size[0],
        width=args.size[1],
        persons=args.persons,
        warmup=args.warmup,
        repeats=args.repeats,
        device=args.device,
    )
    for row in result["rows"]:
        print({k: v for k, v in row.items() if not k.endswith("_runs_ms")})
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
