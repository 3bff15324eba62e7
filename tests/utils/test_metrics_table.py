"""The one metric-table formatter: text (evaluate, evaluate_dirs), Markdown (run summary, report)."""

from __future__ import annotations

import math

import pytest

from smp_parsing.utils.metrics_table import format_metrics_table, markdown_table, metric_table

METRICS = {"test/APp50": 0.5, "test/APpvol": math.nan, "test/APp@0.5": 0.5,
           "test/PCP@0.5": 0.25, "test/APp@0.1": 1.0, "test/fps": 12.0, "val/APp50": 0.4}  # fmt: skip


def test_metric_table_sorts_headline_thresholds_and_others() -> None:
    table = metric_table(METRICS, prefix="test/")
    assert [k for k, _ in table.headline] == ["APp50", "APpvol"]
    # thresholds in numeric order; a missing PCP is None
    assert table.thresholds == [("0.1", 1.0, None), ("0.5", 0.5, 0.25)]
    assert [k for k, _ in table.others] == ["test/fps", "val/APp50"]  # full names


def test_text_and_markdown_render_the_same_table() -> None:
    text = format_metrics_table(METRICS, "title", prefix="test/").splitlines()
    assert text[0] == "title" and text[1].split() == ["APp50", "0.5000"]
    assert text[2].split() == ["APpvol", "n/a"] and text[3].split() == ["test/fps", "12.0000"]
    assert text[-3].split() == ["thr", "0.1", "0.5"]
    assert text[-2].split() == ["APp", "1.0000", "0.5000"]
    assert text[-1].split() == ["PCP", "nan", "0.2500"]
    md = format_metrics_table(METRICS, style="markdown", prefix="test/")
    assert "Headline metrics (test):" in md and "| 0.5000 | n/a |" in md
    assert "| 0.1 | 1.0000 |  |" in md and "| val/APp50 | 0.4000 |" in md
    # the paper's percent with two decimals (evaluate_dirs)
    percent = format_metrics_table(METRICS, prefix="test/", percent=True).splitlines()
    assert percent[0].split() == ["APp50", "50.00"] and percent[-1].split() == [
        "PCP",
        "nan",
        "25.00",
    ]
    with pytest.raises(ValueError, match="style must be"):
        format_metrics_table(METRICS, style="html")


def test_markdown_table() -> None:
    assert markdown_table(["a", "b"], [[1, "x"]]) == ["| a | b |", "|---|---|", "| 1 | x |"]
    assert markdown_table(["a"], [], ":")[1] == "|---:|"
