"""``ParsingMetrics`` fed CUDA tensors computes the same numbers as fed CPU tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.metrics.cases import random_images, to_metric_inputs, worked_example

from smp_parsing.metrics import ParsingMetrics

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _compute(preds, target, num_classes, device):
    metric = ParsingMetrics(num_classes=num_classes).to(device)
    for pred, gt in zip(preds, target):  # one image per update, as a loader of batch 1
        metric.update([{k: v.to(device) for k, v in pred.items()}],
                      [{k: v.to(device) for k, v in gt.items()}])  # fmt: skip
    return metric.compute()


@pytest.mark.parametrize("case", ["worked", "random"])
def test_parsing_metrics_cuda_equals_cpu(case):
    if case == "worked":
        preds, target, num_classes = *worked_example(), 59
    else:
        num_classes = 20
        preds, target = to_metric_inputs(random_images(np.random.default_rng(0), 40, num_classes))
    cpu = _compute(preds, target, num_classes, torch.device("cpu"))
    gpu = _compute(preds, target, num_classes, torch.device("cuda"))
    assert set(gpu) == set(cpu)
    for name, value in cpu.items():
        assert float(gpu[name]) == pytest.approx(float(value), abs=1e-9), name
