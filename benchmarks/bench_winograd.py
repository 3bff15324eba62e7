"""Winograd F(4x4, 3x3) against oneDNN's direct convolution, per layer shape of SMP-R50.

For every 3 x 3 stride-1 shape of SMP-R50 at 800 x 1216 (and Mask R-CNN's 14 x 14 mask
head), times ``F.conv2d`` and :func:`smp_parsing.models.deploy.winograd.winograd_conv2d` in
alternating rounds and reports the medians, their ratio and the Winograd error (max
absolute error over the max output, against a float64 convolution). This is the evidence
behind ``winograd_min_channels`` of ``conf/inference/``.

Usage::

    python -m benchmarks.bench_winograd [--repeats 5] [--channels-last] [--json f]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.common import machine_info, set_threads, time_alternating
from smp_parsing.models.deploy.winograd import transform_weight, winograd_conv2d

# (C_in, C_out, H, W, where): the 3x3 stride-1 convolutions of SMP-R50 at 800 x 1216
SHAPES: tuple[tuple[int, int, int, int, str], ...] = (
    (512, 512, 40, 40, "part/center towers, grid 40"),
    (512, 512, 36, 36, "part towers, grid 36"),
    (512, 512, 24, 24, "part towers, grid 24"),
    (512, 512, 12, 12, "part towers, grid 12"),
    (258, 512, 40, 40, "kernel tower input (CoordConv)"),
    (1282, 1276, 40, 40, "offset head reduce conv"),
    (1280, 256, 40, 40, "center fusion conv"),
    (256, 256, 200, 304, "FPN output conv P2"),
    (256, 128, 200, 304, "mask feature P2"),
    (256, 256, 50, 76, "FPN P4 / backbone stage 3"),
    (128, 128, 100, 152, "backbone stage 2 / mask feature"),
    (64, 64, 200, 304, "backbone stage 1 (below the threshold)"),
    (256, 256, 14, 14, "Mask R-CNN mask head (x20 RoIs: batch 20)"),
)


def run(
    *,
    shapes=SHAPES,
    warmup: int = 1,
    repeats: int = 5,
    tile: int = 4,
    channels_last: bool = False,
) -> dict[str, Any]:
    """Time every shape; returns rows with ``conv_ms``, ``winograd_ms``, ``ratio``, ``rel_err``."""
    rows = []
    cpu = torch.device("cpu")
    for cin, cout, h, w, where in shapes:
        gen = torch.Generator().manual_seed(0)
        batch = 20 if (h, w) == (14, 14) else 1
        x = torch.randn(batch, cin, h, w, generator=gen).relu()
        weight = torch.randn(cout, cin, 3, 3, generator=gen) * (2.0 / (9 * cin)) ** 0.5
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
            weight = weight.contiguous(memory_format=torch.channels_last)
        u = transform_weight(weight, tile)
        ref = F.conv2d(x.double(), weight.double(), padding=1)
        err = (winograd_conv2d(x, u, tile=tile).double() - ref).abs().max() / ref.abs().max()

        def conv(x=x, weight=weight) -> None:
            F.conv2d(x, weight, padding=1)

        def wino(x=x, u=u) -> None:
            winograd_conv2d(x, u, tile=tile)

        with torch.inference_mode():
            t = time_alternating({"conv": conv, "winograd": wino}, warmup=warmup,
                                 repeats=repeats, device=cpu)  # fmt: skip
        rows.append({
            "shape": f"{cin}->{cout} @ {h}x{w}" + (f" (batch {batch})" if batch > 1 else ""),
            "where": where,
            "conv_ms": t["conv"].ms,
            "winograd_ms": t["winograd"].ms,
            "ratio": t["winograd"].ms / t["conv"].ms,
            "rel_err": float(err),
        })  # fmt: skip
    return {
        "rows": rows,
        "tile": tile,
        "channels_last": channels_last,
        "machine": machine_info(cpu),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tile", type=int, default=4)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    result = run(repeats=args.repeats, tile=args.tile, channels_last=args.channels_last)
    print(f"| shape | layer | conv ms | Winograd F({args.tile}x{args.tile},3x3) ms | ratio | "
          "max error / max output |\n|---|---|---|---|---|---|")  # fmt: skip
    for r in result["rows"]:
        print(f"| {r['shape']} | {r['where']} | {r['conv_ms']:.1f} | {r['winograd_ms']:.1f} | "
              f"{r['ratio']:.2f} | {r['rel_err']:.1e} |")  # fmt: skip
    m = result["machine"]
    print(f"\n{m['cpu']}, {m['torch_threads']} threads, load average {m['load_average_1_5_15']}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
