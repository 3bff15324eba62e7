"""A short Markdown report of one training run: metrics table, loss and metric curves, overlays.

``make train`` calls :func:`write_run_summary` at the end of the run; the same report can be
rebuilt for any run directory with ``python -m smp_parsing.run_summary RUN_DIR``.

Inputs found in the run directory:
    * the Lightning CSV logger's ``metrics.csv`` (``RUN_DIR/csv/**/metrics.csv`` first, else any
      ``metrics.csv`` below ``RUN_DIR``), one row per logging call with empty cells for the keys
      not logged in that call;
    * the ``metrics.json`` written by ``smp_parsing.evaluate`` (flat ``{name: value}``; names may
      carry a stage prefix such as ``test/APp50``);
    * overlay PNGs written by ``smp_parsing.predict``.

Outputs, in ``RUN_DIR/report/``: ``curves.png``, ``overlays/*.png`` (copies) and ``README.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smp_parsing.utils.metrics_table import HEADLINE_METRICS, format_metrics_table

# The headline numbers of the paper's tables, in the order they are printed.
MAIN_METRICS: tuple[str, ...] = HEADLINE_METRICS
# Validation curves drawn next to the losses (the keys logged by the LightningModule).
CURVE_METRICS: tuple[str, ...] = ("val/APp50", "val/APpvol", "val/PCP50", "val/mIoU")
LOSS_PREFIX = "train/loss"
# File names predict gives its overlay pictures (the class-id maps next to them are not shown).
OVERLAY_GLOBS: tuple[str, ...] = ("**/*overlay*.png", "**/overlays/*.png")


@dataclass
class Series:
    """One logged key: values with the step and epoch of the row they were logged in."""

    steps: list[float] = field(default_factory=list)
    epochs: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


def find_metrics_csv(run_dir: str | Path) -> Path | None:
    """Newest ``metrics.csv`` of the CSV logger below ``run_dir`` (``csv/`` preferred), or None."""
    run_dir = Path(run_dir)
    for pattern in ("csv/**/metrics.csv", "**/metrics.csv"):
        found = sorted(run_dir.glob(pattern), key=lambda p: (p.stat().st_mtime, str(p)))
        if found:
            return found[-1]
    return None


def find_metrics_json(run_dir: str | Path) -> Path | None:
    """``RUN_DIR/metrics.json``, else the newest ``metrics.json`` below ``run_dir``, or None."""
    run_dir = Path(run_dir)
    if (run_dir / "metrics.json").is_file():
        return run_dir / "metrics.json"
    found = [p for p in run_dir.glob("**/metrics.json") if "report" not in p.parts]
    return max(found, key=lambda p: (p.stat().st_mtime, str(p))) if found else None


def find_overlays(run_dir: str | Path, limit: int = 8) -> list[Path]:
    """Overlay PNGs written by predict below ``run_dir`` (the report's own copies excluded)."""
    run_dir = Path(run_dir)
    report_dir = run_dir / "report"
    found: set[Path] = set()
    for pattern in OVERLAY_GLOBS:
        found.update(p for p in run_dir.glob(pattern) if report_dir not in p.parents)
    return sorted(found)[:limit]


def _parse_float(text: str, path: Path, line: int, column: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"{path}: line {line}, column {column!r}: not a number: {text!r}"
        ) from None


def read_metrics_csv(path: str | Path) -> dict[str, Series]:
    """Read a Lightning CSV logger file into one :class:`Series` per logged key.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: naming the file, when it has no ``step`` column or a cell is not a number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file not found: {path}")
    series: dict[str, Series] = {}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        if "step" not in columns:
            raise ValueError(f"{path}: not a Lightning metrics.csv (no 'step' column): {columns}")
        keys = [c for c in columns if c not in ("step", "epoch")]
        for line, row in enumerate(reader, start=2):
            step = _parse_float(row["step"], path, line, "step") if row["step"] else math.nan
            epoch_text = row.get("epoch") or ""
            epoch = _parse_float(epoch_text, path, line, "epoch") if epoch_text else math.nan
            for key in keys:
                cell = row.get(key)
                if cell in (None, ""):
                    continue
                s = series.setdefault(key, Series())
                s.steps.append(step)
                s.epochs.append(epoch)
                s.values.append(_parse_float(cell, path, line, key))
    return series


def extract_metrics(data: Mapping[str, Any], source: str = "metrics") -> dict[str, float]:
    """The numeric metrics of a ``metrics.json`` payload.

    Accepted layouts: a flat object ``{name: value}``, or an object whose numbers are under
    ``"metrics"`` (what ``smp_parsing.evaluate`` writes, with ``ckpt_path`` and ``split`` next to
    them, and the run summary of ``smp_parsing.train``). Entries that are not numbers (paths,
    overrides) are left out; ``null`` (a non-finite value) is kept as NaN.

    Raises:
        ValueError: naming ``source``, when no numeric value is found.
    """
    if isinstance(data.get("metrics"), Mapping):
        data = data["metrics"]
    metrics = {
        str(k): math.nan if v is None else float(v)
        for k, v in data.items()
        if v is None or (isinstance(v, int | float) and not isinstance(v, bool))
    }
    if not any(not math.isnan(v) for v in metrics.values()):
        raise ValueError(f"{source}: no numeric metric value in {sorted(data)}")
    return metrics


def load_metrics_json(path: str | Path) -> dict[str, float]:
    """Read the metrics of a ``metrics.json`` (layouts of :func:`extract_metrics`).

    Raises:
        ValueError: naming the file, when it is not JSON, not an object, or holds no number.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: expected a JSON object of metric values, got {type(data).__name__}"
        )
    return extract_metrics(data, str(path))


def _table_stage(metrics: Mapping[str, float]) -> str:
    """The key prefix of the headline table: evaluation (no prefix or ``test/``), else ``val/``."""
    for prefix in ("", "test/", "val/"):
        if any(f"{prefix}{k}" in metrics for k in MAIN_METRICS):
            return prefix
    return ""


def metrics_tables(metrics: Mapping[str, float]) -> str:
    """Markdown tables of evaluation metrics (utils/metrics_table.py, ``style="markdown"``).

    The headline metrics (:data:`MAIN_METRICS`) come first, then, when present, AP^p and PCP at
    each IoU threshold (``APp@0.1`` ... ``PCP@0.9``) as one row per threshold, then every other
    key with its full name. The headline stage is the evaluation's (keys without prefix or with
    ``test/``), else ``val/``.
    """
    return format_metrics_table(metrics, style="markdown", prefix=_table_stage(metrics))


def loss_curve_keys(series: Mapping[str, Series], loss_prefix: str = LOSS_PREFIX) -> list[str]:
    """The loss keys worth drawing: per-step values when logged both per step and per epoch."""
    keys = sorted(k for k in series if k.startswith(loss_prefix))
    return [
        k for k in keys if not (k.endswith("_epoch") and f"{k[: -len('_epoch')]}_step" in series)
    ]


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average (the first values average what is available)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_curves(
    series: Mapping[str, Series],
    out_path: str | Path,
    metric_keys: Sequence[str] = CURVE_METRICS,
    loss_prefix: str = LOSS_PREFIX,
    smooth_above: int = 50,
) -> Path | None:
    """Draw the training losses (vs step) and the validation metrics (vs epoch) into a PNG.

    Args:
        series: logged keys, from :func:`read_metrics_csv`.
        out_path: PNG to write.
        metric_keys: validation metrics to draw.
        loss_prefix: keys starting with it are losses.
        smooth_above: a loss curve with more points than this is drawn faint with a moving
            average over it (per-step losses are noisy).

    Returns:
        The PNG path, or ``None`` when ``series`` holds neither losses nor metrics.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    loss_keys = loss_curve_keys(series, loss_prefix)
    metric_keys = [k for k in metric_keys if k in series]
    panels = [p for p in (("loss", loss_keys), ("metric", metric_keys)) if p[1]]
    if not panels:
        return None
    fig = Figure(figsize=(6.0 * len(panels), 4.0), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (kind, keys) in zip(axes, panels, strict=True):
        for key in keys:
            s = series[key]
            use_epoch = kind == "metric" and not any(math.isnan(e) for e in s.epochs)
            x = s.epochs if use_epoch else s.steps
            label = key.removesuffix("_step")
            if kind == "loss" and len(x) > smooth_above:
                (raw,) = ax.plot(x, s.values, alpha=0.25, linewidth=0.8)
                window = max(5, len(x) // 50)
                ax.plot(x, moving_average(s.values, window), color=raw.get_color(), label=label)
            else:
                # Few points (epoch values, short runs): markers keep them readable.
                ax.plot(x, s.values, marker="o" if len(x) < 30 else None, markersize=3, label=label)
        if kind == "loss":
            ax.set_xlabel("step")
            ax.set_ylabel("loss")
            ax.set_title("Training losses")
            if all(v > 0 for k in keys for v in series[k].values):
                ax.set_yscale("log")
        else:
            x_is_epoch = all(not any(math.isnan(e) for e in series[k].epochs) for k in keys)
            ax.set_xlabel("epoch" if x_is_epoch else "step")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("metric")
            ax.set_title("Validation metrics")
            ax.set_ylim(0.0, 1.0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100)
    return out_path


def _curve_summary(series: Mapping[str, Series], metric_keys: Sequence[str]) -> list[str]:
    """Bullet lines: last training loss, best value and epoch of each validation metric."""
    lines = []
    loss_keys = [k for k in ("train/loss", "train/loss_step", "train/loss_epoch") if k in series]
    loss_keys = loss_keys or sorted(k for k in series if k.startswith(LOSS_PREFIX))
    if loss_keys:
        s = series[loss_keys[0]]
        lines.append(f"- last `{loss_keys[0]}`: {s.values[-1]:.4f} (step {s.steps[-1]:.0f})")
    for key in metric_keys:
        if key not in series:
            continue
        s = series[key]
        best = max(range(len(s.values)), key=lambda i: s.values[i])
        where = (
            f"epoch {s.epochs[best]:.0f}"
            if not math.isnan(s.epochs[best])
            else f"step {s.steps[best]:.0f}"
        )
        lines.append(f"- best `{key}`: {s.values[best]:.4f} ({where}); last: {s.values[-1]:.4f}")
    return lines


def write_run_summary(
    run_dir: str | Path,
    metrics: Mapping[str, float] | None = None,
    overlays: Sequence[str | Path] | None = None,
    max_overlays: int = 8,
    metric_keys: Sequence[str] = CURVE_METRICS,
) -> Path:
    """Write ``RUN_DIR/report/README.md`` with the metrics table, the curves and the overlays.

    Args:
        run_dir: the training run directory.
        metrics: evaluation metrics, ``{name: value}`` or the ``metrics.json`` payload of
            ``smp_parsing.evaluate`` (see :func:`extract_metrics`); default read from the run's
            ``metrics.json`` (see :func:`find_metrics_json`).
        overlays: overlay images to show (copied into ``report/overlays/``); default the
            overlays predict wrote below ``run_dir`` (see :func:`find_overlays`).
        max_overlays: at most this many overlays are shown.
        metric_keys: validation metrics drawn as curves.

    Returns:
        Path of the written ``README.md``.

    Raises:
        FileNotFoundError: when ``run_dir`` or a given overlay does not exist.
        ValueError: when ``metrics.csv`` / ``metrics.json`` cannot be read (names the file).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    report_dir = run_dir / "report"
    report_dir.mkdir(parents=True, exist_ok=True)

    if metrics is None:
        json_path = find_metrics_json(run_dir)
        metrics = load_metrics_json(json_path) if json_path else {}
        metrics_source = f"from `{json_path.relative_to(run_dir)}`" if json_path else ""
    else:
        # What evaluate wrote, as is: say which checkpoint and split the numbers are of.
        context = [
            f"{k} `{metrics[k]}`" for k in ("split", "ckpt_path") if isinstance(metrics.get(k), str)
        ]
        metrics_source = ", ".join(context) or "given by the caller"
        metrics = extract_metrics(metrics, "metrics passed to write_run_summary")

    csv_path = find_metrics_csv(run_dir)
    series = read_metrics_csv(csv_path) if csv_path else {}
    curves = plot_curves(series, report_dir / "curves.png", metric_keys) if series else None
    if curves is None:
        # A stale plot from an earlier report would now describe the wrong run.
        (report_dir / "curves.png").unlink(missing_ok=True)

    overlay_paths = [Path(p) for p in overlays] if overlays is not None else find_overlays(run_dir)
    missing = [str(p) for p in overlay_paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"overlay images not found: {missing}")
    copies = _copy_overlays(overlay_paths[:max_overlays], report_dir / "overlays")

    lines = [f"# Run summary: `{run_dir.name}`", "", f"Run directory: `{run_dir.resolve()}`", ""]
    checkpoints = sorted(run_dir.glob("**/*.ckpt"))
    if checkpoints:
        lines.append(
            "Checkpoints: " + ", ".join(f"`{p.relative_to(run_dir)}`" for p in checkpoints)
        )
        lines.append("")
    lines += ["## Metrics", ""]
    if metrics:
        lines += [f"Evaluation metrics ({metrics_source}).", "", metrics_tables(metrics)]
    else:
        lines += ["No evaluation metrics found (no `metrics.json` in the run directory).", ""]
    lines += ["## Curves", ""]
    if curves is not None:
        lines += [f"From `{csv_path.relative_to(run_dir)}`.", "", "![curves](curves.png)", ""]
        lines += [*_curve_summary(series, metric_keys), ""]
    elif csv_path is not None:
        lines += [f"`{csv_path.relative_to(run_dir)}` holds no loss or validation metric.", ""]
    else:
        lines += ["No `metrics.csv` found (the CSV logger was not enabled).", ""]
    lines += ["## Overlays", ""]
    if copies:
        lines += [
            "Predicted parsing: parts coloured by class, each person outlined with its score.",
            "",
        ]
        lines += [f"![{p.stem}](overlays/{p.name})" for p in copies]
        lines.append("")
    else:
        lines += ["No overlay images.", ""]
    readme = report_dir / "README.md"
    readme.write_text("\n".join(lines))
    return readme


def _copy_overlays(paths: Sequence[Path], dest: Path) -> list[Path]:
    """Copy overlays into the report (so it stays readable when moved); names made unique."""
    if dest.exists():
        shutil.rmtree(dest)
    if not paths:
        return []
    dest.mkdir(parents=True)
    copies = []
    for i, src in enumerate(paths):
        target = dest / src.name
        if target.exists():
            target = dest / f"{i:02d}_{src.name}"
        shutil.copyfile(src, target)
        copies.append(target)
    return copies


def main(argv: Sequence[str] | None = None) -> Path:
    """CLI: ``python -m smp_parsing.run_summary RUN_DIR [--metrics-json F] [--overlays PNG ...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m smp_parsing.run_summary",
        description="Write RUN_DIR/report/README.md: metrics table, loss/metric curves, overlays.",
    )
    parser.add_argument("run_dir", type=Path, help="training run directory")
    parser.add_argument("--metrics-json", type=Path, default=None, help="evaluation metrics.json")
    parser.add_argument("--overlays", type=Path, nargs="*", default=None, help="overlay images")
    parser.add_argument("--max-overlays", type=int, default=8)
    args = parser.parse_args(argv)
    try:
        metrics = load_metrics_json(args.metrics_json) if args.metrics_json else None
        readme = write_run_summary(args.run_dir, metrics, args.overlays, args.max_overlays)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))  # exits with status 2 and the message, no traceback
    print(f"report: {readme}")
    return readme


if __name__ == "__main__":
    main()
