"""Smoke test of ``benchmarks/bench_metrics.py`` on a tiny workload (keeps the script runnable)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_metrics.py"


def test_benchmark_runs_and_agrees_with_the_reference(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_metrics", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "bench.json"
    argv = ["--images", "4", "--pool", "2", "--chunk", "2", "--height", "64", "--width", "256",
            "--gt", "2", "--preds", "3", "--json", str(out)]  # fmt: skip
    figures = module.main(argv)
    assert figures["max_abs_difference"] <= 1e-9
    assert json.loads(out.read_text())["images"] == 4
