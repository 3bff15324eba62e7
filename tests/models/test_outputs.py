"""SMPOutputs.apply: one generic map over every output tensor (casts, detach, device moves)."""

from __future__ import annotations

import torch

from smp_parsing.models import SMPOutputs


def _outputs(dtype: torch.dtype, mir: bool) -> SMPOutputs:
    def t(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, dtype=dtype, requires_grad=True)

    return SMPOutputs(
        center=t(2, 1, 6, 6),
        offsets=t(2, 3, 2, 6, 6),
        cate=[t(2, 3, 6, 6), t(2, 3, 4, 4)],
        kernels=[t(2, 8, 6, 6), t(2, 8, 4, 4)],
        mask_feat=t(2, 8, 16, 16),
        mir_feat=t(2, 4, 16, 16) if mir else None,
        mir_semantic=t(2, 4, 16, 16) if mir else None,
    )


def _tensors(out: SMPOutputs) -> list[torch.Tensor]:
    singles = [out.center, out.offsets, out.mask_feat, out.mir_feat, out.mir_semantic]
    return [t for t in singles if t is not None] + [*out.cate, *out.kernels]


def test_apply_casts_every_tensor_and_keeps_absent_outputs():
    for mir in (True, False):
        out = _outputs(torch.bfloat16, mir)
        cast = out.apply(torch.Tensor.float)
        assert isinstance(cast, SMPOutputs) and cast is not out
        assert len(_tensors(cast)) == (9 if mir else 7)
        assert all(t.dtype == torch.float32 for t in _tensors(cast))
        assert all(t.dtype == torch.bfloat16 for t in _tensors(out))  # the original is unchanged
        assert (cast.mir_feat is None) == (not mir) and (cast.mir_semantic is None) == (not mir)
        assert isinstance(cast.cate, list) and len(cast.cate) == len(out.cate) == 2
        for a, b in zip(_tensors(cast), _tensors(out), strict=True):
            assert a.shape == b.shape and torch.equal(a, b.float())


def test_apply_detaches():
    out = _outputs(torch.float32, True)
    detached = out.apply(torch.Tensor.detach)
    assert all(t.requires_grad for t in _tensors(out))
    assert not any(t.requires_grad for t in _tensors(detached))
    assert all(a.data_ptr() == b.data_ptr() for a, b in zip(_tensors(detached), _tensors(out)))
