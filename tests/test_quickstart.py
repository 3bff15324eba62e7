"""The `make train` pipeline: its helpers, and (slow) the whole pipeline at toy size."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from smp_parsing import quickstart


def test_pick_val_images_links_the_first_ids(tmp_path):
    root = tmp_path / "mhp"
    (root / "list").mkdir(parents=True)
    (root / "val" / "images").mkdir(parents=True)
    (root / "list" / "val.txt").write_text("7\n3\n9\n")
    for image_id in ("7", "3", "9"):
        (root / "val" / "images" / f"{image_id}.jpg").write_bytes(b"x")
    dest = quickstart.pick_val_images(root, 2, tmp_path / "inputs")
    assert sorted(p.name for p in dest.iterdir()) == ["3.jpg", "7.jpg"]
    assert all(p.is_symlink() for p in dest.iterdir())


def test_resolved_data_dir_reads_the_job_config(tmp_path):
    """The saved config of a job run with a literal paths.root_dir (as the pipeline runs them)."""
    job = tmp_path / "train"
    (job / ".hydra").mkdir(parents=True)
    cfg = {
        "paths": {"root_dir": str(tmp_path), "data_dir": "${paths.root_dir}/data/"},
        "data": {"data_dir": "${paths.data_dir}/syn"},
        "hydra_only": "${hydra:runtime.cwd}",  # unresolvable outside Hydra, never touched
    }
    OmegaConf.save(OmegaConf.create(cfg), job / ".hydra" / "config.yaml")
    assert quickstart.resolved_data_dir(job, tmp_path) == tmp_path / "data" / "syn"


def test_failed_stage_stops_the_pipeline_with_its_name(tmp_path):
    with pytest.raises(SystemExit) as info:
        quickstart.run_stage("broken", ["smp_parsing.no_such_module"], tmp_path)
    assert info.value.code != 0


def test_missing_stage_output_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        quickstart.read_json(tmp_path / "metrics.json")


@pytest.mark.slow
def test_pipeline_end_to_end_at_toy_size(tmp_path, monkeypatch):
    """train -> evaluate -> predict -> report on 8 tiny synthetic images."""
    monkeypatch.chdir(tmp_path)
    os.environ.pop("PROJECT_ROOT", None)
    report = quickstart.main(
        [
            "trainer.max_epochs=1",
            "data.num_train=8",
            "data.num_val=4",
            f"data.data_dir={tmp_path / 'syn'}",
            "data.generator.size=128",
            "data.train_transforms.resize.short_sides=[96]",
            "data.test_transforms.resize.short_sides=[96]",
        ]
    )
    assert report.is_file()
    run_dir = report.parent.parent
    assert (run_dir / "eval" / "metrics.json").is_file()
    # evaluate and predict ran from the checkpoint alone: no experiment=, yet the run's own data set
    for stage in ("eval", "predict"):
        ran = (run_dir / stage / ".hydra" / "overrides.yaml").read_text()
        assert "experiment=" not in ran, ran
    evaluated = json.loads((run_dir / "eval" / "metrics.json").read_text())["metrics"]
    assert evaluated["num_images"] == 4
    assert len(list((run_dir / "predictions" / "overlays").glob("*.png"))) == 4
    assert (run_dir / "report" / "curves.png").is_file()
    assert Path(run_dir / "predictions" / "scores.json").is_file()
