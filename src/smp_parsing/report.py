"""Collect a sweep into tables shaped like the paper's Tables 3 and 5, plus a plot.

``python -m smp_parsing.report <multirun dir> [--out DIR] [--split test|val] [--wandb]``

Each job directory of a Hydra multirun (``<dir>/<job num>/``) holds ``metrics.json`` (written by
``smp_parsing.train``) and ``.hydra/overrides.yaml``. One row per job: the overrides that vary
across the sweep (named like the paper's columns: RFR, MIR, Grids, epsilon), then AP^p_50,
AP^p_vol, PCP_50 in percent and FPS. A job without ``metrics.json`` (failed or still running) is
listed with its status instead of numbers. Writes ``report.md``, ``report.csv`` and ``report.png``;
``--wandb`` also logs the table as a ``wandb.Table`` into the sweep's W&B group (job type
``report``; offline without an API key).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from smp_parsing.utils.metrics_table import markdown_table
from smp_parsing.utils.run_files import METRICS_FILE, split_metrics, write_text_atomic

log = logging.getLogger(__name__)

# Override key -> column name of the paper's tables.
COLUMN_ALIASES = {
    "model.net.rfr": "RFR",
    "stage": "MIR",
    "grid": "Grids",
    "model.net.grid_scale": "Grids",
    "model.net.epsilon": "epsilon",
}
# How a value is shown in a column (per column), e.g. the MIR column from `stage=`.
VALUE_ALIASES = {
    "MIR": {"main": "", "main_mir": "yes", "mir": "yes"},
    "RFR": {"true": "yes", "false": ""},
}
# (column, metric key, scale): the paper reports AP/PCP in percent.
METRIC_COLUMNS = (
    ("APp50", "APp50", 100.0),
    ("APpvol", "APpvol", 100.0),
    ("PCP50", "PCP50", 100.0),
    ("FPS", "fps", 1.0),
)


@dataclass
class JobResult:
    """One job of a sweep: its number, overrides and metrics (``None`` when it has none)."""

    num: str
    overrides: dict[str, str]
    metrics: dict[str, float] | None
    status: str = "ok"
    extra: dict[str, Any] = field(default_factory=dict)


def _read_overrides(job_dir: Path) -> dict[str, str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    items: list[str] = []
    if path.is_file():
        with open(path) as fh:
            items = yaml.safe_load(fh) or []
    elif (job_dir / METRICS_FILE).is_file():
        with open(job_dir / METRICS_FILE) as fh:
            items = json.load(fh).get("overrides", [])
    out = {}
    for item in items:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value
    return out


def collect_jobs(sweep_dir: str | os.PathLike, split: str = "test") -> list[JobResult]:
    """Read every job directory of ``sweep_dir`` (sub-directories holding ``.hydra/``).

    Raises:
        FileNotFoundError: ``sweep_dir`` does not exist or holds no job directory.
    """
    root = Path(sweep_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such sweep directory")
    job_dirs = [d for d in root.iterdir() if d.is_dir() and (d / ".hydra").is_dir()]
    job_dirs += [d for d in root.iterdir() if d.is_dir() and (d / METRICS_FILE).is_file()]
    job_dirs = sorted(
        set(job_dirs),
        key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name),
    )
    if not job_dirs:
        raise FileNotFoundError(
            f"{root}: no job directories (expected <num>/.hydra/ or <num>/{METRICS_FILE})"
        )
    jobs = []
    for d in job_dirs:
        overrides = _read_overrides(d)
        path = d / METRICS_FILE
        if not path.is_file():
            jobs.append(JobResult(d.name, overrides, None, status=f"no {METRICS_FILE} (failed?)"))
            continue
        with open(path) as fh:
            summary = json.load(fh)
        metrics = split_metrics(summary, split)
        status = "ok" if metrics else "no metrics"
        jobs.append(JobResult(d.name, overrides, metrics, status=status))
    return jobs


def varying_keys(jobs: list[JobResult]) -> list[str]:
    """Override keys whose value differs between jobs (the sweep's axes), in first-seen order."""
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.overrides if k not in keys]
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1] or keys[:0]


def build_rows(jobs: list[JobResult]) -> tuple[list[str], list[list[str]], list[list[Any]]]:
    """Return the header, the display rows (Markdown) and the raw rows (CSV)."""
    axes = varying_keys(jobs)
    axis_names = [COLUMN_ALIASES.get(k, k) for k in axes]
    header = ["job", *axis_names, *(c for c, _, _ in METRIC_COLUMNS), "status"]
    shown, raw = [], []
    for job in jobs:
        cells = [job.num]
        raw_cells: list[Any] = [job.num]
        for key, name in zip(axes, axis_names):
            value = job.overrides.get(key, "")
            # sweepers write booleans either way (`true` on the command line, `True` in a sweep)
            cells.append(VALUE_ALIASES.get(name, {}).get(value.lower(), value))
            raw_cells.append(value)
        for _, key, scale in METRIC_COLUMNS:
            v = None if job.metrics is None else job.metrics.get(key)
            cells.append("" if v is None else f"{v * scale:.1f}" if scale != 1.0 else f"{v:.2f}")
            raw_cells.append("" if v is None else v * scale)
        cells.append(job.status)
        raw_cells.append(job.status)
        shown.append(cells)
        raw.append(raw_cells)
    return header, shown, raw


def to_markdown(header: list[str], rows: list[list[str]], title: str) -> str:
    """Render a GitHub-flavoured Markdown table."""
    return "\n".join([f"# {title}", "", *markdown_table(header, rows)]) + "\n"


def plot_jobs(jobs: list[JobResult], axes: list[str], path: Path) -> Path:
    """Grouped bars of AP^p_50, AP^p_vol and PCP_50 per job (labelled by its sweep point)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [c for c, _, s in METRIC_COLUMNS if s != 1.0]
    keys = [k for _, k, s in METRIC_COLUMNS if s != 1.0]
    labels = [
        "\n".join(f"{COLUMN_ALIASES.get(k, k)}={j.overrides.get(k, '')}" for k in axes) or j.num
        for j in jobs
    ]
    values = np.array(
        [[(j.metrics or {}).get(k, np.nan) * 100.0 for k in keys] for j in jobs], dtype=float
    )
    x = np.arange(len(jobs))
    width = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(jobs) + 2), 4))
    for i, name in enumerate(names):
        ax.bar(x + (i - (len(keys) - 1) / 2) * width, values[:, i], width, label=name)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("%")
    ax.set_title("Sweep results")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(
    sweep_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, split: str = "test"
) -> dict[str, Path]:
    """Write ``report.md``, ``report.csv`` and ``report.png`` for a sweep; returns their paths."""
    jobs = collect_jobs(sweep_dir, split)
    out = Path(out_dir or sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    header, shown, raw = build_rows(jobs)
    # Results files are replaced atomically: a killed report leaves the previous one whole.
    md = write_text_atomic(
        out / "report.md", to_markdown(header, shown, f"Sweep {Path(sweep_dir).name} ({split})")
    )
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(header)
    writer.writerows(raw)
    csv_path = write_text_atomic(out / "report.csv", table.getvalue())
    png = plot_jobs(jobs, varying_keys(jobs), out / "report.png")
    return {"markdown": md, "csv": csv_path, "plot": png}


def sweep_project(jobs_dir: str | os.PathLike) -> str | None:
    """The W&B project the sweep's jobs logged to (``logger.wandb.project`` of a job's config)."""
    for config in sorted(Path(jobs_dir).glob("*/.hydra/config.yaml")):
        with open(config) as fh:
            loggers = (yaml.safe_load(fh) or {}).get("logger") or {}
        wandb_cfg = loggers.get("wandb") if isinstance(loggers, dict) else None
        if isinstance(wandb_cfg, dict) and wandb_cfg.get("project"):
            return str(wandb_cfg["project"])
    return None


def log_report_to_wandb(
    sweep_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    split: str = "test",
    project: str | None = None,
) -> str:
    """Log the sweep's table as a ``wandb.Table`` (key ``report/<split>``) in a ``report`` run of
    the sweep's W&B group (its directory name, as the jobs' group), so it sits next to the jobs.

    Returns:
        The W&B run id.
    """
    from smp_parsing.utils.wandb_env import log_tables_run

    jobs = collect_jobs(sweep_dir, split)
    header, _, raw = build_rows(jobs)
    rows = [[None if cell == "" else cell for cell in row] for row in raw]  # empty: no value
    group = Path(sweep_dir).resolve().name
    return log_tables_run(
        {f"report/{split}": (header, rows)},
        save_dir=out_dir or sweep_dir,
        project=project or sweep_project(sweep_dir) or "smp_parsing",
        group=group,
        job_type="report",
        name=f"report-{group}",
    )


def main(argv: list[str] | None = None) -> int:
    """Command line: print the Markdown table and where the files are."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="a Hydra multirun directory (holds <num>/ job dirs)")
    parser.add_argument("--out", default=None, help="output folder (default: the sweep dir)")
    parser.add_argument("--split", default="test", choices=("test", "val"),
                        help="metrics of which split (falls back to the other one)")  # fmt: skip
    parser.add_argument(
        "--wandb",
        action="store_true",
        help="also log the table as a wandb.Table into the sweep's W&B group",
    )
    parser.add_argument("--wandb-project", default=None,
                        help="W&B project (default: the jobs' logger.wandb.project)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        paths = write_report(args.sweep_dir, args.out, args.split)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(paths["markdown"].read_text())
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    if args.wandb:
        run_id = log_report_to_wandb(args.sweep_dir, args.out, args.split, args.wandb_project)
        print(f"wandb: run {run_id} (group {Path(args.sweep_dir).resolve().name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
