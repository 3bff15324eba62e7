"""Precision and deterministic mode chosen from the accelerator (CUDA faked by monkeypatching)."""

from __future__ import annotations

import pytest
import torch

from conftest import compose_config
from smp_parsing.utils.accelerator import default_precision, deterministic_mode


def fake_cuda(monkeypatch, available: bool, bf16: bool = False) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)


@pytest.mark.parametrize(
    ("available", "bf16", "accelerator", "expected"),
    [
        (True, True, "auto", "bf16-mixed"),  # Ampere+
        (True, True, "gpu", "bf16-mixed"),
        (True, False, "auto", "32-true"),  # V100 / T4: fp32 (the paper's), never fp16
        (True, True, "cpu", "32-true"),  # the CPU asked for explicitly
        (False, False, "auto", "32-true"),
    ],
)
def test_default_precision(monkeypatch, available, bf16, accelerator, expected) -> None:
    fake_cuda(monkeypatch, available, bf16)
    assert default_precision(accelerator) == expected


@pytest.mark.parametrize("trainer", ["auto", "gpu", "ddp"])
def test_trainer_configs_resolve_the_precision_of_the_machine(monkeypatch, tmp_path, trainer):
    cfg = compose_config("train", [f"trainer={trainer}"], tmp_path)
    fake_cuda(monkeypatch, True, bf16=True)
    assert cfg.trainer.precision == "bf16-mixed"
    fake_cuda(monkeypatch, True, bf16=False)
    assert cfg.trainer.precision == "32-true"
    assert cfg.trainer.benchmark is False


def test_deterministic_true_becomes_warn_on_cuda_only(monkeypatch, caplog) -> None:
    fake_cuda(monkeypatch, True)
    assert deterministic_mode(True, "auto") == "warn"
    assert "bilinear" in caplog.text
    assert deterministic_mode(True, "cpu") is True
    assert deterministic_mode(False, "gpu") is False and deterministic_mode("warn", "gpu") == "warn"
    fake_cuda(monkeypatch, False)
    assert deterministic_mode(True, "auto") is True
