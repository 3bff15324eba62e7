"""Sweep report: tables shaped like Tables 3 / 5 from multirun job directories."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from smp_parsing import report


def _fake_job(root: Path, num: int, overrides: list[str], test: dict | None) -> None:
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if test is not None:
        (job / "metrics.json").write_text(json.dumps({"test": test, "val": {"APp50": 0.0}}))


def test_report_table3_shape(tmp_path: Path) -> None:
    grid = [("false", "main"), ("false", "main_mir"), ("true", "main"), ("true", "main_mir")]
    for i, (rfr, stage) in enumerate(grid):
        metrics = {"APp50": 0.4 + i / 100, "APpvol": 0.45, "PCP50": 0.44, "fps": 7.5}
        _fake_job(
            tmp_path, i, ["experiment=x", f"model.net.rfr={rfr.title()}", f"stage={stage}"], metrics
        )
    paths = report.write_report(tmp_path)
    md = paths["markdown"].read_text()
    header = md.splitlines()[2]
    # `experiment` is constant across the sweep: not a column; the two axes are, paper-named.
    assert header == "| job | RFR | MIR | APp50 | APpvol | PCP50 | FPS | status |"
    rows = md.splitlines()[4:]
    assert len(rows) == 4
    assert rows[3] == "| 3 | yes | yes | 43.0 | 45.0 | 44.0 | 7.50 | ok |"
    assert rows[0].startswith("| 0 |  |  | 40.0 |")
    with open(paths["csv"]) as fh:
        table = list(csv.reader(fh))
    assert table[0][:3] == ["job", "RFR", "MIR"]
    assert table[2][1:3] == ["False", "main_mir"]
    assert float(table[2][3]) == pytest.approx(41.0)
    assert paths["plot"].stat().st_size > 1000


def test_report_marks_failed_jobs_and_orders_numerically(tmp_path: Path) -> None:
    for i in range(11):
        test = None if i == 2 else {"APp50": 0.5, "APpvol": 0.5, "PCP50": 0.5, "fps": 1.0}
        _fake_job(tmp_path, i, [f"model.net.epsilon={0.1 + i / 100:.2f}"], test)
    jobs = report.collect_jobs(tmp_path)
    assert [j.num for j in jobs] == [str(i) for i in range(11)]  # 10 after 9, not after 1
    assert jobs[2].metrics is None and "failed" in jobs[2].status
    header, shown, _ = report.build_rows(jobs)
    assert header[1] == "epsilon"
    assert shown[2][2:6] == ["", "", "", ""]


def test_report_falls_back_to_val_metrics(tmp_path: Path) -> None:
    job = tmp_path / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("[]")
    (job / "metrics.json").write_text(json.dumps({"val": {"APp50": 0.25, "fps": 3.0}}))
    jobs = report.collect_jobs(tmp_path, split="test")
    assert jobs[0].metrics == {"APp50": 0.25, "fps": 3.0}


def test_report_cli_errors_on_missing_dir(tmp_path: Path, capsys) -> None:
    assert report.main([str(tmp_path / "nope")]) == 2
    assert "no such sweep directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert report.main([str(tmp_path / "empty")]) == 2


# --------------------------------------------------------------------------------------------
# The real thing: a 2-job Table 3 sweep through the command line, then the report.
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_table3_sweep_cli_and_report(synthetic_root, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from conftest import tiny_train_overrides
    from test_wandb import read_wandb_records

    overrides = tiny_train_overrides(synthetic_root, "logger=wandb", "test=true")
    cmd = [sys.executable, "-m", "smp_parsing.train", "sweep=table3",
           "hydra.sweeper.params.stage=main",  # RFR off/on: 2 jobs (MIR rows: stage=main_mir)
           f"paths.log_dir={tmp_path}/logs/", *overrides]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweeps = list((tmp_path / "logs" / "train" / "multiruns").iterdir())
    assert len(sweeps) == 1
    sweep = sweeps[0]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]

    # every job has its own run dir, metrics.json and a W&B run in the sweep's group
    groups = set()
    for job in ("0", "1"):
        summary = json.loads((sweep / job / "metrics.json").read_text())
        assert summary["test"] and Path(summary["best_model_path"]).is_relative_to(sweep / job)
        run_file = next((sweep / job / "wandb").glob("offline-run-*/run-*.wandb"))
        for record in read_wandb_records(run_file):
            if record.WhichOneof("record_type") == "run":
                groups.add(record.run.run_group)
    assert groups == {sweep.name}

    proc = subprocess.run([sys.executable, "-m", "smp_parsing.report", str(sweep)],
                          capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    md = (sweep / "report.md").read_text()
    assert "| job | RFR | APp50 | APpvol | PCP50 | FPS | status |" in md
    rows = [line for line in md.splitlines() if line.startswith("| 0 ") or line.startswith("| 1 ")]
    assert len(rows) == 2 and rows[1].split("|")[2].strip() == "yes" and rows[1].endswith("ok |")
    assert (sweep / "report.csv").is_file() and (sweep / "report.png").stat().st_size > 1000
    assert str(sweep / "report.md") in proc.stdout
