"""The decode on CUDA equals the decode on the CPU for the same head outputs.

Two workloads: the outputs a perfect network would give for blocky persons (the oracle of
``tests/models/test_roundtrip.py``: every person found, exact maps) and the raw outputs of a
random network with the thresholds at 0 (many overlapping candidates, matrix NMS at work).
"""

from __future__ import annotations

import pytest
import torch
from benchmarks.common import TINY_OVERRIDES, build_smp, metas_for, oracle_outputs, person_maps

from smp_parsing.models.outputs import SMPOutputs

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CUDA = torch.device("cuda")


def _to(out: SMPOutputs, device: torch.device) -> SMPOutputs:
    return out.apply(lambda t: t.to(device))


def _decode_both(net, out_cpu, metas):
    with torch.inference_mode():
        preds_cpu = net.predict(out_cpu, metas)
        net.to(CUDA)
        preds_gpu = net.predict(_to(out_cpu, CUDA), metas)
    for pred in preds_gpu:
        assert pred["parsing"].is_cuda and pred["scores"].is_cuda
    return preds_cpu, [{k: v.cpu() for k, v in p.items()} for p in preds_gpu]


def test_oracle_decode_cuda_equals_cpu():
    net = build_smp("r18", overrides=TINY_OVERRIDES).eval()
    height, width = 256, 384
    maps = [person_maps(n, height, width, num_classes=net.num_classes, seed=n) for n in (3, 7)]
    out = oracle_outputs(maps, net)
    preds_cpu, preds_gpu = _decode_both(net, out, metas_for(height, width, batch=2))
    for maps_i, cpu, gpu in zip(maps, preds_cpu, preds_gpu):
        assert len(cpu["scores"]) == len(maps_i)  # the oracle finds everyone
        torch.testing.assert_close(gpu["scores"], cpu["scores"], rtol=1e-5, atol=1e-6)
        assert torch.equal(gpu["parsing"], cpu["parsing"])


def test_random_network_decode_cuda_equals_cpu():
    zero = {f"test_cfg.{k}": 0.0 for k in ("ctr_score_thr", "cate_score_thr", "cand_score_thr",
                                           "update_thr")}  # fmt: skip
    # at most 10 persons of 100 parts each: the CPU side of the comparison stays quick
    caps = {"test_cfg.max_humans": 10, "test_cfg.nms_pre": 100}
    net = build_smp("r18", overrides={**TINY_OVERRIDES, **zero, **caps}, seed=3).eval()
    height, width = 192, 256
    images = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out = net(images)
    preds_cpu, preds_gpu = _decode_both(net, out, metas_for(height, width, batch=2))
    assert sum(len(p["scores"]) for p in preds_cpu) > 0  # the thresholds at 0 let persons out
    for cpu, gpu in zip(preds_cpu, preds_gpu):
        assert gpu["parsing"].shape == cpu["parsing"].shape
        torch.testing.assert_close(gpu["scores"], cpu["scores"], rtol=1e-4, atol=1e-6)
        # a random network scores its persons within 1e-4 of each other, so two of them may
        # swap places: each CUDA person must have a CPU person of the same score and map (a
        # pixel whose mask probability sits on mask_thr may round either way)
        for score, person in zip(gpu["scores"], gpu["parsing"]):
            same_score = (cpu["scores"] - score).abs() <= 1e-4 * score.abs() + 1e-6
            agree = (cpu["parsing"][same_score] == person).flatten(1).float().mean(1)
            assert agree.numel() and agree.max() >= 0.999, (
                f"pixel agreement with the CPU persons of that score: {agree.tolist()}"
            )
