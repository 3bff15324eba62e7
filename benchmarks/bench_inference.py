"""Inference speed of SMP (per backbone) against torchvision Mask R-CNN R50-FPN (issue 7.1).

For every backbone preset, at batch 1 in eval mode, the medians of:

- ``backbone_fpn``: ResNet + FPN alone (the part every detector pays);
- ``forward``: the full SMP forward (all heads);
- ``decode``: :meth:`SMP.predict` on the outputs a perfect network would give for an image
  with ``persons`` persons (see :func:`benchmarks.common.oracle_outputs`): a random network
  finds no human, so its decode would be trivially cheap and the figure meaningless;
- ``total``: forward + decode in one call.

The SMP network is prepared as ``predict`` prepares it: the inference switches of
``conf/predict.yaml`` (BatchNorm folding, Winograd convolutions, channels_last) through
:func:`smp_parsing.models.deploy.prepare_for_inference`.

With ``mask_rcnn`` on, torchvision's Mask R-CNN R50-FPN (random weights, exactly 20
detections) runs on the same input in the same rounds as the SMP calls, so the ratio
``SMP-R50 total / Mask R-CNN`` is taken under the same machine load; so do the same Mask
R-CNN with the same switches applied to its layers, and SMP as trained (no switch) and with
BatchNorm folding only.

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
    STOCK_SWITCHES,
    autocast,
    build_mask_rcnn,
    build_smp,
    images_tensor,
    inference_switches,
    machine_info,
    metas_for,
    oracle_outputs,
    person_maps,
    resolve_device,
    set_threads,
    time_alternating,
)
from smp_parsing.models.deploy import prepare_for_inference

PAPER_FPS_1X = 7.47  # Table 5, SMP-R101 1x grid on one V100


def decode_workload(net: torch.nn.Module, persons: int, height: int, width: int, device):
    """Oracle outputs of one ``height x width`` image holding ``persons`` persons."""
    maps = person_maps(persons, height, width, num_classes=net.num_classes)
    out = oracle_outputs([maps], net)
    return out.apply(lambda t: t.to(device))


def _total_fn(net, images, metas, device, amp):
    """Forward + decode of ``net`` on ``images`` (what a user's inference costs)."""

    def total() -> None:
        with torch.inference_mode():
            with autocast(device, amp):
                out = net(images)
            net.predict(out, metas)

    return total


def _prepared(net: torch.nn.Module, switches: dict[str, Any], images: torch.Tensor):
    """``net`` after :func:`prepare_for_inference` with ``switches``, and its input."""
    report = prepare_for_inference(net, **switches)
    if report["channels_last"]:
        images = images.contiguous(memory_format=torch.channels_last)
    return report, images


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
    channels_last: bool | None = None,
    mask_rcnn: bool = False,
    switches: dict[str, Any] | None = None,
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
        channels_last: force the ``channels_last`` switch on / off (``None``: as
            ``switches`` say).
        mask_rcnn: also time, alternating with SMP: torchvision's Mask R-CNN as it comes
            (``mask_rcnn``, the peer of the goal) and with the same inference switches
            applied to its layers (``mask_rcnn_converted``: Winograd where eligible,
            channels_last; its BatchNorm is torchvision's FrozenBatchNorm2d, not folded);
            and two SMP variants: ``total_stock`` (the network as trained, no switch) and
            ``total_folded`` (only ``fold_batchnorm``, the previous default of predict),
            plus ``backbone_fpn_stock``.
        switches: the :func:`~smp_parsing.models.deploy.prepare_for_inference`
            arguments of the timed network (default: those of ``conf/predict.yaml``,
            :func:`~benchmarks.common.inference_switches`).
        with_decode: time the decode alone too (it does not depend on the backbone, so the
            runner times it in one row only; ``total`` always includes it).
        overrides: dotted config overrides of the SMP network.

    Returns:
        Medians in ms (``backbone_fpn_ms``, ``forward_ms``, ``decode_ms``, ``total_ms``,
        and with ``mask_rcnn`` the variants above with their ratios to ``mask_rcnn_ms``),
        the run lists, the switches, shapes and counts.
    """
    switches = dict(inference_switches() if switches is None else switches)
    if channels_last is not None:
        switches["channels_last"] = channels_last
    net = build_smp(backbone, overrides=overrides).to(device).eval()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    clean = images_tensor(1, height, width, device=device)
    report, images = _prepared(net, switches, clean)  # what `predict` does
    metas = metas_for(height, width)
    oracle = decode_workload(net, persons, height, width, device)
    detected: dict[str, int] = {}

    def backbone_fpn_fn(model, x):
        def backbone_fpn() -> None:
            with torch.inference_mode(), autocast(device, amp):
                model.fpn(model.backbone(x))

        return backbone_fpn

    def forward() -> None:
        with torch.inference_mode(), autocast(device, amp):
            net(images)

    def decode() -> None:
        with torch.inference_mode():
            detected["smp_persons"] = len(net.predict(oracle, metas)[0]["scores"])

    fns = {"backbone_fpn": backbone_fpn_fn(net, images), "forward": forward}
    if with_decode:
        fns["decode"] = decode
    fns["total"] = _total_fn(net, images, metas, device, amp)
    if mask_rcnn:
        # the same weights in the same rounds: as trained, and with BN folding only
        variants = {"stock": STOCK_SWITCHES, "folded": {**STOCK_SWITCHES, "fold_batchnorm": True}}
        for name, variant_switches in variants.items():
            variant = build_smp(backbone, overrides=overrides).to(device).eval()
            variant.load_state_dict(state)
            _, x = _prepared(variant, variant_switches, clean)
            fns[f"total_{name}"] = _total_fn(variant, x, metas, device, amp)
            if name == "stock":
                fns["backbone_fpn_stock"] = backbone_fpn_fn(variant, x)
        size = {"min_size": min(height, width), "max_size": max(height, width)}
        peers = {"mask_rcnn": build_mask_rcnn(**size).to(device).eval()}
        converted = build_mask_rcnn(**size).to(device).eval()
        converted.load_state_dict(peers["mask_rcnn"].state_dict())
        detected["mask_rcnn_converted_layers"] = prepare_for_inference(converted, **switches)
        peers["mask_rcnn_converted"] = converted
        for name, peer in peers.items():
            peer_input = [images[0] if name == "mask_rcnn_converted" else clean[0]]

            def mask_rcnn_call(peer=peer, peer_input=peer_input, name=name) -> None:
                with torch.inference_mode(), autocast(device, amp):
                    detected[f"{name}_detections"] = len(peer(peer_input)[0]["scores"])

            fns[name] = mask_rcnn_call
    timings = time_alternating(fns, warmup=warmup, repeats=repeats, device=device)
    result: dict[str, Any] = {
        "backbone": backbone,
        "size": [height, width],
        "persons_in_decode": persons,
        "decode_timed_alone": with_decode,
        "amp_bf16": amp,
        "channels_last": report["channels_last"],
        "switches": switches,
        "prepared": report,
        "parameters_m": sum(p.numel() for p in net.parameters()) / 1e6,
        **detected,
    }
    for name, timing in timings.items():
        result[f"{name}_ms"] = timing.ms
        result[f"{name}_runs_ms"] = [round(1e3 * r, 2) for r in timing.runs]
    result["fps_total"] = 1e3 / result["total_ms"]
    result["ratio_total_vs_backbone_fpn"] = result["total_ms"] / result["backbone_fpn_ms"]
    if mask_rcnn:
        result["ratio_total_vs_mask_rcnn"] = result["total_ms"] / result["mask_rcnn_ms"]
        for name in ("total_stock", "total_folded"):
            result[f"ratio_{name}_vs_mask_rcnn"] = result[f"{name}_ms"] / result["mask_rcnn_ms"]
        result["ratio_total_vs_mask_rcnn_converted"] = (
            result["total_ms"] / result["mask_rcnn_converted_ms"]
        )
        result["ratio_total_stock_vs_backbone_fpn_stock"] = (
            result["total_stock_ms"] / result["backbone_fpn_stock_ms"]
        )
        for name in ("mask_rcnn", "mask_rcnn_converted"):
            if detected.get(f"{name}_detections") != MASK_RCNN_DETECTIONS:
                result["warning"] = (
                    f"{name} returned {detected.get(f'{name}_detections')} detections, "
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

    ``amp`` defaults to on for CUDA and off for the CPU (the paper's GPU setting vs. the
    fp32 CPU path); ``channels_last`` to on for CUDA and to ``conf/predict.yaml`` on the
    CPU; ``mask_rcnn_with`` names the backbone row whose rounds include Mask R-CNN
    (``None``: no peer).
    """
    dev = resolve_device(device)
    amp = dev.type == "cuda" if amp is None else amp
    if channels_last is None and dev.type == "cuda":
        channels_last = True
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
