"""Each benchmark at toy sizes (R18, narrow heads, tiny images): the code paths cannot rot.

Device-agnostic paths (AMP autocast, channels-last, synchronisation) run here on the CPU.
"""

from __future__ import annotations

import functools
import json

import pytest
import torch
from benchmarks.common import TINY_OVERRIDES

from benchmarks import bench_inference, bench_pipeline, bench_scaling, bench_training, run_all

TOY = dict(warmup=0, repeats=1, device="cpu", overrides=TINY_OVERRIDES)


@pytest.mark.parametrize(("amp", "channels_last"), [(False, False), (True, True)])
def test_inference_toy(amp, channels_last):
    result = bench_inference.run(
        backbones=["r18"], height=64, width=96, persons=2, amp=amp,
        channels_last=channels_last, mask_rcnn_with=None, **TOY,
    )  # fmt: skip
    (row,) = result["rows"]
    assert row["smp_persons"] == 2  # the oracle decode finds both persons
    for key in ("backbone_fpn_ms", "forward_ms", "decode_ms", "total_ms"):
        assert row[key] > 0
    assert row["amp_bf16"] is amp and row["channels_last"] is channels_last
    assert "no CUDA" in result["gpu_note"]
    assert result["machine"]["torch_threads"] == torch.get_num_threads()


def test_inference_with_mask_rcnn_ratio():
    result = bench_inference.run(
        backbones=["r18"], height=64, width=96, persons=2, mask_rcnn_with="r18", **TOY
    )
    (row,) = result["rows"]
    assert row["mask_rcnn_detections"] == 20 and "warning" not in row
    assert row["ratio_total_vs_mask_rcnn"] == pytest.approx(row["total_ms"] / row["mask_rcnn_ms"])
    # the inference switches of conf/predict.yaml, and the variants timed in the same rounds
    assert row["switches"]["fold_batchnorm"] and row["prepared"]["folded_bn"] > 0
    for name in ("total_stock", "total_folded", "backbone_fpn_stock", "mask_rcnn_converted"):
        assert row[f"{name}_ms"] > 0
    assert row["mask_rcnn_converted_detections"] == 20
    assert row["mask_rcnn_converted_layers"]["winograd_convs"] > 0  # FPN / RPN / mask head


def test_scaling_toy():
    result = bench_scaling.run(backbone="r18", sizes=[(64, 96), (96, 128)], persons=[1, 3], **TOY)
    assert len(result["rows"]) == 4
    assert result["pixel_growth"]["pixel_ratio"] == pytest.approx(96 * 128 / (64 * 96))
    assert set(result["person_growth"]) == {"64x96", "96x128"}
    assert set(result["person_growth_without_mask_product"]) == {"64x96", "96x128"}
    for row in result["rows"]:
        assert row["part_masks"] > 0  # the oracle decode computes a mask per found part
        assert row["decode_rest_ms"] == pytest.approx(row["decode_ms"] - row["mask_product_ms"])


def test_training_toy_with_mask_rcnn():
    result = bench_training.run(
        backbone="r18", batch=2, height=64, width=64, persons=2, target_images=2,
        memory=False, **TOY,
    )  # fmt: skip
    assert result["smp_step_ms"] > 0 and result["mask_rcnn_step_ms"] > 0
    assert 0 < result["targets_share_of_step"]


def test_training_step_updates_weights():
    net = bench_training.build_side("smp", "r18", 64, 64, TINY_OVERRIDES)
    images, parsing = bench_training.make_batch(2, 64, 64, 2, num_classes=59,
                                                device=torch.device("cpu"))  # fmt: skip
    before = net.part_head.cate_out.weight.detach().clone()
    step = bench_training.smp_step_fn(net, images, parsing, device=torch.device("cpu"), amp=False)
    loss = step()
    assert loss == loss and loss > 0  # finite, positive
    assert not torch.equal(before, net.part_head.cate_out.weight)


def test_mask_rcnn_targets_boxes():
    maps = torch.zeros(2, 10, 12, dtype=torch.uint8)
    maps[0, 2:5, 3:7] = 4
    maps[1, 6:10, 0:2] = 9
    (target,) = bench_training.mask_rcnn_targets([maps])
    assert target["boxes"].tolist() == [[3, 2, 7, 5], [0, 6, 2, 10]]
    assert target["masks"].sum().item() == 12 + 8


@pytest.mark.slow  # a fresh interpreter imports torch + torchvision (~20-40 s here)
def test_memory_in_fresh_process():
    figures = bench_training.memory_in_subprocess(
        "smp", threads=1, backbone="r18", batch=1, height=64, width=64, persons=1,
        device="cpu", overrides=TINY_OVERRIDES,
    )  # fmt: skip
    assert figures["peak_rss_mib"] >= figures["rss_before_steps_mib"] > 50


def test_pipeline_toy(tmp_path):
    result = bench_pipeline.run(images=5, size=96, batch=2, workers=1, epochs=1,
                                root=tmp_path / "synthetic")  # fmt: skip
    assert result["timed_images"] == 3  # 5 images, the first batch of 2 not timed
    assert result["images_per_s"] > 0
    assert result["batch_shapes"] == [(96, 96)] or all(
        h % 32 == 0 and w % 32 == 0 for h, w in result["batch_shapes"]
    )


def test_run_all_markdown_and_goals(tmp_path, monkeypatch):
    settings = run_all.Settings(
        backbones=("r18",), inference_size=(64, 96), scaling_sizes=((64, 96), (96, 128)),
        persons=(1, 2), train_size=(64, 64), train_batch=2, target_images=2,
        pipeline_images=4, metric_images=2, warmup=0, repeats=1, train_repeats=1,
    )  # fmt: skip
    monkeypatch.setattr(run_all, "QUICK", settings)
    tiny = functools.partial(run_all.run_all, overrides=TINY_OVERRIDES, memory=False)
    monkeypatch.setattr(run_all, "run_all", tiny)
    results = run_all.main(["--quick", "--out", str(tmp_path), "--threads", "1",
                            "--only", "inference", "scaling", "training", "pipeline", "metric"])  # fmt: skip
    markdown = (tmp_path / "quick.md").read_text()
    for title in ("### Inference", "### Cost growth", "### Training step", "### Input pipeline",
                  "### Metric", "### Goals"):  # fmt: skip
        assert title in markdown
    assert json.loads((tmp_path / "quick.json").read_text())["mode"] == "quick"
    names = [g[0] for g in run_all.goals(results)]
    assert any("Mask R-CNN" in n for n in names) and any("targets" in n for n in names)


def test_winograd_toy():
    from benchmarks import bench_winograd

    result = bench_winograd.run(shapes=[(8, 8, 9, 11, "toy"), (8, 4, 14, 14, "batch 20")],
                                warmup=0, repeats=1, channels_last=True)  # fmt: skip
    assert [r["shape"] for r in result["rows"]] == ["8->8 @ 9x11", "8->4 @ 14x14 (batch 20)"]
    assert all(r["rel_err"] < 1e-4 and r["ratio"] > 0 for r in result["rows"])
