"""How SMP's inference cost grows with pixels and with persons (issue 7.2, issue 3 decode goal).

For each input size (short sides 512, 800, 1024 at the 800 x 1216 aspect ratio) the SMP
forward is timed once (its cost does not depend on the image content) and the decode is
timed for 2, 10 and 20 persons (oracle outputs, see :func:`benchmarks.common.oracle_outputs`).
``total = forward + decode``. A single-stage parser should grow with pixels and barely
with persons: the issue-3 goal is decode(20) <= 1.5 x decode(2) and decode <= 10% of the
forward.

Usage::

    python -m benchmarks.bench_scaling [--sizes 512x768 800x1216 1024x1568] [--persons 2 10 20]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
from smp_parsing.models.inference import prepare_for_inference

DEFAULT_SIZES = ((512, 768), (800, 1216), (1024, 1568))  # short side 512/800/1024, ~1.52:1


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
        ``decode_share`` (decode / forward); plus ``pixel_growth`` (forward at the largest
        over the smallest size, and the pixel ratio) and ``person_growth`` (decode at most
        over fewest persons, per size).
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
        for n, oracle in workloads.items():

            def decode(oracle=oracle, metas=metas) -> None:
                with torch.inference_mode():
                    net.predict(oracle, metas)

            fns[f"decode_{n}"] = decode
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
            })  # fmt: skip
    smallest, largest = (
        min(forward_ms, key=lambda s: s[0] * s[1]),
        max(forward_ms, key=lambda s: s[0] * s[1]),
    )
    person_growth = {}
    for height, width in sizes:
        by_n = {r["persons"]: r["decode_ms"] for r in rows if r["size"] == [height, width]}
        person_growth[f"{height}x{width}"] = by_n[max(persons)] / by_n[min(persons)]
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
    print(result["pixel_growth"], result["person_growth"])
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
