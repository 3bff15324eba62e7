"""The prepared GPU check of issue 13.4: the ``gpu`` tests, then one table against the paper and a peer.

``make gpu-check`` (= ``python -m benchmarks.gpu_check``) on one GPU, with only the repository and
its install step, in at most 8 minutes (a global time budget, ``--budget-s``):

1. ``gpu_tests``: ``pytest -m gpu tests/gpu`` (DCN CUDA == CPU, SMP-R50* training step in
   fp32 and bf16, decode and ``ParsingMetrics`` on CUDA == CPU) in a subprocess;
2. ``inference``: SMP-R50* and SMP-R101* (DCNv2 backbones, paper widths) at 800 x 1216, batch 1:
   forward, decode, total, FPS (paper Table 4: 124 / 132 ms on one V100), in fp32 and bf16, with
   torchvision's Mask R-CNN R50-FPN (``weights=None``) timed in alternating rounds of the same
   process (:func:`benchmarks.bench_inference.bench_smp_inference`); the decode runs on the
   outputs a perfect network gives for an image with 3 persons (MHP v2 val: 2.6 on average);
3. ``training``: one SGD step at the paper's size (batch 4, short side 800) of SMP-R50* and of Mask
   R-CNN R50-FPN, alternating (images/s), then each side's peak GPU memory on its own;
4. ``syncs``: host-device synchronisations of one SMP-R50* training step and of one image's
   decode: ``torch.cuda.set_sync_debug_mode("warn")`` warnings counted, beside the count of
   :class:`smp_parsing.utils.sync_counter.SyncCounter` (the only count on the CPU, the one
   ``benchmarks/bench_syncs.py`` and ``tests/models/test_syncs.py`` use);
5. ``synthetic_training``: ``python -m smp_parsing.train experiment=synthetic trainer=gpu`` for
   200 steps at GPU size (512 px images, batch 16) in a subprocess; the logged training loss must
   be finite and decreasing.

Every phase is guarded: an exception, a timeout or a spent budget is reported in its row and the
next phase still runs; the exit status is 1 when a phase did not pass. The table is printed and
written with the JSON to ``benchmarks/results/gpu_check.{md,json}`` (``--json`` for another path).

``--dry-run`` runs the same code on the CPU at toy sizes (ResNet-18 at 1/4 width with DCNv2,
narrow heads, 128 x 192 images, a dozen synthetic steps) in about a minute:
``tests/benchmarks/test_gpu_check.py`` runs it.

Usage::

    python -m benchmarks.gpu_check [--dry-run] [--budget-s 450] [--device auto] [--json f]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import gc
import json
import math
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench_inference import bench_smp_inference, decode_workload
from benchmarks.bench_training import make_batch, mask_rcnn_step_fn, memory_of_side, smp_step_fn
from benchmarks.common import (
    REPO_ROOT,
    TINY_OVERRIDES,
    build_mask_rcnn,
    build_smp,
    machine_info,
    metas_for,
    resolve_device,
    set_threads,
    time_alternating,
)
from smp_parsing.utils.sync_counter import SyncCounter

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
PAPER_MS = {"SMP-R50*": 124.0, "SMP-R101*": 132.0}  # Table 4, one V100, MHP v2 val
PEER = "Mask R-CNN R50-FPN"


# ----------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Settings:
    """Sizes and limits of one run (the GPU check, or its CPU dry run)."""

    rows: tuple[tuple[str, str], ...]  # (label, conf/backbone preset) of the SMP rows
    net_overrides: dict[str, Any] | None  # dotted SMP config overrides (None: paper widths)
    infer_size: tuple[int, int]
    infer_persons: int
    infer_warmup: int
    infer_repeats: int
    precisions: tuple[str, ...]  # "fp32" and/or "bf16" (autocast) inference rows
    train_batch: int
    train_size: tuple[int, int]
    train_persons: int
    train_warmup: int
    train_repeats: int
    synthetic_steps: int
    synthetic_overrides: tuple[str, ...]
    # where `pytest -m gpu` collects: tests/gpu/ holds the gpu tests; collecting only there keeps
    # an unrelated module that fails to import from stopping them (and saves the collection time)
    test_paths: tuple[str, ...]
    budget_s: float  # the whole check, phases included
    phase_caps_s: dict[str, float] = field(default_factory=dict)


# The synthetic experiment at GPU size: 512 px images in batches of 16 fed by 12 loader workers;
# 800 images = 50 steps per epoch, validated (on CUDA: decode + metrics) after each epoch.
GPU_SYNTHETIC = (
    "data.generator.size=512",
    "data.num_train=800",
    "data.num_val=16",
    "data.generate_workers=8",
    "data.batch_size=16",
    "data.eval_batch_size=8",
    "data.num_workers=12",
    "data.pin_memory=true",
    "data.persistent_workers=true",
    "data.train_transforms.resize.short_sides=[384,448,512]",
    "data.train_transforms.resize.max_long_side=640",
    "data.test_transforms.resize.short_sides=[512]",
    "data.test_transforms.resize.max_long_side=640",
)

FULL = Settings(
    rows=(("SMP-R50*", "r50_dcn"), ("SMP-R101*", "r101_dcn")),
    net_overrides=None,
    infer_size=(800, 1216),
    infer_persons=3,
    infer_warmup=3,
    infer_repeats=20,
    precisions=("fp32", "bf16"),
    train_batch=4,
    train_size=(800, 1216),
    train_persons=3,
    train_warmup=2,
    train_repeats=5,
    synthetic_steps=200,
    synthetic_overrides=GPU_SYNTHETIC,
    test_paths=("tests/gpu",),
    budget_s=450.0,
    phase_caps_s={
        "gpu_tests": 180,
        "inference": 120,
        "training": 90,
        "syncs": 60,
        "synthetic_training": 240,
    },
)

# ResNet-18 at 1/4 width keeps the DCNv2 stages of the r50_dcn / r101_dcn presets (every code
# path of the GPU run) at a size the 2-core CPU runs in seconds.
DRY_NET = {"backbone.depth": 18, "backbone.base_width": 16, **TINY_OVERRIDES}
DRY = Settings(
    rows=FULL.rows,
    net_overrides=DRY_NET,
    infer_size=(128, 192),
    infer_persons=3,
    infer_warmup=0,
    infer_repeats=1,
    precisions=("fp32",),
    train_batch=2,
    train_size=(128, 160),
    train_persons=2,
    train_warmup=0,
    train_repeats=1,
    synthetic_steps=12,
    synthetic_overrides=(
        "model.net.backbone.base_width=16",
        *(f"model.net.{k}={v}" for k, v in TINY_OVERRIDES.items()),
        "model.scheduler.warmup_iters=2",
        "data.generator.size=96",
        "data.num_train=16",
        "data.num_val=2",
        "data.batch_size=4",
        "data.eval_batch_size=2",
        "data.num_workers=0",
        "data.train_transforms.resize.short_sides=[64]",
        "data.train_transforms.resize.max_long_side=96",
        "data.test_transforms.resize.short_sides=[64]",
        "data.test_transforms.resize.max_long_side=96",
    ),
    test_paths=("tests/gpu",),
    budget_s=240.0,
    phase_caps_s={
        "gpu_tests": 120,
        "inference": 90,
        "training": 90,
        "syncs": 60,
        "synthetic_training": 150,
    },
)


# ----------------------------------------------------------------------- sync counting
def count_syncs(fn: Callable[[], Any], device: torch.device) -> dict[str, Any]:
    """Host-device synchronisations of one call of ``fn``.

    Returns:
        ``counted``: the syncs :class:`~smp_parsing.utils.sync_counter.SyncCounter` counts (on
        any device), with ``counted_by_kind`` and ``counted_by_op``; on CUDA also
        ``cuda_syncs``: the warnings of ``torch.cuda.set_sync_debug_mode("warn")`` (every
        synchronising CUDA call that torch instruments, the authority where there is a GPU).
    """
    result: dict[str, Any] = {"cuda_syncs": None}
    with contextlib.ExitStack() as stack:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            caught = stack.enter_context(warnings.catch_warnings(record=True))
            warnings.simplefilter("always")  # the same line twice counts twice
            torch.cuda.set_sync_debug_mode("warn")
            stack.callback(torch.cuda.set_sync_debug_mode, "default")
        counter = stack.enter_context(SyncCounter())
        fn()
    if device.type == "cuda":
        result["cuda_syncs"] = sum("called a synchronizing" in str(w.message) for w in caught)
    result["counted"] = counter.total
    result["counted_by_kind"] = dict(counter.counts.most_common())
    result["counted_by_op"] = dict(counter.ops.most_common())
    return result


# ----------------------------------------------------------------------- phase guard
class PhaseTimeout(Exception):
    """A phase ran past its share of the time budget."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise :class:`PhaseTimeout` in the main thread after ``seconds`` (SIGALRM)."""

    def expire(signum, frame):
        raise PhaseTimeout(f"ran past its limit of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


class Check:
    """Runs the phases under one time budget and keeps what each reported."""

    def __init__(self, settings: Settings, device: torch.device, budget_s: float) -> None:
        self.settings = settings
        self.device = device
        self.budget_s = budget_s
        self.start = time.perf_counter()
        self.phases: dict[str, dict[str, Any]] = {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def run(self, name: str, fn: Callable[[float], dict[str, Any]], *, min_s: float) -> None:
        """Run phase ``name`` (``fn(limit_s) -> figures``) if at least ``min_s`` are left.

        ``figures["status"]`` may say ``"failed"`` (a check of the phase did not pass);
        otherwise the phase is ``"ok"``, or ``"failed"`` / ``"timeout"`` / ``"skipped"``.
        """
        left = self.budget_s - self.elapsed()
        if left < min_s:
            reason = f"time budget: {left:.0f} s left, needs about {min_s:.0f} s"
            self.phases[name] = {"status": "skipped", "error": reason, "seconds": 0.0}
            print(f"[gpu_check] {name}: skipped ({reason})", flush=True)
            return
        limit = min(self.settings.phase_caps_s.get(name, left), left)
        print(f"[gpu_check] {name}: running (limit {limit:.0f} s)", flush=True)
        t0 = time.perf_counter()
        try:
            with deadline(limit):
                figures = fn(limit)
            figures.setdefault("status", "ok")
        except PhaseTimeout as exc:
            figures = {"status": "timeout", "error": str(exc)}
        except Exception as exc:  # a failed phase is reported; the next one still runs
            figures = {
                "status": "failed",
                "error": f"{type(exc).__name__}: {exc}"[:500],
                "traceback": traceback.format_exc()[-3000:],
            }
        figures["seconds"] = round(time.perf_counter() - t0, 2)
        self.phases[name] = figures
        try:
            _release_memory(self.device)
        except Exception as exc:  # e.g. a CUDA context broken by the phase: report, go on
            figures.setdefault("error", f"after the phase: {type(exc).__name__}: {exc}"[:500])
        print(f"[gpu_check] {name}: {figures['status']} in {figures['seconds']:.1f} s", flush=True)


# ----------------------------------------------------------------------- phases
def parse_pytest_summary(output: str) -> dict[str, int]:
    """``{"passed": n, "failed": n, ...}`` from pytest's last summary line."""
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0, "deselected": 0}
    lines = [
        ln
        for ln in output.strip().splitlines()
        if re.search(r"\d+ (passed|failed|skip|error|deselected)", ln)
    ]
    for number, word in re.findall(
        r"(\d+) (passed|failed|skipped|errors?|deselected)", lines[-1] if lines else ""
    ):
        counts["errors" if word.startswith("error") else word] = int(number)
    return counts


def phase_gpu_tests(check: Check, limit: float) -> dict[str, Any]:
    """``pytest -m gpu`` in a subprocess: every gpu test passes (on a GPU none may skip)."""
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--tb=short",
        "-m",
        "gpu",
    ]
    cmd += check.settings.test_paths
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=limit)
    output = proc.stdout + proc.stderr
    counts = parse_pytest_summary(output)
    figures: dict[str, Any] = {
        "command": " ".join(cmd[1:]),
        "returncode": proc.returncode,
        **counts,
    }
    figures["failures"] = [ln for ln in output.splitlines() if ln.startswith(("FAILED", "ERROR"))]
    ran = counts["passed"] + counts["failed"] + counts["errors"] + counts["skipped"]
    ok = proc.returncode == 0 and ran > 0
    if check.device.type == "cuda" and counts["skipped"]:
        ok = False  # a gpu test skipping on a GPU machine did not test anything
        figures["error"] = f"{counts['skipped']} gpu tests skipped although CUDA is present"
    if not ok:
        figures["status"] = "failed"
        figures.setdefault("error", "; ".join(figures["failures"][:3]) or output[-500:])
        # the summary line cuts the assertion: keep the tracebacks, they are all a remote
        # machine's run leaves behind
        figures["output_tail"] = output[-6000:]
    return figures


def _inference_row(check: Check, label: str, preset: str, precision: str, peer: bool):
    s = check.settings
    cuda = check.device.type == "cuda"
    row = bench_smp_inference(
        preset,
        height=s.infer_size[0],
        width=s.infer_size[1],
        persons=s.infer_persons,
        warmup=s.infer_warmup,
        repeats=s.infer_repeats,
        device=check.device,
        amp=precision == "bf16",
        channels_last=True if cuda else None,  # as bench_inference on CUDA
        mask_rcnn=peer,
        overrides=s.net_overrides,
    )
    keep = (
        "backbone",
        "size",
        "persons_in_decode",
        "amp_bf16",
        "channels_last",
        "parameters_m",
        "smp_persons",
        "backbone_fpn_ms",
        "forward_ms",
        "decode_ms",
        "total_ms",
        "fps_total",
        "mask_rcnn_ms",
        "mask_rcnn_detections",
        "ratio_total_vs_mask_rcnn",
        "total_stock_ms",
        "warning",
    )
    out = {k: row[k] for k in keep if k in row}
    out.update(label=label, precision=precision, paper_v100_ms=PAPER_MS.get(label))
    if peer:
        out["mask_rcnn_fps"] = 1e3 / row["mask_rcnn_ms"]
    if row.get("smp_persons") != s.infer_persons:
        out["status"] = "failed"
        out["error"] = f"the decode found {row.get('smp_persons')} of {s.infer_persons} persons"
    return out


def phase_inference(check: Check, limit: float) -> dict[str, Any]:
    """SMP rows at batch 1 per precision; the first row of each precision times the peer too."""
    rows = []
    for precision in check.settings.precisions:
        for i, (label, preset) in enumerate(check.settings.rows):
            rows.append(_inference_row(check, label, preset, precision, peer=i == 0))
            _release_memory(check.device)
    failed = [r for r in rows if r.get("status") == "failed"]
    figures: dict[str, Any] = {"rows": rows}
    if failed:
        figures.update(status="failed", error="; ".join(r["error"] for r in failed))
    return figures


def phase_training(check: Check, limit: float) -> dict[str, Any]:
    """One SGD step of SMP-R50* and of Mask R-CNN on the same batch, alternating; then memory."""
    s = check.settings
    dev = check.device
    amp = dev.type == "cuda"  # bf16 autocast on the GPU (the deployment path of bench_training)
    label, preset = s.rows[0]
    height, width = s.train_size
    net = build_smp(preset, overrides=s.net_overrides).to(dev)
    peer = build_mask_rcnn(min_size=min(height, width), max_size=max(height, width)).to(dev)
    images, parsing = make_batch(
        s.train_batch, height, width, s.train_persons, num_classes=net.num_classes, device=dev
    )
    # SMP in fp32 too, from the same weights: its deformable convolutions run in fp32 under
    # autocast anyway (torchvision's CUDA kernel), so whether bf16 trains the DCN backbones
    # faster is a measurement (the H200's inference ran R-101* slower in bf16 than in fp32)
    net_fp32 = copy.deepcopy(net)
    losses: dict[str, list[float]] = {"smp": [], "smp_fp32": [], "mask_rcnn": []}
    steps = {
        "smp": smp_step_fn(net, images, parsing, device=dev, amp=amp),
        "smp_fp32": smp_step_fn(net_fp32, images, parsing, device=dev, amp=False),
        "mask_rcnn": mask_rcnn_step_fn(peer, images, parsing, device=dev, amp=amp),
    }
    fns = {side: (lambda side=side: losses[side].append(steps[side]())) for side in steps}
    timings = time_alternating(fns, warmup=s.train_warmup, repeats=s.train_repeats, device=dev)
    steps.clear()  # the closures hold the models, their optimisers and the batch
    del net, net_fp32, peer, images, parsing
    _release_memory(dev)
    figures: dict[str, Any] = {
        "label": label,
        "batch": s.train_batch,
        "size": [height, width],
        "persons_per_image": s.train_persons,
        "amp_bf16": amp,
    }
    for side, timing in timings.items():
        figures[f"{side}_step_ms"] = timing.ms
        figures[f"{side}_images_per_s"] = 1e3 * s.train_batch / timing.ms
        figures[f"{side}_losses"] = losses[side]
    # each side alone for its peak (the other one's weights and optimiser state would count)
    for side in ("smp", "smp_fp32", "mask_rcnn"):
        base = 0
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
            base = torch.cuda.memory_allocated(dev)
        memory = memory_of_side(
            side.removesuffix("_fp32"),
            backbone=preset,
            batch=s.train_batch,
            height=height,
            width=width,
            persons=s.train_persons,
            steps=1,
            device=dev,
            amp=amp and not side.endswith("_fp32"),
            overrides=s.net_overrides,
        )
        figures[f"{side}_peak_gpu_mib"] = (
            memory["cuda_peak_mib"] - base / 2**20 if "cuda_peak_mib" in memory else None
        )
        figures["peak_rss_mib"] = memory["peak_rss_mib"]  # process-wide high-water mark
        _release_memory(dev)
    bad = [side for side in losses if not all(math.isfinite(v) for v in losses[side])]
    if bad:
        figures.update(status="failed", error=f"non-finite training loss: {bad}")
    return figures


def phase_syncs(check: Check, limit: float) -> dict[str, Any]:
    """Synchronisations of one SMP-R50* training step (after a warm-up step) and one decode."""
    s = check.settings
    dev = check.device
    amp = dev.type == "cuda"
    label, preset = s.rows[0]
    height, width = s.train_size
    net = build_smp(preset, overrides=s.net_overrides).to(dev).train()
    images, parsing = make_batch(
        s.train_batch, height, width, s.train_persons, num_classes=net.num_classes, device=dev
    )
    optimizer = torch.optim.SGD(
        [p for p in net.parameters() if p.requires_grad], lr=1e-3, momentum=0.9
    )

    def step() -> None:  # bench_training's step without its float(loss), which syncs
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            outputs = net(images)
        net.loss(outputs, parsing)["loss"].backward()
        optimizer.step()

    step()  # warm-up: lazy initialisation (optimiser state, cuDNN plans) is not per step
    train = count_syncs(step, dev)
    net.eval()
    oracle = decode_workload(net, s.infer_persons, *s.infer_size, dev)
    metas = metas_for(*s.infer_size)
    with torch.inference_mode():
        net.predict(oracle, metas)  # warm-up
        decode = count_syncs(lambda: net.predict(oracle, metas), dev)
    return {
        "label": label,
        "batch": s.train_batch,
        "size": [height, width],
        "decode_persons": s.infer_persons,
        "training_step": train,
        "decode": decode,
    }


def read_logged(run_dir: Path, *keys: str) -> list[tuple[int, float]]:
    """``(step, value)`` rows of the CSV logger's ``metrics.csv`` under ``run_dir`` that log one
    of ``keys`` (the first of them a row holds)."""
    files = sorted(run_dir.rglob("metrics.csv"))
    if not files:
        raise FileNotFoundError(f"no metrics.csv under {run_dir}")
    curve = []
    with files[-1].open() as f:
        for row in csv.DictReader(f):
            value = next((row[k] for k in keys if row.get(k) not in (None, "")), None)
            if value is not None:
                curve.append((int(row["step"]), float(value)))
    return curve


def read_loss_curve(run_dir: Path) -> list[tuple[int, float]]:
    """``(step, train/loss)`` rows of the CSV logger's ``metrics.csv`` under ``run_dir``."""
    return read_logged(run_dir, "train/loss_step", "train/loss")


def phase_synthetic_training(check: Check, limit: float) -> dict[str, Any]:
    """``smp_parsing.train experiment=synthetic`` for ``synthetic_steps`` steps in a subprocess."""
    s = check.settings
    cuda = check.device.type == "cuda"
    with tempfile.TemporaryDirectory(prefix="smp_gpu_check_") as tmp:
        run_dir = Path(tmp) / "run"
        cmd = [
            sys.executable,
            "-m",
            "smp_parsing.train",
            "experiment=synthetic",
            f"trainer={'gpu' if cuda else 'cpu'}",
            f"trainer.max_steps={s.synthetic_steps}",
            "trainer.max_epochs=1000",
            "trainer.max_time=null",
            "trainer.log_every_n_steps=1",
            "++trainer.enable_progress_bar=false",
            "callbacks.rich_progress_bar=null",
            "callbacks.model_summary=null",
            "logger=csv",
            "test=false",
            "extras.print_config=false",
            "tags=[gpu_check]",
            f"hydra.run.dir={run_dir}",
            f"paths.data_dir={tmp}/data/",
            f"paths.log_dir={tmp}/logs/",
            *s.synthetic_overrides,
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=limit)
        wall = time.perf_counter() - t0
        output = proc.stdout + proc.stderr
        figures: dict[str, Any] = {
            "command": " ".join(cmd[1:]),
            "returncode": proc.returncode,
            "wall_s": wall,
            "steps": s.synthetic_steps,
        }
        if proc.returncode != 0:
            return {**figures, "status": "failed", "error": output[-1500:]}
        curve = read_loss_curve(run_dir)
        # each epoch's validation on the device: the InferenceTimer's images/s and the metric
        val_fps = [v for _, v in read_logged(run_dir, "val/fps")]
        val_ap50 = [v for _, v in read_logged(run_dir, "val/APp50")]
        summary_file = run_dir / "metrics.json"
        if summary_file.is_file():
            summary = json.loads(summary_file.read_text())
            figures["global_step"] = summary.get("global_step") or summary.get("main", {}).get(
                "global_step"
            )
    losses = [v for _, v in curve]
    quarter = max(1, len(losses) // 4)
    first, last = sum(losses[:quarter]) / quarter, sum(losses[-quarter:]) / quarter
    finite = bool(losses) and all(math.isfinite(v) for v in losses)
    figures.update(
        logged_steps=len(losses),
        last_step=curve[-1][0] if curve else None,
        loss_first_quarter=first,
        loss_last_quarter=last,
        loss_curve=[[step, round(v, 5)] for step, v in curve],
        finite=finite,
        decreasing=finite and last < first,
        val_fps=val_fps,
        val_APp50=val_ap50,
    )
    if not (finite and last < first):
        figures.update(status="failed", error=f"loss not finite and decreasing: {first} -> {last}")
    elif not val_fps or not all(v > 0 for v in val_fps) or len(val_ap50) != len(val_fps):
        figures.update(status="failed", error=f"validation: fps {val_fps}, APp50 {val_ap50}")
    return figures


# ----------------------------------------------------------------------- table
def _ms_fps(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.1f} ms ({1e3 / ms:.1f} FPS)"


def _gib(mib: float | None) -> str:
    return "n/a (CPU)" if mib is None else f"{mib / 1024:.2f} GiB"


def _status(ph: dict[str, Any]) -> str:
    return ph["status"] + (f": {ph['error'][:160]}" if ph.get("error") else "")


# A table row: (check, SMP, peer, paper, status).
Row = tuple[str, str, str, str, str]


def _gpu_tests_rows(ph: dict[str, Any]) -> list[Row]:
    counts = ", ".join(
        f"{ph[k]} {k}" for k in ("passed", "failed", "skipped", "errors") if ph.get(k)
    )
    return [("gpu tests (`pytest -m gpu`)", counts, "", "", _status(ph))]


def _inference_rows(ph: dict[str, Any]) -> list[Row]:
    return [
        (
            f"inference {row['label']} {row['precision']}, {row['size'][0]}x{row['size'][1]} b1: "
            "forward / decode / total",
            f"{row['forward_ms']:.1f} / {row['decode_ms']:.1f} / {_ms_fps(row['total_ms'])}",
            _ms_fps(row.get("mask_rcnn_ms")),
            _ms_fps(row.get("paper_v100_ms")),
            row.get("status", "ok") + (f": {row['error']}" if row.get("error") else ""),
        )
        for row in ph.get("rows", [])
    ]


def _training_rows(ph: dict[str, Any]) -> list[Row]:
    if "smp_step_ms" not in ph:
        return []
    precision = "bf16" if ph["amp_bf16"] else "fp32"
    rows = [
        (
            f"training step {ph['label']} {precision}, batch {ph['batch']}, "
            f"{ph['size'][0]}x{ph['size'][1]}: images/s, peak GPU memory",
            f"{ph['smp_images_per_s']:.1f} img/s, {_gib(ph['smp_peak_gpu_mib'])}",
            f"{ph['mask_rcnn_images_per_s']:.1f} img/s, {_gib(ph['mask_rcnn_peak_gpu_mib'])}",
            "",
            _status(ph),
        )
    ]
    if "smp_fp32_step_ms" in ph:  # the same step in fp32, timed in the same rounds
        rows.append(
            (
                f"training step {ph['label']} fp32 (same rounds): images/s, peak GPU memory",
                f"{ph['smp_fp32_images_per_s']:.1f} img/s, {_gib(ph['smp_fp32_peak_gpu_mib'])}",
                "",
                "",
                _status(ph),
            )
        )
    return rows


def _syncs_rows(ph: dict[str, Any]) -> list[Row]:
    if "training_step" not in ph:
        return []

    def syncs(c: dict[str, Any]) -> str:
        cuda = "n/a" if c["cuda_syncs"] is None else str(c["cuda_syncs"])
        return f"{cuda} CUDA syncs ({c['counted']} counted)"

    figures = f"{syncs(ph['training_step'])} / {syncs(ph['decode'])}"
    return [("host syncs: one training step / one image's decode", figures, "", "", _status(ph))]


def _synthetic_training_rows(ph: dict[str, Any]) -> list[Row]:
    if "loss_first_quarter" not in ph:
        return []
    verdict = "finite, decreasing" if ph["decreasing"] else "NOT finite and decreasing"
    return [
        (
            f"synthetic experiment, {ph['steps']} steps: train loss first -> last quarter",
            f"{ph['loss_first_quarter']:.3f} -> {ph['loss_last_quarter']:.3f} ({verdict}), "
            f"{ph['wall_s']:.0f} s"
            + (
                f"; last val: {ph['val_fps'][-1]:.1f} img/s, AP^p_50 {ph['val_APp50'][-1]:.3f}"
                if ph.get("val_fps") and ph.get("val_APp50")
                else ""
            ),
            "",
            "",
            _status(ph),
        )
    ]


# phase -> (its rows from its result; the check and the paper's figure shown when it has none)
TABLE_ROWS: dict[str, tuple[Callable[[dict[str, Any]], list[Row]], str, str]] = {
    "gpu_tests": (_gpu_tests_rows, "gpu tests (`pytest -m gpu`)", ""),
    "inference": (_inference_rows, "inference SMP-R50*, R101*", "124 / 132 ms"),
    "training": (_training_rows, "training step SMP-R50*, batch 4, short side 800", ""),
    "syncs": (_syncs_rows, "host syncs per training step / decode", ""),
    "synthetic_training": (
        _synthetic_training_rows,
        "synthetic experiment: loss finite and decreasing",
        "",
    ),
}


def render_table(result: dict[str, Any]) -> str:
    """One Markdown table of every phase (a failed or skipped phase shows its reason)."""
    phases = result["phases"]
    lines = [f"> {result['note']}", ""] if result.get("note") else []
    lines += [f"| check | SMP | {PEER} | paper (1 V100) | status |", "|---|---|---|---|---|"]
    for name, (rows, check, paper) in TABLE_ROWS.items():
        ph = phases.get(name, {"status": "skipped"})
        for *cells, st in rows(ph) or [(check, "", "", paper, _status(ph))]:
            lines.append(
                "| " + " | ".join((*cells, st.replace("|", "/").replace("\n", " "))) + " |"
            )
    return "\n".join(lines)


# ----------------------------------------------------------------------- driver
def run(
    *,
    dry_run: bool = False,
    device: str = "auto",
    budget_s: float | None = None,
    only: list[str] | None = None,
) -> dict[str, Any]:
    """Run the check; returns the result dict (``phases``, ``table``, ``ok``, ``machine``).

    Args:
        dry_run: the CPU toy run (the same code at toy sizes).
        device: ``auto`` (CUDA when present; the CPU for a dry run), ``cuda``, ``cpu``.
        budget_s: the global time budget (default: 450 s, dry run 240 s).
        only: run these phases only (default: all, in order).
    """
    settings = DRY if dry_run else FULL
    dev = resolve_device("cpu" if dry_run and device == "auto" else device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed sizes, as trainer=gpu
    check = Check(settings, dev, settings.budget_s if budget_s is None else budget_s)
    plan = {
        "gpu_tests": (phase_gpu_tests, 10),
        "inference": (phase_inference, 20),
        "training": (phase_training, 15),
        "syncs": (phase_syncs, 10),
        "synthetic_training": (phase_synthetic_training, 30),
    }
    for name, (fn, min_s) in plan.items():
        if only is None or name in only:
            check.run(name, lambda limit, fn=fn: fn(check, limit), min_s=min_s)
    result: dict[str, Any] = {
        "command": "python -m benchmarks.gpu_check" + (" --dry-run" if dry_run else ""),
        "dry_run": dry_run,
        "device": str(dev),
        "budget_s": check.budget_s,
        "elapsed_s": round(check.elapsed(), 1),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "tf32_convolutions": bool(torch.backends.cudnn.allow_tf32) and dev.type == "cuda",
        "machine": machine_info(dev),
        "settings": {k: v for k, v in vars(settings).items() if k != "synthetic_overrides"},
        "phases": check.phases,
    }
    result["ok"] = all(ph["status"] == "ok" for ph in check.phases.values())
    if dry_run:
        result["note"] = (
            "dry run on the CPU: toy sizes (ResNet-18 at 1/4 width with DCNv2 under the R50*/R101* "
            "labels, narrow heads, tiny images); the times say nothing about the GPU"
        )
    result["table"] = render_table(result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the CPU toy run of the same code")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--budget-s", type=float, default=None, help="global time budget (s)")
    parser.add_argument(
        "--only",
        nargs="+",
        default=None,
        choices=["gpu_tests", "inference", "training", "syncs", "synthetic_training"],
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's; the dry run uses 2)",
    )
    parser.add_argument("--json", type=Path, default=None, help="default: benchmarks/results/")
    args = parser.parse_args(argv)
    threads = args.threads or (2 if args.dry_run else None)
    if threads:
        set_threads(threads)
    result = run(dry_run=args.dry_run, device=args.device, budget_s=args.budget_s, only=args.only)
    stem = "gpu_check_dry" if args.dry_run else "gpu_check"
    json_path = args.json or RESULTS_DIR / f"{stem}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2, default=str))
    json_path.with_suffix(".md").write_text(result["table"] + "\n")
    machine = result["machine"]
    print(
        f"\n{result['command']} on {machine.get('gpu', machine['cpu'])}, torch "
        f"{machine['torch']}, {result['elapsed_s']:.0f} s of a {result['budget_s']:.0f} s "
        f"budget\n"
    )
    print(result["table"])
    print(f"\nJSON: {json_path}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
