"""``smp_parsing.evaluate``: a checkpoint scored on a split, table on stdout, metrics.json."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import LOW_THRESHOLDS, compose_config, tiny_data_overrides
from smp_parsing.evaluate import evaluate, format_metrics_table


def eval_overrides(run_dir, synthetic_root, *extra: str) -> list[str]:
    return [
        f"ckpt_path={run_dir}/checkpoints/last.ckpt",
        *tiny_data_overrides(synthetic_root),
        "extras.print_config=false",
        *extra,
    ]


def test_evaluate_prints_table_and_writes_metrics_json(trained_run, synthetic_root, tmp_path,
                                                       capsys) -> None:  # fmt: skip
    # no BN folding (the default, said explicitly): the weights are compared with the checkpoint
    cfg = compose_config("eval", eval_overrides(trained_run, synthetic_root, *LOW_THRESHOLDS,
                                                "inference.fold_batchnorm=false"), tmp_path)  # fmt: skip
    metric_dict, objects = evaluate(cfg)
    out = capsys.readouterr().out
    assert "test metrics of" in out and "APp50" in out and "PCP" in out
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["split"] == "test"
    assert saved["metrics"]["APp50"] == pytest.approx(metric_dict["test/APp50"])
    assert set(saved["metrics"]) >= {"APp50", "APpvol", "PCP50", "mIoU", "fps", "APp@0.9"}
    assert (
        saved["task"] == "eval" and saved["split"] == "test" and saved["test"] == saved["metrics"]
    )
    # the stored network config was used: same architecture as trained, weights loaded strictly
    ckpt = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    model = objects["model"]
    assert model.model_config["net"]["fpn_channels"] == 32
    for k, v in ckpt["state_dict"].items():
        assert torch.equal(model.state_dict()[k], v)
    # thresholds overridden at evaluation time only
    assert model.net.test_cfg["ctr_score_thr"] == 0.0


def test_evaluate_val_split_equals_test_split_on_synthetic(trained_run, synthetic_root,
                                                           tmp_path) -> None:  # fmt: skip
    """The synthetic set has no separate test GT: test falls back to val and must agree."""
    results = {}
    for split in ("val", "test"):
        cfg = compose_config(
            "eval", eval_overrides(trained_run, synthetic_root, f"split={split}", *LOW_THRESHOLDS),
            tmp_path / split,
        )  # fmt: skip
        metric_dict, _ = evaluate(cfg)
        results[split] = {k.split("/", 1)[1]: v for k, v in metric_dict.items() if "fps" not in k}
    assert results["val"] == results["test"]
    assert results["val"]["mIoU"] > 0


def test_evaluate_scores_the_network_as_trained_unless_deploy_is_asked(trained_run, synthetic_root,
                                                                     tmp_path) -> None:  # fmt: skip
    """BN folding and Winograd are opt-in for evaluate (``inference=deploy``)."""
    from torch import nn

    from smp_parsing.models.deploy import WinogradConv2d

    def layers(extra: list[str], name: str) -> tuple[int, int]:
        cfg = compose_config("eval", eval_overrides(trained_run, synthetic_root, "split=val",
                                                    *extra), tmp_path / name)  # fmt: skip
        _, objects = evaluate(cfg)
        modules = list(objects["model"].net.modules())
        return (sum(isinstance(m, nn.BatchNorm2d) for m in modules),
                sum(isinstance(m, WinogradConv2d) for m in modules))  # fmt: skip

    ckpt = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    trained_bns = sum(k.endswith(".running_mean") for k in ckpt["state_dict"])
    batchnorms, winograds = layers([], "as_trained")
    assert batchnorms == trained_bns > 0 and winograds == 0
    # the tiny net's towers are 32 wide: lower the Winograd threshold so that some convert
    deploy = layers(["inference=deploy", "inference.winograd_min_channels=16"], "deploy")
    assert deploy[0] < batchnorms and deploy[1] > 0


def test_evaluate_errors_are_clear(trained_run, synthetic_root, tmp_path) -> None:
    cfg = compose_config("eval", eval_overrides(trained_run, synthetic_root, "split=train"),
                         tmp_path)  # fmt: skip
    with pytest.raises(ValueError, match="split must be one of"):
        evaluate(cfg)
    bad = tmp_path / "broken.ckpt"
    bad.write_bytes(b"not a checkpoint")
    cfg = compose_config("eval", [*eval_overrides(trained_run, synthetic_root),
                                  f"ckpt_path={bad}"], tmp_path)  # fmt: skip
    with pytest.raises(ValueError, match="broken.ckpt: not a readable checkpoint"):
        evaluate(cfg)
    # a network of 59 classes cannot score a 15-class data set: said before any data is read
    cfg = compose_config("eval", [f"ckpt_path={trained_run}/checkpoints/last.ckpt",
                                  "data=densepose", "extras.print_config=false"], tmp_path)  # fmt: skip
    with pytest.raises(ValueError, match=r"last\.ckpt: the network predicts 59 classes "
                                         r"\(synthetic\), the data set 'densepose' has 15"):  # fmt: skip
        evaluate(cfg)


def test_evaluate_from_the_checkpoint_alone_scores_the_runs_data(trained_run, synthetic_root,
                                                                 tmp_path) -> None:  # fmt: skip
    """``evaluate ckpt_path=X`` alone = the run's data set, preset and test transform."""
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    results = {}
    for name, data in (("explicit", tiny_data_overrides(synthetic_root)), ("alone", [])):
        overrides = [f"ckpt_path={ckpt}", *data, *LOW_THRESHOLDS, "split=val",
                     "extras.print_config=false"]  # fmt: skip
        metric_dict, objects = evaluate(compose_config("eval", overrides, tmp_path / name))
        results[name] = {k: v for k, v in metric_dict.items() if not k.endswith("fps")}
        # the tiny run's set and test size, not the synthetic preset's default (320 px)
        assert objects["datamodule"].data_dir == synthetic_root
        assert list(objects["data_cfg"].test_transforms.resize.short_sides) == [64]
    assert results["alone"] == results["explicit"]
    assert results["alone"]["val/mIoU"] > 0
    saved = json.loads((tmp_path / "alone" / "metrics.json").read_text())
    assert saved["dataset"] == "synthetic" and saved["data_dir"] == str(synthetic_root)


def test_evaluate_older_checkpoint_without_metadata_warns(trained_run, synthetic_root, tmp_path,
                                                          caplog) -> None:  # fmt: skip
    ckpt = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    del ckpt["smp_inference"]
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    cfg = compose_config("eval", [*eval_overrides(trained_run, synthetic_root, *LOW_THRESHOLDS,
                                                  "split=val"), f"ckpt_path={old}"], tmp_path)  # fmt: skip
    metric_dict, _ = evaluate(cfg)
    assert "old.ckpt carries no smp_inference" in caplog.text
    assert metric_dict["val/mIoU"] > 0


def test_format_metrics_table() -> None:
    table = format_metrics_table(
        {"APp50": 0.5, "APpvol": 0.25, "APp@0.1": 1.0, "APp@0.5": 0.5, "PCP@0.1": 0.75,
         "PCP@0.5": 0.125, "fps": 12.0}, "title")  # fmt: skip
    lines = table.splitlines()
    assert lines[0] == "title"
    assert any(line.split() == ["APp50", "0.5000"] for line in lines)
    assert lines[-2].split() == ["APp", "1.0000", "0.5000"]
    assert lines[-1].split() == ["PCP", "0.7500", "0.1250"]


def test_evaluate_with_another_data_dir_reads_that_folder(trained_run, synthetic_root,
                                                          tmp_path) -> None:  # fmt: skip
    """``data.data_dir=Y`` moves every path derived from it (``val_dataset.root`` too).

    The checkpoint stores the run's resolved data config: the dataset roots are absolute paths
    inside the run's data directory, and used to stay there when only ``data.data_dir`` moved.
    """
    other = tmp_path / "other_set"
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    base = [f"ckpt_path={ckpt}", *LOW_THRESHOLDS, "split=val", "extras.print_config=false"]
    # another tiny set: the run's recipe with 3 val images instead of 2, generated in `other`
    metric_dict, objects = evaluate(compose_config(
        "eval", [*base, f"data.data_dir={other}", "data.num_val=3"], tmp_path / "moved"))  # fmt: skip
    data_cfg = objects["data_cfg"]
    assert data_cfg.data_dir == str(other)
    assert data_cfg.val_dataset.root == data_cfg.train_dataset.root == str(other)
    assert metric_dict["val/num_images"] == 3  # the run's own set has 2
    # an explicit root still wins over the data directory it would follow
    metric_dict, objects = evaluate(compose_config(
        "eval", [*base, f"data.val_dataset.root={synthetic_root}", f"data.data_dir={other}",
                 "data.num_val=3"], tmp_path / "explicit_root"))  # fmt: skip
    assert objects["data_cfg"].val_dataset.root == str(synthetic_root)
    assert objects["data_cfg"].train_dataset.root == str(other)
    assert metric_dict["val/num_images"] == 2
