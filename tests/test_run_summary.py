"""Tests of smp_parsing.run_summary on a fake run directory (metrics.csv, metrics.json, overlays)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from smp_parsing import run_summary as rs

# Shaped like Lightning's CSV logger output: one row per logging call, empty cells elsewhere.
FAKE_CSV = """epoch,step,train/loss,train/loss_center,train/loss_part,val/APp50,val/APpvol,val/PCP50,val/mIoU
0,9,2.5,0.9,1.1,,,,
0,19,1.9,0.7,0.8,,,,
0,19,,,,0.10,0.12,0.08,0.20
1,29,1.2,0.5,0.4,,,,
1,39,0.8,0.3,0.3,,,,
1,39,,,,0.55,0.41,0.47,0.52
2,59,0.7,0.2,0.3,,,,
2,59,,,,0.50,0.44,0.49,0.55
"""

FAKE_METRICS = {
    "test/APp50": 0.5512,
    "test/APpvol": 0.4321,
    "test/PCP50": 0.4789,
    "test/mIoU": 0.6123,
    "test/pixel_acc": 0.9,
    "test/APp@0.1": 0.8,
    "test/APp@0.5": 0.5512,
    "test/PCP@0.1": 0.7,
    "test/PCP@0.5": 0.4789,
    "test/fps": 12.5,
}


def _make_run(tmp_path: Path, with_csv: bool = True, with_json: bool = True) -> Path:
    run = tmp_path / "2026-01-01_00-00-00_abcd"
    if with_csv:
        csv_dir = run / "csv" / "version_0"
        csv_dir.mkdir(parents=True)
        (csv_dir / "metrics.csv").write_text(FAKE_CSV)
    if with_json:
        run.mkdir(parents=True, exist_ok=True)
        (run / "metrics.json").write_text(json.dumps(FAKE_METRICS))
    pred = run / "predict"
    pred.mkdir(parents=True)
    for name in ("img_0001", "img_0002"):
        img = np.zeros((20, 30, 3), np.uint8)
        img[:, :, 1] = 200
        cv2.imwrite(str(pred / f"{name}_overlay.png"), img)
        cv2.imwrite(str(pred / f"{name}_01_01.png"), img)  # a class-id map: not an overlay
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    return run


def test_read_metrics_csv_series(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(FAKE_CSV)
    series = rs.read_metrics_csv(path)
    assert set(series) >= {"train/loss", "val/APp50", "val/mIoU"}
    assert series["train/loss"].values == [2.5, 1.9, 1.2, 0.8, 0.7]
    assert series["train/loss"].steps == [9, 19, 29, 39, 59]
    assert series["val/APp50"].epochs == [0, 1, 2]
    assert series["val/APp50"].values == [0.10, 0.55, 0.50]


def test_read_metrics_csv_errors(tmp_path):
    bad = tmp_path / "metrics.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"metrics.csv.*no 'step' column"):
        rs.read_metrics_csv(bad)
    bad.write_text("epoch,step,train/loss\n0,1,nan-ish\n")
    with pytest.raises(ValueError, match=r"line 2, column 'train/loss'"):
        rs.read_metrics_csv(bad)
    with pytest.raises(FileNotFoundError):
        rs.read_metrics_csv(tmp_path / "nope.csv")


def test_metrics_tables():
    text = rs.metrics_tables(FAKE_METRICS)
    assert "| APp50 | APpvol | PCP50 | mIoU | pixel_acc |" in text
    assert "| 0.5512 | 0.4321 | 0.4789 | 0.6123 | 0.9000 |" in text
    assert "| 0.1 | 0.8000 | 0.7000 |" in text and "| 0.5 | 0.5512 | 0.4789 |" in text
    assert "Headline metrics (test):" in text
    assert "| test/fps | 12.5000 |" in text
    assert "test/APp50 |" not in text  # shown once, in the headline table


def test_metrics_tables_stage_choice_and_nan():
    text = rs.metrics_tables({"val/APp50": 0.3, "val/APpvol": math.nan, "train/loss": 1.5})
    assert "Headline metrics (val):" in text and "| 0.3000 | n/a |" in text
    assert "| train/loss | 1.5000 |" in text
    flat = rs.metrics_tables({"APp50": 0.3, "val/APp50": 0.2})
    assert "Headline metrics:" in flat and "| 0.3000 |" in flat and "| val/APp50 | 0.2000 |" in flat


def test_load_metrics_json_errors(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="metrics.json: expected a JSON object"):
        rs.load_metrics_json(path)
    path.write_text("{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        rs.load_metrics_json(path)
    path.write_text('{"best_model_path": "a.ckpt"}')
    with pytest.raises(ValueError, match="no numeric metric"):
        rs.load_metrics_json(path)


def test_load_metrics_json_train_summary_layout(tmp_path):
    # smp_parsing.train writes a summary: checkpoint paths, overrides, and numbers under "metrics".
    path = tmp_path / "metrics.json"
    summary = {
        "best_model_path": "/x/epoch_001.ckpt",
        "overrides": ["experiment=synthetic"],
        "metrics": {"test/APp50": 0.4, "test/APpvol": None, "val/APp50": 0.35, "flag": True},
    }
    path.write_text(json.dumps(summary))
    got = rs.load_metrics_json(path)
    assert set(got) == {"test/APp50", "test/APpvol", "val/APp50"}
    assert got["test/APp50"] == 0.4 and math.isnan(got["test/APpvol"])


def test_write_run_summary_full(tmp_path):
    run = _make_run(tmp_path)
    readme = rs.write_run_summary(run)
    assert readme == run / "report" / "README.md"
    text = readme.read_text()
    assert "| 0.5512 | 0.4321 | 0.4789 | 0.6123 | 0.9000 |" in text
    assert "![curves](curves.png)" in text
    assert "best `val/APp50`: 0.5500 (epoch 1); last: 0.5000" in text
    assert "last `train/loss`: 0.7000 (step 59)" in text
    assert "checkpoints/last.ckpt" in text
    # Only the overlays (not the class-id maps) are copied and shown.
    shown = sorted(p.name for p in (run / "report" / "overlays").iterdir())
    assert shown == ["img_0001_overlay.png", "img_0002_overlay.png"]
    assert "![img_0001_overlay](overlays/img_0001_overlay.png)" in text
    curves = cv2.imread(str(run / "report" / "curves.png"))
    assert curves is not None and curves.shape[1] > curves.shape[0]  # two panels side by side
    # Running it again does not pick up its own copies.
    rs.write_run_summary(run)
    assert len(list((run / "report" / "overlays").iterdir())) == 2


def test_write_run_summary_explicit_inputs_and_missing_parts(tmp_path):
    run = _make_run(tmp_path, with_csv=False, with_json=False)
    extra = tmp_path / "mine.png"
    cv2.imwrite(str(extra), np.zeros((5, 5, 3), np.uint8))
    readme = rs.write_run_summary(run, metrics={"APp50": 0.25}, overlays=[extra])
    text = readme.read_text()
    assert "| APp50 |" in text and "| 0.2500 |" in text
    assert "No `metrics.csv` found" in text
    assert not (run / "report" / "curves.png").exists()
    assert [p.name for p in (run / "report" / "overlays").iterdir()] == ["mine.png"]
    with pytest.raises(FileNotFoundError, match="overlay images not found"):
        rs.write_run_summary(run, overlays=[tmp_path / "gone.png"])
    with pytest.raises(FileNotFoundError, match="run directory not found"):
        rs.write_run_summary(tmp_path / "no_run")


def test_write_run_summary_without_metrics(tmp_path):
    run = _make_run(tmp_path, with_json=False)
    text = rs.write_run_summary(run, overlays=[]).read_text()
    assert "No evaluation metrics found" in text and "No overlay images." in text


def test_reads_real_lightning_csv_logger(tmp_path):
    # The format contract with the CSV logger is Lightning's, so check it against the real writer.
    from lightning.pytorch.loggers import CSVLogger

    run = tmp_path / "run"
    logger = CSVLogger(save_dir=run, name="csv")
    for step in range(4):
        logger.log_metrics({"train/loss": 1.0 / (step + 1), "epoch": step // 2}, step=step)
    logger.log_metrics({"val/APp50": 0.3, "val/APpvol": 0.2, "epoch": 1}, step=3)
    logger.save()
    path = rs.find_metrics_csv(run)
    assert path is not None and path.name == "metrics.csv"
    series = rs.read_metrics_csv(path)
    assert series["train/loss"].values == [1.0, 0.5, 1.0 / 3, 0.25]
    assert series["val/APp50"].epochs == [1.0]
    text = rs.write_run_summary(run, overlays=[]).read_text()
    assert "best `val/APp50`: 0.3000 (epoch 1)" in text


def test_cli(tmp_path):
    run = _make_run(tmp_path, with_json=False)
    metrics = tmp_path / "eval.json"
    metrics.write_text(json.dumps({"APp50": 0.61}))
    proc = subprocess.run(
        [sys.executable, "-m", "smp_parsing.run_summary", str(run), "--metrics-json", str(metrics)],
        check=True,
        capture_output=True,
        text=True,
    )
    assert proc.stdout.strip() == f"report: {run / 'report' / 'README.md'}"
    assert "| 0.6100 |" in (run / "report" / "README.md").read_text()


def test_write_run_summary_with_evaluate_payload(tmp_path):
    # What smp_parsing.evaluate writes, passed as is (make train does this).
    run = _make_run(tmp_path, with_json=False)
    payload = {
        "ckpt_path": "/x/epoch_003.ckpt",
        "split": "val",
        "metrics": {"APp50": 0.52, "APpvol": 0.41},
    }
    text = rs.write_run_summary(run, metrics=payload).read_text()
    assert "split `val`, ckpt_path `/x/epoch_003.ckpt`" in text
    assert "| 0.5200 | 0.4100 |" in text
    with pytest.raises(ValueError, match="no numeric metric"):
        rs.write_run_summary(run, metrics={"ckpt_path": "a"})


def test_loss_curve_keys_prefer_step_values():
    series = {
        k: rs.Series()
        for k in ("train/loss_step", "train/loss_epoch", "train/loss_mask_epoch", "val/APp50")
    }
    assert rs.loss_curve_keys(series) == ["train/loss_mask_epoch", "train/loss_step"]


def test_moving_average_matches_numpy():
    values = list(np.random.default_rng(0).random(40))
    got = rs.moving_average(values, 7)
    csum = np.cumsum(np.r_[0.0, values])
    want = [(csum[i + 1] - csum[max(0, i + 1 - 7)]) / min(i + 1, 7) for i in range(40)]
    assert np.allclose(got, want)


def test_plot_curves_long_run(tmp_path):
    steps = list(range(0, 500))
    series = {
        "train/loss_step": rs.Series(steps, [0.0] * 500, [1.0 / (1 + s) + 0.01 for s in steps])
    }
    out = rs.plot_curves(series, tmp_path / "c.png")
    assert out is not None and cv2.imread(str(out)) is not None
    assert rs.plot_curves({"other": rs.Series([1], [0], [1.0])}, tmp_path / "d.png") is None


def test_cli_reports_bad_input_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "smp_parsing.run_summary", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "run directory not found" in proc.stderr and "Traceback" not in proc.stderr
