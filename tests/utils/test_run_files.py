"""``utils/run_files``: results files are replaced atomically, never left torn."""

from __future__ import annotations

import json

import pytest

import smp_parsing.utils.run_files as run_files


def test_write_json_atomic_replaces_and_converts(tmp_path):
    path = run_files.write_json_atomic(tmp_path / "sub" / "m.json", {"a": float("nan"), "b": 1})
    assert json.loads(path.read_text()) == {"a": None, "b": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.json"]


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "report.md"
    path.write_text("the previous report")

    def torn_open(file, mode="r", *args, **kwargs):
        handle = open(file, mode, *args, **kwargs)
        real_write = handle.write

        def write(data):
            real_write(data[: len(data) // 2])
            raise OSError("No space left on device")

        handle.write = write
        return handle

    monkeypatch.setattr(run_files, "open", torn_open, raising=False)
    with pytest.raises(OSError, match="No space left"):
        run_files.write_text_atomic(path, "a new report " * 100)
    assert path.read_text() == "the previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_metrics_summary_is_the_one_metrics_json_layout() -> None:
    from smp_parsing.utils.run_files import metrics_summary, split_metrics

    val, test = {"APp50": 0.25, "fps": 3.0}, {"APp50": 0.5, "APpvol": None}
    train = metrics_summary("train", {"val": val, "test": test}, best_model_path="b.ckpt")
    assert train["task"] == "train" and train["best_model_path"] == "b.ckpt"
    assert train["val"] == val and train["test"] == test
    # the headline split is test when scored, else the only one
    assert train["split"] == "test" and train["metrics"] == test
    evaluated = metrics_summary("eval", {"val": val}, ckpt_path="x.ckpt")
    assert evaluated["split"] == "val" and evaluated["metrics"] == evaluated["val"] == val
    # every reader takes a split the same way, falling back to the other one
    assert split_metrics(evaluated, "test") == val
    assert split_metrics(train, "test") == {"APp50": 0.5}  # None (non-finite) left out
    assert split_metrics({"task": "train"}, "val") is None
    with pytest.raises(ValueError, match=r"\['metrics'\] are keys of the layout"):
        metrics_summary("eval", {"val": val}, metrics={})
