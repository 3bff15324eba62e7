"""The one formatter of metric tables: ``evaluate``'s stdout, ``evaluate_dirs``, the run summary
(Markdown) and the sweep report (:func:`markdown_table`) all print through it.

A table of parsing metrics has three parts: the headline numbers of the paper's tables
(:data:`HEADLINE_METRICS`), AP^p and PCP per IoU threshold (``APp@0.1`` ... ``PCP@0.9``), and
every other key (``fps``, ``num_images``, another stage's ``val/...``). :func:`metric_table`
sorts a ``{name: value}`` into them once; :func:`format_metrics_table` renders them as plain text
(a terminal) or Markdown (a report).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# The headline numbers of the paper's tables, in the order they are printed.
HEADLINE_METRICS: tuple[str, ...] = ("APp50", "APpvol", "PCP50", "mIoU", "pixel_acc")


@dataclass
class MetricTable:
    """A metric dict sorted into the parts of a table (values may be NaN or ``None``)."""

    headline: list[tuple[str, float]] = field(default_factory=list)
    # (threshold, AP^p, PCP); a value missing from the dict is None
    thresholds: list[tuple[str, float | None, float | None]] = field(default_factory=list)
    # full key names (with any prefix), in the dict's order
    others: list[tuple[str, float]] = field(default_factory=list)


def metric_table(metrics: Mapping[str, float], prefix: str = "") -> MetricTable:
    """Sort ``metrics`` into headline, per-threshold and other rows.

    Args:
        metrics: ``{name: value}``; keys may carry a stage prefix (``"test/APp50"``).
        prefix: the stage whose headline and threshold rows are shown (``""``, ``"test/"``,
            ``"val/"``): its keys without a further ``/``. Every other key is an "other" row.
    """
    stage = {
        k[len(prefix) :]: v
        for k, v in metrics.items()
        if k.startswith(prefix) and "/" not in k[len(prefix) :]
    }
    table = MetricTable()
    table.headline = [(k, stage[k]) for k in HEADLINE_METRICS if k in stage]
    used = {prefix + k for k, _ in table.headline}
    thresholds = sorted(
        {k.split("@", 1)[1] for k in stage if k.startswith(("APp@", "PCP@"))}, key=float
    )
    for t in thresholds:
        table.thresholds.append((t, stage.get(f"APp@{t}"), stage.get(f"PCP@{t}")))
        used.update(f"{prefix}{name}@{t}" for name in ("APp", "PCP"))
    table.others = [(k, v) for k, v in metrics.items() if k not in used]
    return table


def format_value(value: float | None, percent: bool = False) -> str:
    """Four decimals (``percent``: x 100 with two); ``n/a`` for NaN, empty for a missing value."""
    if value is None:
        return ""
    if math.isnan(value):
        return "n/a"
    return f"{100 * value:.2f}" if percent else f"{value:.4f}"


def markdown_table(
    header: Sequence[str], rows: Sequence[Sequence[object]], align: str = ""
) -> list[str]:
    """GitHub-flavoured Markdown table lines; ``align`` ``":"`` right-aligns every column."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + f"---{align}|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def format_metrics_table(
    metrics: Mapping[str, float],
    title: str = "",
    style: str = "text",
    prefix: str = "",
    percent: bool = False,
) -> str:
    """Render a metric table (see :func:`metric_table`).

    Args:
        metrics: ``{"APp50": 0.41, "APp@0.1": ..., "PCP@0.1": ..., "fps": ...}``.
        title: first line (text) or heading line (Markdown); none when empty.
        style: ``"text"``: one aligned ``name value`` line per headline and other metric, then
            one row of AP^p and one of PCP over the thresholds; ``"markdown"``: the headline
            metrics as one table row, a threshold table, then a table of the other keys.
        prefix: the stage shown as headline (``"test/"``); its name titles the Markdown table.
        percent: values in percent with two decimals (the paper's tables), else four decimals.

    Raises:
        ValueError: an unknown ``style``.
    """
    table = metric_table(metrics, prefix)
    lines = [title] if title else []
    if style == "text":
        rows = [*table.headline, *table.others]
        width = max((len(k) for k in metrics), default=8)
        lines += [f"  {k:<{width}}  {format_value(v, percent)}" for k, v in rows]
        if table.thresholds:
            nan = float("nan")
            lines.append("  " + "thr".ljust(6) + "".join(f"{t:>8}" for t, _, _ in table.thresholds))
            for i, name in ((1, "APp"), (2, "PCP")):
                values = [nan if row[i] is None else row[i] for row in table.thresholds]
                cells = (f"{100 * v:>8.2f}" if percent else f"{v:>8.4f}" for v in values)
                lines.append("  " + name.ljust(6) + "".join(cells))
        return "\n".join(lines)
    if style != "markdown":
        raise ValueError(f"style must be 'text' or 'markdown', got {style!r}")
    if title:
        lines.append("")
    if table.headline:
        stage = f" ({prefix.rstrip('/')})" if prefix else ""
        lines += [f"Headline metrics{stage}:", ""]
        header = [k for k, _ in table.headline]
        lines += markdown_table(
            header, [[format_value(v, percent) for _, v in table.headline]], ":"
        )
        lines.append("")
    if table.thresholds:
        rows = [
            [t, format_value(a, percent), format_value(p, percent)] for t, a, p in table.thresholds
        ]
        lines += markdown_table(["IoU threshold", "AP^p", "PCP"], rows, ":")
        lines.append("")
    if table.others:
        lines += ["| metric | value |", "|---|---:|"]
        lines += [f"| {k} | {format_value(v, percent)} |" for k, v in table.others]
        lines.append("")
    return "\n".join(lines)


__all__ = [
    "HEADLINE_METRICS",
    "MetricTable",
    "format_metrics_table",
    "format_value",
    "markdown_table",
    "metric_table",
]
