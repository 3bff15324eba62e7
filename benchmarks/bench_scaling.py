"""How SMP's inference cost grows with pixels and with persons (issue 7.2, issue 3 decode goal).

For each input size (short sides 512, 800, 1024 at the 800 x 1216 aspect ratio) the SMP
forward is timed once (its cost does not depend on the image content) and the decode is
timed for 2, 10 and 20 persons (oracle outputs, see :func:`benchmarks.common.oracle_outputs`).
``total = forward + decode``. A single-stage parser should grow with pixels and barely
with persons: the issue-3 goal is decode(20) <= 1.5 x decode(2) and decode <= 10% of the
forward.

Each decode row also times, in the same rounds, the decode's one dense step on its own: the
kernel x F_mask product (+ sigmoid) of the part masks that decode computed (SOLOv2's
dynamic masks, one (C_K,) kernel per kept part over every F_mask cell). It grows with the
number of parts by construction, so ``decode_rest_ms`` (decode minus that product) shows
what the rest of the decode adds per person.

Usage::

    python -m benchmarks.bench_scaling [--sizes 512x768 800x1216 1024x1568] [--persons 2 10 20]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from benchmarks.bench_inference import decode_workload
from benchmarks.common import (
    autocast,
    build_smp,
    images_tensor,
    inference_switches,
    machine_info,
    metas_for,
    resolve_device,
    set_threads,
    time_alternating,
)
from smp_parsing.models.decode import pipeline as decode_module
from smp_parsing.models.deploy import prepare_for_inference

DEFAULT_SIZES = ((512, 768), (800, 1216), (1024, 1568))  # short side 512/800/1024, ~1.52:1


def part_masks_computed(net: torch.nn.Module, outputs: Any, metas: list[dict]) -> int:
    """How many part masks ``net.predict`` computes for ``outputs`` (rows of its product)."""
    rows: list[int] = []
    real = decode_module.mask_statistics

    def counting(soft, *args, **kwargs):
        rows.append(soft.shape[0])
        return real(soft, *args, **kwargs)

    with mock.patch.object(decode_module, "mask_statistics", counting), torch.inference_mode():
        net.predict(outputs, metas)
    return sum(rows)


def run(
    *,
    backbone: str = "r50",
    sizes: Sequence[Sequence[int]] = DEFAULT_SIZES,
    persons: Sequence[int] = (2, 10, 20),
    warmup: int = 1,
    repeats: int = 3,
    device: str = "auto",
    amp: bool | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Forward per size and decode per (size, persons), medians in ms.

    Returns:
        ``rows``: one per (size, persons) with ``forward_ms``, ``decode_ms``, ``total_ms``,
        ``decode_share`` (decode / forward), ``part_masks``, ``mask_product_ms`` and
        ``decode_rest_ms``; plus ``pixel_growth`` (forward at the largest over the smallest
        size, and the pixel ratio), ``person_growth`` (decode at most over fewest persons,
        per size) and ``person_growth_without_mask_product`` (the same for
        ``decode_rest_ms``).
    """
    dev = resolve_device(device)
    amp = dev.type == "cuda" if amp is None else amp
    net = build_smp(backbone, overrides=overrides).to(dev).eval()
    prepared = prepare_for_inference(net, **inference_switches())  # as predict runs it
    rows: list[dict[str, Any]] = []
    forward_ms: dict[tuple[int, int], float] = {}
    for height, width in sizes:
        images = images_tensor(1, height, width, device=dev)
        if prepared["channels_last"]:
            images = images.contiguous(memory_format=torch.channels_last)
        metas = metas_for(height, width)
        workloads = {n: decode_workload(net, n, height, width, dev) for n in persons}

        def forward(images=images) -> None:
            with torch.inference_mode(), autocast(dev, amp):
                net(images)

        fns = {"forward": forward}
        parts: dict[int, int] = {}
        for n, oracle in workloads.items():

            def decode(oracle=oracle, metas=metas) -> None:
                with torch.inference_mode():
                    net.predict(oracle, metas)

            fns[f"decode_{n}"] = decode
            parts[n] = part_masks_computed(net, oracle, metas)
            kernels = torch.randn(parts[n], oracle.mask_feat.shape[1], device=dev)
            feat = oracle.mask_feat[0].flatten(1)

            def product(kernels=kernels, feat=feat) -> None:
                with torch.inference_mode():
                    (kernels @ feat).sigmoid_()

            fns[f"product_{n}"] = product
        timings = time_alternating(fns, warmup=warmup, repeats=repeats, device=dev)
        forward_ms[(height, width)] = timings["forward"].ms
        for n in persons:
            decode_ms = timings[f"decode_{n}"].ms
            rows.append({
                "size": [height, width],
                "persons": n,
                "forward_ms": timings["forward"].ms,
                "decode_ms": decode_ms,
                "total_ms": timings["forward"].ms + decode_ms,
                "decode_share": decode_ms / timings["forward"].ms,
                "part_masks": parts[n],
                "mask_product_ms": timings[f"product_{n}"].ms,
                "decode_rest_ms": decode_ms - timings[f"product_{n}"].ms,
            })  # fmt: skip
    smallest, largest = (
        min(forward_ms, key=lambda s: s[0] * s[1]),
        max(forward_ms, key=lambda s: s[0] * s[1]),
    )
    person_growth, rest_growth = {}, {}
    for height, width in sizes:
        at_size = [r for r in rows if r["size"] == [height, width]]
        by_n = {r["persons"]: r for r in at_size}
        most, fewest = by_n[max(persons)], by_n[min(persons)]
        person_growth[f"{height}x{width}"] = most["decode_ms"] / fewest["decode_ms"]
        rest_growth[f"{height}x{width}"] = most["decode_rest_ms"] / fewest["decode_rest_ms"]
    return {
        "backbone": backbone,
        "amp_bf16": amp,
        "prepared": prepared,
        "rows": rows,
        "pixel_growth": {
            "forward_ratio": forward_ms[largest] / forward_ms[smallest],
            "pixel_ratio": (largest[0] * largest[1]) / (smallest[0] * smallest[1]),
        },
        "person_growth": person_growth,
        "person_growth_without_mask_product": rest_growth,
        "machine": machine_info(dev),
    }


def _size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="r50")
    parser.add_argument("--sizes", nargs="+", type=_size, default=list(DEFAULT_SIZES))
    parser.add_argument("--persons", nargs="+", type=int, default=[2, 10, 20])
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    result = run(backbone=args.backbone, sizes=args.sizes, persons=args.persons,
                 warmup=args.warmup, repeats=args.repeats, device=args.device)  # fmt: skip
    for row in result["rows"]:
        print(row)
    print(result["pixel_growth"], result["person_growth"],
          result["person_growth_without_mask_product"])  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
