"""The ``make train`` pipeline: train SMP on the synthetic set, evaluate, predict, report.

Each stage runs the project's own entry point in a subprocess, exactly as a user would type it, so
the quick start exercises the same code paths as real experiments:

1. ``python -m smp_parsing.train experiment=synthetic`` (generates the synthetic MHP v2 set on first
   use, trains on the CPU, keeps the best checkpoint by ``val/APpvol``);
2. ``python -m smp_parsing.evaluate`` on the best checkpoint over the synthetic val split, each
   image run alone (``metrics.json`` + a table on stdout); without ``experiment=``: the checkpoint
   carries its data set and test transform;
3. ``python -m smp_parsing.predict`` (also from the checkpoint alone) on a handful of val images (MHP-layout person maps,
   ``scores.json`` and overlay PNGs);
4. :func:`smp_parsing.run_summary.write_run_summary`: metrics table, loss/metric curves, overlays.

Usage: ``python -m smp_parsing.quickstart [hydra overrides ...]``; the overrides go to every stage
(e.g. ``trainer.max_epochs=2`` or ``data.num_train=200``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console

from smp_parsing.run_summary import write_run_summary

EXPERIMENT = "synthetic"
NUM_PREDICT_IMAGES = 6
HEADLINE = ("APp50", "APpvol", "PCP50", "mIoU", "pixel_acc")
console = Console()


def run_stage(name: str, args: Sequence[str], cwd: Path) -> float:
    """Run ``python -m <args>`` in ``cwd``; return its wall time in seconds.

    Raises:
        SystemExit: with the stage's exit code when it fails, after saying which stage it was.
    """
    cmd = [sys.executable, "-m", *args]
    console.rule(f"[bold]{name}")
    console.print(" ".join(cmd), style="dim", soft_wrap=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env={**os.environ, "PROJECT_ROOT": str(cwd)})
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        console.print(f"[red]{name} failed (exit code {proc.returncode}); see the log above.")
        raise SystemExit(proc.returncode)
    console.print(f"{name}: {elapsed:.0f} s", style="green")
    return elapsed


def read_json(path: Path) -> dict:
    """Read a JSON file written by a previous stage, with a clear error when it is missing."""
    if not path.is_file():
        raise SystemExit(f"expected {path} from the previous stage, but it does not exist")
    return json.loads(path.read_text())


def resolved_data_dir(job_dir: Path, root: Path) -> Path:
    """The synthetic set's folder as the training job resolved it (its saved Hydra config).

    The job ran with ``paths.root_dir`` set literally, so no ``${hydra:...}`` resolver is needed.
    """
    cfg = OmegaConf.load(job_dir / ".hydra" / "config.yaml")
    return Path(OmegaConf.select(cfg, "data.data_dir"))


def pick_val_images(data_root: Path, count: int, dest: Path) -> Path:
    """Link the first ``count`` val images of an MHP-layout root into ``dest`` (predict input)."""
    ids = (data_root / "list" / "val.txt").read_text().split()[:count]
    dest.mkdir(parents=True, exist_ok=True)
    for image_id in ids:
        src = data_root / "val" / "images" / f"{image_id}.jpg"
        link = dest / src.name
        if not link.exists():
            link.symlink_to(src.resolve())
    return dest


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the four stages; return the report path."""
    overrides = list(sys.argv[1:] if argv is None else argv)
    root = Path.cwd()
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    run_dir = root / "logs" / "quickstart" / f"{stamp}_{os.getpid()}"
    # a literal root keeps the saved job configs resolvable outside Hydra (see resolved_data_dir)
    common = [f"experiment={EXPERIMENT}", f"paths.root_dir={root}", *overrides]
    # evaluate and predict get no experiment=: the checkpoint says which data set, classes and test
    # transform it was trained with (utils/checkpoint.inference_metadata), as for a downloaded one
    from_ckpt = [f"paths.root_dir={root}", *overrides]
    times: dict[str, float] = {}

    times["train"] = run_stage(
        "1/4 train",
        ["smp_parsing.train", *common, "test=false", f"hydra.run.dir={run_dir / 'train'}"],
        root,
    )
    summary = read_json(run_dir / "train" / "metrics.json")
    ckpt = summary.get("best_model_path") or summary.get("last_model_path")
    if not ckpt:
        raise SystemExit(f"training wrote no checkpoint path into {run_dir / 'train/metrics.json'}")

    times["evaluate"] = run_stage(
        "2/4 evaluate (best checkpoint alone, synthetic val split, one image at a time)",
        [
            "smp_parsing.evaluate",
            *from_ckpt,
            "split=val",
            f"ckpt_path={ckpt}",
            f"hydra.run.dir={run_dir / 'eval'}",
        ],
        root,
    )
    payload = read_json(run_dir / "eval" / "metrics.json")
    metrics = payload.get("metrics", payload)

    data_root = resolved_data_dir(run_dir / "train", root)
    inputs = pick_val_images(data_root, NUM_PREDICT_IMAGES, run_dir / "predict_inputs")
    times["predict"] = run_stage(
        "3/4 predict (a few val images)",
        [
            "smp_parsing.predict",
            *from_ckpt,
            f"ckpt_path={ckpt}",
            f"input={inputs}",
            f"output={run_dir / 'predictions'}",
            f"hydra.run.dir={run_dir / 'predict'}",
        ],
        root,
    )

    console.rule("[bold]4/4 report")
    overlays = sorted((run_dir / "predictions" / "overlays").glob("*.png"))
    report = write_run_summary(run_dir, metrics=metrics, overlays=overlays)
    total = sum(times.values())
    console.print(
        "\n".join(
            [
                f"Stage times: {', '.join(f'{k} {v:.0f} s' for k, v in times.items())}"
                f" (total {total / 60:.1f} min)",
                "Synthetic val: "
                + ", ".join(f"{k} {metrics[k]:.3f}" for k in HEADLINE if k in metrics),
                f"Run directory:  {run_dir}",
                f"Checkpoint:     {ckpt}",
                f"Predictions:    {run_dir / 'predictions'}",
                f"Report:         {report}",
            ]
        )
    )
    return report


if __name__ == "__main__":
    main()
