"""The prepared GPU check (``benchmarks/gpu_check.py``): its parts, and its CPU dry run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from benchmarks.common import REPO_ROOT

from benchmarks import gpu_check

CPU = torch.device("cpu")
PHASES = ["gpu_tests", "inference", "training", "syncs", "synthetic_training"]


def test_count_syncs_uses_the_project_sync_counter():
    """gpu_check counts with utils/sync_counter.SyncCounter (its kinds are tested in
    tests/models/test_syncs.py), the backward included."""
    w = torch.ones(3, requires_grad=True)

    def step():
        loss = (w * torch.tensor([1.0, -2.0, 3.0])).abs().sum()
        loss.backward()

    assert gpu_check.count_syncs(step, CPU)["counted"] == 0
    masked = gpu_check.count_syncs(lambda: (w[w > 0] * 2).sum().backward(), CPU)
    assert masked["counted_by_kind"] == {"bool_index": 2}  # forward index, backward index_put


def test_count_syncs_on_cpu_has_no_cuda_figure():
    x = torch.arange(5.0)
    result = gpu_check.count_syncs(lambda: x.sum().item(), CPU)
    assert result == {
        "cuda_syncs": None,
        "counted": 1,
        "counted_by_kind": {"item": 1},
        "counted_by_op": {"aten._local_scalar_dense": 1},
    }


def _check(budget_s: float, caps: dict[str, float] | None = None) -> gpu_check.Check:
    settings = gpu_check.Settings(**{**vars(gpu_check.DRY), "phase_caps_s": caps or {}})
    return gpu_check.Check(settings, CPU, budget_s)


def test_a_failed_phase_is_reported_and_the_next_one_runs():
    check = _check(60)

    def broken(limit):
        raise RuntimeError("CUDA out of memory (simulated)")

    check.run("inference", broken, min_s=0)
    check.run("syncs", lambda limit: {"figure": 1}, min_s=0)
    assert check.phases["inference"]["status"] == "failed"
    assert "RuntimeError: CUDA out of memory" in check.phases["inference"]["error"]
    assert "broken" in check.phases["inference"]["traceback"]
    assert check.phases["syncs"] == {
        "figure": 1,
        "status": "ok",
        "seconds": pytest.approx(0, abs=1),
    }


def test_a_phase_past_its_cap_times_out_and_the_budget_skips_the_rest():
    check = _check(60, caps={"training": 0.3})

    def hangs(limit):
        assert limit == pytest.approx(0.3)
        while True:  # a Python loop: the alarm interrupts it
            time.sleep(0.01)

    check.run("training", hangs, min_s=0)
    assert check.phases["training"]["status"] == "timeout"
    assert check.phases["training"]["seconds"] < 5
    check.budget_s = check.elapsed() + 5  # 5 s left
    check.run("synthetic_training", lambda limit: {}, min_s=30)
    assert check.phases["synthetic_training"]["status"] == "skipped"
    assert "time budget" in check.phases["synthetic_training"]["error"]


def test_a_failing_clean_up_is_reported_and_does_not_stop_the_check(monkeypatch):
    def broken_release(device):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(gpu_check, "_release_memory", broken_release)
    check = _check(60)
    check.run("inference", lambda limit: {}, min_s=0)  # must not raise
    assert "after the phase: RuntimeError: CUDA error" in check.phases["inference"]["error"]


def test_a_phase_may_fail_its_own_check():
    check = _check(60)
    check.run("synthetic_training", lambda limit: {"status": "failed", "error": "loss up"}, min_s=0)
    assert check.phases["synthetic_training"]["status"] == "failed"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("19 skipped in 7.82s", {"skipped": 19}),
        (
            "17 passed, 2 skipped, 527 deselected in 62.71s",
            {"passed": 17, "skipped": 2, "deselected": 527},
        ),  # fmt: skip
        ("1 failed, 15 passed, 1 error in 32.98s", {"failed": 1, "passed": 15, "errors": 1}),
        ("no tests ran in 0.03s", {}),
    ],
)
def test_parse_pytest_summary(line, expected):
    output = f"SKIPPED [1] tests/gpu/test_x.py:3: needs a CUDA device\n{line}\n"
    zeros = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0, "deselected": 0}
    assert gpu_check.parse_pytest_summary(output) == {**zeros, **expected}


def test_read_loss_curve_takes_the_step_rows(tmp_path):
    folder = tmp_path / "csv" / "version_0"
    folder.mkdir(parents=True)
    (folder / "metrics.csv").write_text(
        "epoch,step,train/loss_epoch,train/loss_step,val/APp50\n"
        "0,0,,5.0,\n0,1,,4.5,\n0,1,4.75,,\n0,1,,,0.1\n1,2,,4.0,\n"
    )
    assert gpu_check.read_loss_curve(tmp_path) == [(0, 5.0), (1, 4.5), (2, 4.0)]
    assert gpu_check.read_logged(tmp_path, "val/APp50") == [(1, 0.1)]
    with pytest.raises(FileNotFoundError):
        gpu_check.read_loss_curve(tmp_path / "csv" / "nothing")


def test_table_shows_every_check_and_why_one_did_not_pass():
    result = {
        "phases": {
            "gpu_tests": {
                "status": "failed",
                "passed": 17,
                "failed": 2,
                "error": "FAILED tests/gpu/test_dcn_cuda.py::x | y",
            },  # fmt: skip
            "inference": {"status": "timeout", "error": "ran past its limit of 120 s"},
            "syncs": {
                "status": "ok",
                "training_step": {"cuda_syncs": 7, "counted": 9},
                "decode": {"cuda_syncs": 2, "counted": 1},
            },  # fmt: skip
        }
    }
    table = gpu_check.render_table(result)
    lines = table.splitlines()
    assert len(lines) == 2 + 5 and all(ln.count("|") == 6 for ln in lines)
    assert "17 passed, 2 failed" in lines[2] and "failed: FAILED tests/gpu" in lines[2]
    assert "timeout: ran past" in lines[3] and "124 / 132 ms" in lines[3]
    assert "skipped" in lines[4]  # training never ran
    assert "7 CUDA syncs (9 counted) / 2 CUDA syncs (1 counted)" in lines[5]
    assert lines[6].endswith("| skipped |")


def test_syncs_phase_in_process_dry_run():
    result = gpu_check.run(dry_run=True, only=["syncs"])
    assert list(result["phases"]) == ["syncs"]
    syncs = result["phases"]["syncs"]
    assert syncs["status"] == "ok", syncs.get("traceback")
    assert syncs["training_step"]["cuda_syncs"] is None  # no CUDA here
    # the counts of tests/models/test_syncs.py on gpu_check's own workload (SMP-R50* at toy
    # widths): 5 CUDA syncs per step (+2 CPU-only class-range reads), as on the H200
    # (benchmarks/records/2026-11-29_h200), and 12 per decode (the H200's 14 less the two
    # host-to-device copies removed since)
    assert 0 < syncs["training_step"]["counted"] <= 7, syncs["training_step"]
    assert 0 < syncs["decode"]["counted"] <= 12, syncs["decode"]
    assert sum(syncs["decode"]["counted_by_op"].values()) == syncs["decode"]["counted"]
    assert result["ok"] and "dry run" in result["note"]


@pytest.mark.slow
def test_dry_run_end_to_end(tmp_path):
    """``python -m benchmarks.gpu_check --dry-run``: every phase runs and passes on the CPU."""
    out = tmp_path / "check.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--dry-run", "--json", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["dry_run"] and result["device"] == "cpu" and result["ok"]
    assert result["elapsed_s"] < result["budget_s"]
    phases = result["phases"]
    assert list(phases) == PHASES
    assert all(ph["status"] == "ok" and ph["seconds"] > 0 for ph in phases.values())
    # the gpu tests were collected and skipped themselves (no CUDA), none failed
    tests = phases["gpu_tests"]
    assert tests["skipped"] >= 19 and tests["failed"] == tests["errors"] == tests["passed"] == 0
    rows = {(r["label"], r["precision"]): r for r in phases["inference"]["rows"]}
    assert set(rows) == {("SMP-R50*", "fp32"), ("SMP-R101*", "fp32")}
    for row in rows.values():
        assert row["smp_persons"] == 3  # the oracle decode found every person
        assert 0 < row["forward_ms"] and 0 < row["decode_ms"] and 0 < row["total_ms"]
        assert row["fps_total"] == pytest.approx(1e3 / row["total_ms"])
    assert rows["SMP-R50*", "fp32"]["mask_rcnn_detections"] == 20  # the peer, same rounds
    assert rows["SMP-R50*", "fp32"]["paper_v100_ms"] == 124.0
    assert "mask_rcnn_ms" not in rows["SMP-R101*", "fp32"]
    training = phases["training"]
    for side in ("smp", "smp_fp32", "mask_rcnn"):  # smp_fp32: SMP without autocast, same rounds
        assert training[f"{side}_images_per_s"] > 0
        assert training[f"{side}_peak_gpu_mib"] is None  # no GPU memory on the CPU
        assert len(training[f"{side}_losses"]) == 1
    # the same weights and batch: without autocast on the CPU, the same first loss
    assert training["smp_fp32_losses"] == training["smp_losses"]
    syncs = phases["syncs"]
    assert syncs["training_step"]["counted"] > 0 and syncs["decode"]["cuda_syncs"] is None
    synthetic = phases["synthetic_training"]
    assert synthetic["global_step"] == synthetic["steps"] == 12
    assert synthetic["logged_steps"] == 12 and synthetic["finite"] and synthetic["decreasing"]
    assert synthetic["loss_last_quarter"] < synthetic["loss_first_quarter"]
    # a validation after each epoch of 4 steps that ends before max_steps (2 here), timed by
    # the InferenceTimer callback
    assert len(synthetic["val_fps"]) == len(synthetic["val_APp50"]) >= 2
    assert all(fps > 0 for fps in synthetic["val_fps"])
    # one table: printed, in the JSON and beside it as Markdown
    table = result["table"]
    assert table in proc.stdout
    assert "training step SMP-R50* fp32 (same rounds)" in table
    assert Path(out.with_suffix(".md")).read_text().strip() == table
    # header + separator, then 2 inference rows and 2 training rows (the fp32 one beside)
    assert sum(ln.startswith("|") for ln in table.splitlines()) == 2 + 7
