"""Run every benchmark, print Markdown tables, write JSON + Markdown to ``benchmarks/results/``.

``make bench`` runs this with the issue-7 sizes (about 20 minutes on 2 CPU threads);
``--quick`` uses smaller inputs and fewer repeats (a few minutes) to check that everything
runs. Figures are medians after warm-up with the torch threads fixed (``--threads``); the
SMP / Mask R-CNN ratios come from alternating rounds in one process.

Usage::

    python -m benchmarks.run_all [--quick] [--only inference scaling training pipeline metric]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import bench_inference, bench_pipeline, bench_scaling, bench_training
from benchmarks.common import REPO_ROOT, machine_info, resolve_device, set_threads

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
BENCHMARKS = ("inference", "scaling", "training", "pipeline", "metric")


@dataclass(frozen=True)
class Settings:
    """Sizes and repeats of one run (full = issue 7, quick = smoke run)."""

    backbones: tuple[str, ...]
    inference_size: tuple[int, int]
    scaling_sizes: tuple[tuple[int, int], ...]
    persons: tuple[int, ...]
    train_size: tuple[int, int]
    train_batch: int
    target_images: int
    pipeline_images: int
    metric_images: int
    warmup: int
    repeats: int
    train_repeats: int


FULL = Settings(
    backbones=("r50", "r50_dcn", "r101", "r101_dcn"),
    inference_size=(800, 1216),
    scaling_sizes=bench_scaling.DEFAULT_SIZES,
    persons=(2, 10, 20),
    train_size=(512, 512),
    train_batch=2,
    target_images=8,
    pipeline_images=32,
    metric_images=100,
    warmup=1,
    repeats=3,
    train_repeats=2,
)
QUICK = Settings(
    backbones=("r50",),
    inference_size=(384, 576),
    scaling_sizes=((256, 384), (384, 576)),
    persons=(2, 10),
    train_size=(256, 256),
    train_batch=2,
    target_images=8,
    pipeline_images=8,
    metric_images=20,
    warmup=1,
    repeats=2,
    train_repeats=1,
)


def run_metric(images: int) -> dict[str, Any]:
    """``ParsingMetrics`` ms/image at MHP-like sizes (the metrics engineer's benchmark)."""
    from benchmarks import bench_metrics

    return bench_metrics.main(["--images", str(images), "--pool", str(min(images, 50))])


def _fmt(value: Any) -> str:
    """Floats with 3 significant digits at least (ms in the thousands, FPS below 1)."""
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def goals(results: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """The issue-3 / issue-7 speed goals: (goal, measured, limit, met)."""
    out = []
    inference = results.get("inference")
    if inference:
        r50 = next((r for r in inference["rows"] if "mask_rcnn_ms" in r), None)
        if r50 is not None:
            ratio = r50["ratio_total_vs_mask_rcnn"]
            name = f"SMP-{r50['backbone'].upper()} total / Mask R-CNN total"
            out.append((name, f"{ratio:.2f}", "<= 1.0", ratio <= 1.0))
            if "ratio_total_vs_mask_rcnn_converted" in r50:
                ratio = r50["ratio_total_vs_mask_rcnn_converted"]
                out.append((name + " (Mask R-CNN with the same switches; not the goal)",
                            f"{ratio:.2f}", "(<= 1.0)", ratio <= 1.0))  # fmt: skip
            if "ratio_total_stock_vs_mask_rcnn" in r50:
                ratio = r50["ratio_total_stock_vs_mask_rcnn"]
                out.append((name + " (SMP as trained, no inference switch)", f"{ratio:.2f}",
                            "(<= 1.0)", ratio <= 1.0))  # fmt: skip
        for row in inference["rows"]:
            rel = row["total_ms"] / row["backbone_fpn_ms"]
            out.append((f"{row['backbone']}: forward+decode / backbone+FPN", f"{rel:.2f}",
                        "<= 2.0", rel <= 2.0))  # fmt: skip
            if "ratio_total_stock_vs_backbone_fpn_stock" in row:
                rel = row["ratio_total_stock_vs_backbone_fpn_stock"]
                out.append((f"{row['backbone']}: the same, network as trained", f"{rel:.2f}",
                            "(<= 2.0)", rel <= 2.0))  # fmt: skip
    scaling = results.get("scaling")
    if scaling:
        rows = scaling["rows"]
        size = sorted({tuple(r["size"]) for r in rows}, key=lambda s: s[0] * s[1])
        mid = list(size[len(size) // 2])
        at_mid = [r for r in rows if r["size"] == mid]
        worst = max(r["decode_share"] for r in at_mid)
        out.append((f"decode / forward at {mid[0]}x{mid[1]} (worst persons)", f"{worst:.1%}",
                    "<= 10%", worst <= 0.10))  # fmt: skip
        growth = scaling["person_growth"][f"{mid[0]}x{mid[1]}"]
        most, fewest = max(r["persons"] for r in rows), min(r["persons"] for r in rows)
        out.append((f"decode {most} / {fewest} persons at {mid[0]}x{mid[1]}", f"{growth:.2f}",
                    "<= 1.5", growth <= 1.5))  # fmt: skip
        rest = scaling["person_growth_without_mask_product"][f"{mid[0]}x{mid[1]}"]
        out.append(("the same without the per-part kernel x F_mask product (not the goal)",
                    f"{rest:.2f}", "(<= 1.5)", rest <= 1.5))  # fmt: skip
    training = results.get("training")
    if training:
        share = training["targets_share_of_step"]
        out.append(("targets / training step (per image)", f"{share:.1%}", "< 5%", share < 0.05))
        pipeline = results.get("pipeline")
        if pipeline:
            ratio = pipeline["images_per_s"] / training["smp_images_per_s"]
            out.append(("loader rate / training rate (1 worker)", f"{ratio:.1f}", ">= 1",
                        ratio >= 1.0))  # fmt: skip
    return out


def to_markdown(results: dict[str, Any]) -> str:
    """All result tables of a run as Markdown."""
    machine = results["machine"]
    parts = [
        f"Machine: {machine['cpu']} ({machine['logical_cpus']} logical CPUs), torch "
        f"{machine['torch']}, {machine['torch_threads']} torch threads, device "
        f"{machine['device']}; load average at start {machine['load_average_1_5_15'][0]:.1f}; "
        f"{machine['time_utc']} UTC; mode {results['mode']}; command `{results['command']}`.",
    ]
    inference = results.get("inference")
    if inference:
        rows = []
        for r in inference["rows"]:
            rows.append([r["backbone"], f"{r['size'][0]}x{r['size'][1]}", r["backbone_fpn_ms"],
                         r["forward_ms"], r.get("decode_ms", "(row 1)"), r["total_ms"], r["fps_total"],
                         r.get("mask_rcnn_ms", "-"),
                         f"{r['ratio_total_vs_mask_rcnn']:.2f}"
                         if "ratio_total_vs_mask_rcnn" in r else "-"])  # fmt: skip
        parts.append("### Inference (batch 1, eval, ms, median)\n\n" + _table(
            ["backbone", "input", "backbone+FPN", "SMP forward",
             f"decode ({inference['rows'][0]['persons_in_decode']} persons)", "total", "FPS",
             "Mask R-CNN (20 det.)", "SMP/Mask R-CNN"], rows))  # fmt: skip
        for r in inference["rows"]:
            if "total_stock_ms" in r:
                sw = r["switches"]
                on = ", ".join(
                    f"`{k}: {str(v).lower()}`" for k, v in sw.items() if k != "winograd_tile"
                )
                parts.append(
                    f"Inference switches (conf/predict.yaml: {on}; "
                    f"{r['prepared']['winograd_convs']} Winograd convolutions), "
                    f"SMP-{r['backbone'].upper()} total in the same rounds: "
                    f"{r['total_stock_ms']:.0f} ms as trained "
                    f"({r['ratio_total_stock_vs_mask_rcnn']:.2f} x Mask R-CNN; backbone+FPN "
                    f"{r['backbone_fpn_stock_ms']:.0f} ms), "
                    f"{r['total_folded_ms']:.0f} ms with BatchNorm folded only "
                    f"({r['ratio_total_folded_vs_mask_rcnn']:.2f}), {r['total_ms']:.0f} ms with "
                    f"every switch ({r['ratio_total_vs_mask_rcnn']:.2f}). Mask R-CNN with the "
                    f"same switches ({r['mask_rcnn_converted_layers']['winograd_convs']} Winograd "
                    f"convolutions): {r['mask_rcnn_converted_ms']:.0f} ms against "
                    f"{r['mask_rcnn_ms']:.0f} ms stock; SMP / converted Mask R-CNN "
                    f"{r['ratio_total_vs_mask_rcnn_converted']:.2f}."
                )
        parts.append(inference.get("gpu_note", "") + f" Paper: {inference['paper_fps_1x']} FPS "
                     "(SMP-R101, 1x grid, one V100).")  # fmt: skip
    scaling = results.get("scaling")
    if scaling:
        rows = [[f"{r['size'][0]}x{r['size'][1]}", r["persons"], r["forward_ms"], r["decode_ms"],
                 r["total_ms"], f"{r['decode_share']:.1%}", r["part_masks"],
                 r["mask_product_ms"], r["decode_rest_ms"]] for r in scaling["rows"]]  # fmt: skip
        growth = scaling["pixel_growth"]
        parts.append(f"### Cost growth, SMP-{scaling['backbone'].upper()} (ms, median)\n\n"
                     + _table(["input", "persons", "forward", "decode", "total",
                               "decode / forward", "part masks", "of which kernel x F_mask",
                               "decode rest"], rows)
                     + f"\n\nForward grows x{growth['forward_ratio']:.2f} for x"
                     f"{growth['pixel_ratio']:.2f} pixels; decode grows with persons by "
                     + ", ".join(f"x{v:.2f} ({k})" for k, v in scaling["person_growth"].items())
                     + "; without the kernel x F_mask product by "
                     + ", ".join(f"x{v:.2f} ({k})" for k, v in
                                 scaling["person_growth_without_mask_product"].items())
                     + ".")  # fmt: skip
    training = results.get("training")
    if training:
        smp_mem = training.get("smp_memory", {})
        peer_mem = training.get("mask_rcnn_memory", {})
        rows = [["SMP-" + training["backbone"].upper(), training["smp_step_ms"],
                 training["smp_images_per_s"], smp_mem.get("peak_rss_mib", "-")]]  # fmt: skip
        if "mask_rcnn_step_ms" in training:
            rows.append(["Mask R-CNN R50-FPN", training["mask_rcnn_step_ms"],
                         1e3 * training["batch"] / training["mask_rcnn_step_ms"],
                         peer_mem.get("peak_rss_mib", "-")])  # fmt: skip
        size = training["size"]
        parts.append(f"### Training step (batch {training['batch']}, {size[0]}x{size[1]}, "
                     f"{training['persons_per_image']} persons/image)\n\n"
                     + _table(["model", "step ms", "images/s", "peak RSS MiB (own process)"], rows)
                     + f"\n\nTargets for {training['targets_images']} images: "
                     f"{training['targets_ms']:.1f} ms ({training['targets_share_of_step']:.1%} "
                     "of a training step per image).")  # fmt: skip
        if "ratio_step_vs_mask_rcnn" in training:
            parts[-1] += f" SMP / Mask R-CNN step: {training['ratio_step_vs_mask_rcnn']:.2f}."
    pipeline = results.get("pipeline")
    if pipeline:
        line = (f"### Input pipeline\n\n{pipeline['images_per_s']:.1f} images/s "
                f"({pipeline['ms_per_image']:.1f} ms/image) through dataset + train transforms + "
                f"collate with {pipeline['workers']} worker at {pipeline['size']} px")  # fmt: skip
        if training:
            line += f", against {training['smp_images_per_s']:.2f} images/s of training"
        parts.append(line + ".")
    metric = results.get("metric")
    if metric:
        parts.append(f"### Metric\n\n`ParsingMetrics`: {metric['metric_ms_per_image']:.2f} ms/image "
                     f"({metric['images']} images {metric['size'][0]}x{metric['size'][1]}, "
                     f"{metric['gt_per_image']} GT + {metric['preds_per_image']} predicted persons, "
                     f"{metric['speedup']:.0f}x the NumPy reference).")  # fmt: skip
    met = goals(results)
    if met:
        parts.append("### Goals\n\n" + _table(["goal", "measured", "limit", "met"],
                                               [[g, m, lim, "yes" if ok else "NO"]
                                                for g, m, lim, ok in met]))  # fmt: skip
    return "\n\n".join(p for p in parts if p) + "\n"


def run_all(
    settings: Settings,
    *,
    only: Sequence[str] = BENCHMARKS,
    device: str = "auto",
    threads: int = 2,
    overrides: dict[str, Any] | None = None,
    memory: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the selected benchmarks with ``settings``; returns every figure.

    ``overrides`` (dotted SMP config keys) and ``memory=False`` (no peak-RSS subprocesses)
    exist for the smoke tests.
    """
    dev = resolve_device(device)
    results: dict[str, Any] = {"machine": machine_info(dev), "timings_s": {}}
    jobs: dict[str, Callable[[], dict[str, Any]]] = {
        "inference": lambda: bench_inference.run(
            backbones=settings.backbones, height=settings.inference_size[0],
            width=settings.inference_size[1], persons=max(settings.persons),
            warmup=settings.warmup, repeats=settings.repeats, device=device,
            mask_rcnn_with=settings.backbones[0], overrides=overrides,
        ),
        "scaling": lambda: bench_scaling.run(
            backbone="r50" if "r50" in settings.backbones else settings.backbones[0],
            sizes=settings.scaling_sizes, persons=settings.persons, warmup=settings.warmup,
            repeats=settings.repeats, device=device, overrides=overrides,
        ),
        "training": lambda: bench_training.run(
            backbone="r50" if "r50" in settings.backbones else settings.backbones[0],
            batch=settings.train_batch, height=settings.train_size[0],
            width=settings.train_size[1], persons=max(settings.persons),
            target_images=settings.target_images, warmup=settings.warmup,
            repeats=settings.train_repeats, device=device, threads=threads,
            memory=memory, overrides=overrides,
        ),
        "pipeline": lambda: bench_pipeline.run(
            images=settings.pipeline_images, size=settings.train_size[0],
            batch=settings.train_batch,
        ),
        "metric": lambda: run_metric(settings.metric_images),
    }  # fmt: skip
    for name in only:
        if name not in jobs:
            raise ValueError(f"unknown benchmark {name!r}; choose from {BENCHMARKS}")
        log(f"[bench] {name} ...")
        start = time.perf_counter()
        results[name] = jobs[name]()
        results["timings_s"][name] = time.perf_counter() - start
        log(f"[bench] {name} done in {results['timings_s'][name]:.0f} s")
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--only", nargs="+", default=list(BENCHMARKS), choices=BENCHMARKS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    settings = QUICK if args.quick else FULL
    results = run_all(settings, only=args.only, device=args.device, threads=args.threads)
    results["mode"] = "quick" if args.quick else "full"
    results["command"] = "python -m benchmarks.run_all" + (" --quick" if args.quick else "")
    markdown = to_markdown(results)
    print(markdown)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "quick" if args.quick else "full"
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2, default=str))
    (args.out / f"{stem}.md").write_text(markdown)
    print(f"wrote {args.out / (stem + '.json')} and {args.out / (stem + '.md')}")
    return results


if __name__ == "__main__":
    main()
