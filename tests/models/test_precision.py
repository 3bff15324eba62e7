"""Full-precision regions under autocast, and the network's precision restored inside one."""

from __future__ import annotations

import torch

from smp_parsing.models.layers.precision import autocast_off, autocast_restored


def _matmul_dtype() -> torch.dtype:
    a = torch.randn(4, 4)
    return (a @ a).dtype


def test_autocast_restored_brings_back_what_autocast_off_switched_off():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _matmul_dtype() == torch.bfloat16
        with autocast_off():
            assert _matmul_dtype() == torch.float32
            with autocast_restored():
                assert _matmul_dtype() == torch.bfloat16
                with autocast_off():  # nested: its own region, its own restore
                    assert _matmul_dtype() == torch.float32
                    with autocast_restored():
                        assert _matmul_dtype() == torch.bfloat16
                assert _matmul_dtype() == torch.bfloat16
            assert _matmul_dtype() == torch.float32
        assert _matmul_dtype() == torch.bfloat16


def test_autocast_restored_enters_nothing_without_autocast():
    with autocast_restored():  # outside any region
        assert _matmul_dtype() == torch.float32
    with autocast_off(), autocast_restored():  # the region switched nothing off
        assert _matmul_dtype() == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with autocast_restored():  # outside a region: the ambient autocast is untouched
            assert _matmul_dtype() == torch.bfloat16
