"""Speed of the SMP target builders and of the single-stage decode (issue 3).

- Targets: ``build_smp_targets`` for a batch of 8 images of 800 x 1216 with 10 persons
  each (6 parts per person, MHP v2 label space, paper grids).
- Decode: ``decode_parsing`` on the oracle outputs (ideal head outputs built from the
  targets, F_mask and kernels at the paper's C_K = 256) of one 800 x 1216 image with 2 and
  with 20 persons; the goal is decode(20) <= 1.5 x decode(2). Every person and part is
  found, so the decode does the work of a well-trained model.
- Optionally (``--forward``) the R50 SMP forward at the same size, for the decode /
  forward ratio (goal <= 10 %).

Medians over ``--repeats`` runs after one warm-up, ``--threads`` intra-op threads.

Usage::

    python benchmarks/bench_targets_decode.py [--threads 2] [--repeats 3] [--forward]
"""

from __future__ import annotations

import inspect
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from omegaconf import OmegaConf

from benchmarks.common import (
    MHP_NUM_CLASSES,
    bench_parser,
    build_smp,
    images_tensor,
    inference_mode,
    machine_info,
    metas_for,
    oracle_outputs,
    person_maps,
    set_threads,
    time_alternating,
    time_call,
    write_figures,
)
from smp_parsing.models.decode import decode_parsing
from smp_parsing.models.targets import build_smp_targets
from smp_parsing.utils.compose import compose_config


def paper_settings() -> SimpleNamespace:
    """Grids, scale ranges, epsilon, strides and test_cfg of ``conf/model/net/smp.yaml``."""
    cfg = compose_config(None, ["+model/net=smp"]).model.net
    return SimpleNamespace(
        part_grids=list(cfg.num_grids),
        center_grid=int(cfg.center_grid),
        scale_ranges=[list(r) for r in cfg.scale_ranges],
        epsilon=float(cfg.epsilon),
        strides=list(cfg.strides),
        test_cfg=dict(OmegaConf.to_container(cfg.test_cfg)),
    )


def decode_kwargs(settings: SimpleNamespace) -> dict:
    """test_cfg minus the keys the decode does not take (MIR's threshold)."""
    accepted = inspect.signature(decode_parsing).parameters
    return {k: v for k, v in settings.test_cfg.items() if k in accepted}


def cpu_times(fns: dict, *, repeats: int) -> dict[str, float]:
    """Median process CPU seconds of each callable (all threads), round-robin.

    On a shared machine the wall time mostly measures the other tenants; the CPU time
    this process spends is a steadier figure (it still counts OpenMP spin-waits).
    """
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.process_time()
            fn()
            runs[name].append(time.process_time() - start)
    return {name: statistics.median(r) for name, r in runs.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = bench_parser(__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1216)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--persons", type=int, default=10)
    parser.add_argument("--forward", action="store_true", help="also time the R50 forward")
    args = parser.parse_args(argv)

    threads = set_threads(args.threads)
    device = torch.device("cpu")
    settings = paper_settings()
    height, width = args.height, args.width
    report: dict = {"machine": machine_info(device), "threads": threads}

    # --- target builders: a training batch
    batch = [
        person_maps(args.persons, height, width, num_classes=MHP_NUM_CLASSES, seed=i)
        for i in range(args.batch)
    ]

    def targets():
        return build_smp_targets(
            batch,
            num_classes=MHP_NUM_CLASSES,
            center_grid=settings.center_grid,
            part_grids=settings.part_grids,
            scale_ranges=settings.scale_ranges,
            epsilon=settings.epsilon,
        )

    built = targets()
    t_targets = time_call(targets, warmup=1, repeats=args.repeats, device=device)
    cpu_targets = cpu_times({"targets": targets}, repeats=args.repeats)["targets"]
    report["targets"] = {
        "batch": args.batch,
        "persons_per_image": args.persons,
        "parts": len(built.instances.parts),
        "positive_part_cells": int(built.parts.num_pos),
        **t_targets.as_dict(),
        "cpu_ms": 1e3 * cpu_targets,
    }
    print(
        f"targets  {args.batch} x {height}x{width}, {args.persons} persons/image "
        f"({len(built.instances.parts)} parts, {int(built.parts.num_pos)} positive cells): "
        f"{t_targets.ms:.1f} ms (process CPU time {1e3 * cpu_targets:.0f} ms)"
    )

    # --- decode: one image with 2 and with 20 persons (oracle outputs)
    net_like = SimpleNamespace(
        part_grids=settings.part_grids,
        center_grid=settings.center_grid,
        build_targets=lambda maps: build_smp_targets(
            maps,
            num_classes=MHP_NUM_CLASSES,
            center_grid=settings.center_grid,
            part_grids=settings.part_grids,
            scale_ranges=settings.scale_ranges,
            epsilon=settings.epsilon,
        ),
    )
    metas = metas_for(height, width)
    kwargs = decode_kwargs(settings)
    workloads = {}
    for persons in (2, 20):
        maps = person_maps(persons, height, width, num_classes=MHP_NUM_CLASSES, seed=100)
        outputs = oracle_outputs([maps], net_like, kernel_channels=256)
        found = decode_parsing(outputs, metas, strides=settings.strides, **kwargs)[0]
        if len(found["scores"]) != persons:
            raise RuntimeError(f"oracle decode found {len(found['scores'])} of {persons} persons")
        workloads[f"decode_{persons}"] = lambda o=outputs: decode_parsing(
            o, metas, strides=settings.strides, **kwargs
        )
    timings = time_alternating(workloads, warmup=1, repeats=args.repeats, device=device)
    cpu = cpu_times(workloads, repeats=args.repeats)
    ratio = timings["decode_20"].median / timings["decode_2"].median
    cpu_ratio = cpu["decode_20"] / cpu["decode_2"]
    report["decode"] = {k: v.as_dict() for k, v in timings.items()}
    report["decode"].update(
        ratio_20_over_2=ratio,
        cpu_ms={k: 1e3 * v for k, v in cpu.items()},
        cpu_ratio_20_over_2=cpu_ratio,
    )
    print(
        f"decode   {height}x{width}: 2 persons {timings['decode_2'].ms:.1f} ms, "
        f"20 persons {timings['decode_20'].ms:.1f} ms (x{ratio:.2f}, goal <= 1.5); "
        f"process CPU time {1e3 * cpu['decode_2']:.0f} / {1e3 * cpu['decode_20']:.0f} ms "
        f"(x{cpu_ratio:.2f})"
    )

    if args.forward:
        net = build_smp("r50", num_classes=MHP_NUM_CLASSES)
        images = images_tensor(1, height, width, device=device)
        with inference_mode(net):
            t_forward = time_call(
                lambda: net(images), warmup=1, repeats=args.repeats, device=device
            )
        share = timings["decode_20"].median / t_forward.median
        report["forward_r50"] = {**t_forward.as_dict(), "decode20_share": share}
        print(
            f"forward  R50 {height}x{width}: {t_forward.ms:.0f} ms; "
            f"decode(20) = {100 * share:.1f} % of it (goal <= 10 %)"
        )

    write_figures(args.json, report)
    return report


if __name__ == "__main__":
    main()
