"""Helpers of the benchmarks: alternating timing, synthetic persons, oracle decode workload."""

from __future__ import annotations

import json

import pytest
import torch
from benchmarks.common import (
    TINY_OVERRIDES,
    Timing,
    bench_parser,
    build_mask_rcnn,
    build_smp,
    metas_for,
    oracle_outputs,
    person_maps,
    smp_config,
    time_alternating,
    write_figures,
)


def test_time_alternating_interleaves_and_skips_warmup():
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    timings = time_alternating(fns, warmup=2, repeats=3, device=torch.device("cpu"))
    assert calls == ["a", "b"] * 5  # one of each per round, in order
    assert [len(t.runs) for t in timings.values()] == [3, 3]
    assert all(r >= 0 for t in timings.values() for r in t.runs)
    with pytest.raises(ValueError, match="repeats"):
        time_alternating(fns, warmup=0, repeats=0, device=torch.device("cpu"))


def test_timing_median():
    assert Timing([0.3, 0.1, 0.2]).ms == pytest.approx(200.0)


@pytest.mark.parametrize("num_persons", [0, 1, 2, 7, 20])
def test_person_maps_disjoint_persons_with_parts(num_persons):
    maps = person_maps(num_persons, 160, 240, num_classes=59, parts_per_person=4)
    assert maps.shape == (num_persons, 160, 240) and maps.dtype == torch.uint8
    if num_persons:
        assert int((maps > 0).sum(0).max()) == 1  # no pixel owned twice
        for person in maps:
            labels = person.unique()
            assert len(labels) == 5 and int(labels.max()) < 59  # background + 4 parts


def test_person_maps_too_many_persons():
    with pytest.raises(ValueError, match="do not fit"):
        person_maps(200, 64, 64)


def test_smp_config_uses_conf_presets():
    cfg = smp_config("r101_dcn", overrides={"part_head.tower_width": 64})
    assert cfg.backbone.depth == 101 and cfg.backbone.pretrained == "none"
    assert list(cfg.backbone.dcn_stages) == [False, True, True, True]
    assert cfg.part_head.tower_width == 64
    with pytest.raises(FileNotFoundError, match="backbone preset"):
        smp_config("r999")


def test_smp_config_is_the_network_training_composes():
    from omegaconf import OmegaConf

    from smp_parsing.utils.compose import compose_config

    for backbone, grid in (("r50", "2x"), ("r18", None), ("r101_dcn", "0.5x")):
        overrides = [f"backbone={backbone}"] + ([f"grid={grid}"] if grid else [])
        trained = compose_config("train", overrides).model.net
        trained = OmegaConf.to_container(trained, resolve=False)
        trained["num_classes"], trained["backbone"]["pretrained"] = 59, "none"
        assert OmegaConf.to_container(smp_config(backbone, grid=grid)) == trained


def test_oracle_outputs_decode_every_person():
    net = build_smp("r18", overrides=TINY_OVERRIDES).eval()
    maps = person_maps(3, 96, 128, num_classes=net.num_classes)
    out = oracle_outputs([maps], net)
    assert out.mask_feat.shape[1] == max(net.mask_feature.out_channels, out.kernels[0].shape[1])
    preds = net.predict(out, metas_for(96, 128))
    assert len(preds[0]["scores"]) == 3


def test_mask_rcnn_returns_fixed_detections():
    peer = build_mask_rcnn(min_size=64, max_size=96).eval()
    with torch.inference_mode():
        out = peer([torch.randn(3, 64, 96)])
    assert len(out[0]["scores"]) == 20 and out[0]["masks"].shape[-2:] == (64, 96)


def test_bench_parser_and_write_figures(tmp_path):
    parser = bench_parser("First paragraph.\n\nMore text.")
    assert parser.description == "First paragraph."
    args = parser.parse_args(["--json", str(tmp_path / "f.json")])
    write_figures(args.json, {"a": 1.5})
    assert json.loads((tmp_path / "f.json").read_text()) == {"a": 1.5}
    write_figures(parser.parse_args([]).json, {"a": 2})  # no --json: nothing written
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]
