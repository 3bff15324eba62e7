"""decode_parsing on hand-built outputs: humans, parts, distance weighting, filters,
resizing, empty and NaN inputs."""

from __future__ import annotations

import math

import pytest
import torch

from smp_parsing.models.decode import (
    crop_windows,
    decode_parsing,
    group_parts_release,
    mask_statistics,
    paint_persons,
    person_windows,
    select_parts,
)
from smp_parsing.models.decode import to_original as _to_original
from smp_parsing.models.layers.packing import rank_in_group
from smp_parsing.models.outputs import SMPOutputs

GRID = 8  # center grid and the single part level
C_P = 3
STRIDES = (8,)
META = {"img_size": (64, 64), "ori_size": (64, 64), "pad_size": (64, 64)}
HUMAN_A, HUMAN_B = (2, 3), (6, 3)  # (x, y) cells
A_HEAD, A_BODY, B_HEAD, DECOY = (2, 1), (2, 5), (6, 1), (4, 2)


def two_people(logit: float = 10.0) -> SMPOutputs:
    """Human A (head class 0 and body class 1) and human B (head class 0), plus a decoy
    class-0 cell between them whose kernel would paint B's head."""
    center = torch.full((1, 1, GRID, GRID), -logit)
    center[0, 0, HUMAN_A[1], HUMAN_A[0]] = 5.0
    center[0, 0, HUMAN_B[1], HUMAN_B[0]] = 6.0
    offsets = torch.zeros(1, C_P, 2, GRID, GRID)
    for human, part, cls in ((HUMAN_A, A_HEAD, 0), (HUMAN_A, A_BODY, 1), (HUMAN_B, B_HEAD, 0)):
        offsets[0, cls, :, human[1], human[0]] = torch.tensor(
            [human[0] - part[0], human[1] - part[1]], dtype=torch.float32
        )
    cate = torch.full((1, C_P, GRID, GRID), -logit)
    for part, cls in ((A_HEAD, 0), (A_BODY, 1), (B_HEAD, 0), (DECOY, 0)):
        cate[0, cls, part[1], part[0]] = logit
    # F_mask channels: A's head block, A's body block, B's head block, constant
    mask_feat = torch.zeros(1, 4, 16, 16)
    mask_feat[0, 0, 0:4, 2:6] = 1
    mask_feat[0, 1, 4:12, 2:6] = 1
    mask_feat[0, 2, 0:4, 10:14] = 1
    mask_feat[0, 3] = 1
    kernels = torch.zeros(1, 4, GRID, GRID)
    for part, channel in ((A_HEAD, 0), (A_BODY, 1), (B_HEAD, 2), (DECOY, 2)):
        kernels[0, channel, part[1], part[0]] = 2 * logit
        kernels[0, 3, part[1], part[0]] = -logit
    return SMPOutputs(
        center=center, offsets=offsets, cate=[cate], kernels=[kernels], mask_feat=mask_feat
    )


def expected_maps() -> torch.Tensor:
    b = torch.zeros(64, 64, dtype=torch.uint8)
    b[0:16, 40:56] = 1
    a = torch.zeros(64, 64, dtype=torch.uint8)
    a[0:16, 8:24] = 1
    a[16:48, 8:24] = 2
    return torch.stack([b, a])


def same_up_to_corners(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Bilinear upsampling rounds the 4 corners of each rectangle (SOLO-style)."""
    return (got != want).sum() <= 4 * 3


def test_decode_two_people_with_intermediates():
    (pred,) = decode_parsing(two_people(), [META], strides=STRIDES, return_intermediates=True)
    torch.testing.assert_close(
        pred["scores"], torch.tensor([1 / (1 + math.exp(-6)), 1 / (1 + math.exp(-5))])
    )
    assert pred["parsing"].dtype == torch.uint8 and pred["parsing"].shape == (2, 64, 64)
    assert same_up_to_corners(pred["parsing"], expected_maps())
    assert pred["centers"].tolist() == [list(map(float, HUMAN_B)), list(map(float, HUMAN_A))]
    assert pred["part_centers"].shape == (2, C_P, 2)
    assert pred["part_centers"][1, 1].tolist() == list(map(float, A_BODY))
    assert pred["center_heatmap"].shape == (GRID, GRID)
    assert pred["offsets"].shape == (C_P, 2, GRID, GRID)


def test_decode_keeps_tied_persons_in_raster_order():
    """64 humans with tied center scores (a well-trained network saturates them) come out in
    their cells' raster order, on every device: an unstable sort shuffles ties of this size on
    the CPU too, and ordered them differently on CUDA (tests/gpu/test_decode_cuda.py)."""
    grid, step = 16, 2
    center = torch.full((1, 1, grid, grid), -10.0)
    center[0, 0, ::step, ::step] = 6.0
    cate = torch.full((1, C_P, grid, grid), -10.0)
    cate[0, 0, ::step, ::step] = 10.0  # each human's head part sits on its own cell
    outputs = SMPOutputs(
        center=center,
        offsets=torch.zeros(1, C_P, 2, grid, grid),
        cate=[cate],
        kernels=[torch.full((1, 1, grid, grid), 10.0)],
        mask_feat=torch.ones(1, 1, 2 * grid, 2 * grid),
    )
    meta = {k: (8 * grid, 8 * grid) for k in ("img_size", "ori_size", "pad_size")}
    (pred,) = decode_parsing(
        outputs, [meta], strides=STRIDES, max_humans=100, return_intermediates=True
    )
    raster = [[float(x), float(y)] for y in range(0, grid, step) for x in range(0, grid, step)]
    assert len(set(pred["scores"].tolist())) == 1
    assert pred["centers"].tolist() == raster


def test_decode_without_intermediates_has_only_parsing_and_scores():
    (pred,) = decode_parsing(two_people(), [META], strides=STRIDES)
    assert set(pred) == {"parsing", "scores"}


def test_decode_thresholds_and_max_humans():
    (pred,) = decode_parsing(two_people(), [META], strides=STRIDES, max_humans=1)
    assert len(pred["scores"]) == 1 and pred["parsing"][0].max() == 1  # B, the best center
    (pred,) = decode_parsing(two_people(), [META], strides=STRIDES, ctr_score_thr=0.998)
    assert len(pred["scores"]) == 0 and pred["parsing"].shape == (0, 64, 64)
    # parts scored 1 - 4.5e-5 are all rejected by a threshold above that
    (pred,) = decode_parsing(two_people(), [META], strides=STRIDES, cate_score_thr=0.99999)
    assert len(pred["scores"]) == 0
    # a part score is at most its category score: update_thr above 1 keeps nothing
    (pred,) = decode_parsing(two_people(), [META], strides=STRIDES, update_thr=1.01)
    assert len(pred["scores"]) == 0
    (pred,) = decode_parsing(two_people(), [META], strides=STRIDES, max_parts_per_human=1)
    assert pred["parsing"][1].unique().numel() == 2  # A keeps one of its two parts


def test_decode_accept_window_forgives_an_offset_one_cell_off():
    outputs = two_people()
    # A's body offset now points one cell below the body cell: rejected by the single-cell
    # test of the pointed_cell rule, accepted (and the body cell chosen) with a 3 x 3 window.
    outputs.offsets[0, 1, 1, HUMAN_A[1], HUMAN_A[0]] -= 1.0
    old = dict(strides=STRIDES, grouping="pointed_cell")
    (strict,) = decode_parsing(outputs, [META], **old)
    (window,) = decode_parsing(outputs, [META], **old, accept_window=3)
    assert 2 not in strict["parsing"][1].unique().tolist()
    assert same_up_to_corners(window["parsing"], expected_maps())
    with pytest.raises(ValueError, match="accept_window"):
        decode_parsing(outputs, [META], strides=STRIDES, accept_window=2)
    with pytest.raises(ValueError, match="grouping"):
        decode_parsing(outputs, [META], strides=STRIDES, grouping="nearest")


def test_decode_groupings_agree_on_exact_offsets():
    for grouping in ("release", "pointed_cell"):
        (pred,) = decode_parsing(two_people(), [META], strides=STRIDES, grouping=grouping)
        assert same_up_to_corners(pred["parsing"], expected_maps()), grouping


def spread_person(miss: float) -> SMPOutputs:
    """One human at (8, 8) of a 16-cell grid with a head 3 cells up-left and legs 3 cells
    down-right (r = 0.5 * sqrt(6 * 6) = 3 cells); the head offset misses by ``miss`` cells."""
    grid, logit = 16, 10.0
    human, head, legs = (8, 8), (5, 5), (11, 11)
    center = torch.full((1, 1, grid, grid), -logit)
    center[0, 0, human[1], human[0]] = 5.0
    offsets = torch.zeros(1, 2, 2, grid, grid)
    offsets[0, 0, :, human[1], human[0]] = torch.tensor([3.0 - miss, 3.0])
    offsets[0, 1, :, human[1], human[0]] = torch.tensor([-3.0, -3.0])
    cate = torch.full((1, 2, grid, grid), -logit)
    cate[0, 0, head[1], head[0]] = cate[0, 1, legs[1], legs[0]] = logit
    mask_feat = torch.zeros(1, 3, 32, 32)  # 128 px input, F_mask at stride 4
    mask_feat[0, 0, 8:14, 8:14] = mask_feat[0, 1, 18:26, 18:26] = mask_feat[0, 2] = 1
    kernels = torch.zeros(1, 3, grid, grid)
    for (x, y), channel in ((head, 0), (legs, 1)):
        kernels[0, channel, y, x], kernels[0, 2, y, x] = 2 * logit, -logit
    return SMPOutputs(
        center=center, offsets=offsets, cate=[cate], kernels=[kernels], mask_feat=mask_feat
    )


def test_release_grouping_tolerates_an_offset_a_few_cells_off():
    meta = {"img_size": (128, 128), "ori_size": (128, 128)}
    for miss in (0.0, 2.0):
        (release,) = decode_parsing(spread_person(miss), [meta], strides=STRIDES)
        (pointed,) = decode_parsing(
            spread_person(miss), [meta], strides=STRIDES, grouping="pointed_cell"
        )
        assert release["parsing"][0].unique().tolist() == [0, 1, 2]  # head and legs
        # the pointed_cell rule loses the head once the offset misses its only cell
        assert pointed["parsing"][0].unique().tolist() == ([0, 1, 2] if miss == 0 else [0, 2])
    # 2 cells off with r = 3: weighted score exp(-4 / 9) ~ 0.64 > 0.3; 4 cells: 0.17 < 0.3
    (far,) = decode_parsing(spread_person(4.0), [meta], strides=STRIDES)
    assert far["parsing"][0].unique().tolist() == [0, 2]


def test_release_grouping_guards_a_zero_radius():
    # Every pointed centre on the part's own cell: the box is a point, r = 0; the release
    # divides by it (0 / 0 = NaN at d = 0 loses the part); the guard keeps r = 1.
    part_scores = torch.zeros(1, 2, 6, 6)
    part_scores[0, 1, 2, 4] = 0.9
    part_scores[0, 1, 2, 5] = 0.95  # one cell right of the pointed centre: 0.95 e^-1 < 0.9
    pointed = torch.tensor([[[4.0, 2.0], [4.0, 2.0]]])
    finite = torch.ones(1, 2, dtype=torch.bool)
    human, level, cls, y, x, score = group_parts_release(
        pointed, finite, part_scores, cand_score_thr=0.1, cate_score_thr=0.3, min_radius=1.0
    )
    assert (human.tolist(), level.tolist(), cls.tolist(), y.tolist(), x.tolist()) == (
        [0], [0], [1], [2], [4]
    )  # fmt: skip
    torch.testing.assert_close(score, torch.tensor([0.9]))
    # a non-finite pointed centre gives its class nothing (and does not reach the box)
    finite[0, 1] = False
    assert (
        group_parts_release(
            pointed, finite, part_scores, cand_score_thr=0.1, cate_score_thr=0.3, min_radius=1.0
        )[0].numel()
        == 0
    )


def loop_candidates(part_scores, thr):
    """Every (score, level, class, y, x) cell of ``part_scores`` above ``thr``, one at a time."""
    levels, num_cls, grid, _ = part_scores.shape
    return [
        (part_scores[lv, c, y, x].item(), lv, c, y, x)
        for lv in range(levels)
        for c in range(num_cls)
        for y in range(grid)
        for x in range(grid)
        if part_scores[lv, c, y, x] > thr
    ]


def loop_group_release(pointed, finite, part_scores, cand_thr, thr, min_radius):
    """The release's grouping one human, class and candidate at a time."""
    num_cls, grid = part_scores.shape[1], part_scores.shape[-1]
    cands = loop_candidates(part_scores, cand_thr)
    cands.sort(key=lambda e: (e[3], e[4], e[1]))  # ties: first cell in (y, x), lowest level
    chosen = []
    for q in range(pointed.shape[0]):
        pts = [pointed[q, c].tolist() for c in range(num_cls) if finite[q, c]]
        if pts:
            w = max(p[0] for p in pts) - min(p[0] for p in pts)
            h = max(p[1] for p in pts) - min(p[1] for p in pts)
            r = max(0.5 * math.sqrt(w * h), min_radius)
        else:
            r = min_radius
        for c in range(num_cls):
            if not finite[q, c]:
                continue
            px = round(min(max(pointed[q, c, 0].item(), 0), grid - 1))
            py = round(min(max(pointed[q, c, 1].item(), 0), grid - 1))
            best = None
            for score, lv, cc, y, x in cands:
                if cc != c:
                    continue
                weighted = score * math.exp(-((abs(x - px) + abs(y - py)) ** 2) / r**2)
                if best is None or weighted > best[0] + 1e-7:
                    best = (weighted, lv, y, x)
            if best is not None and best[0] > thr:
                chosen.append((q, best[1], c, best[2], best[3], best[0]))
    return chosen


def test_group_parts_release_matches_loop():
    generator = torch.Generator().manual_seed(4)
    levels, num_cls, grid, humans = 3, 4, 7, 5
    part_scores = torch.rand(levels, num_cls, grid, grid, generator=generator)
    part_scores = part_scores * (part_scores > 0.7)
    pointed = torch.rand(humans, num_cls, 2, generator=generator) * (grid + 3) - 1.5
    finite = torch.rand(humans, num_cls, generator=generator) > 0.2
    pointed[~finite] = float("nan")
    pointed[3] = pointed[3, :1]  # all centres on one point: r = 0 -> min_radius
    finite[3] = True
    finite[4] = False  # a human with no finite centre
    got = group_parts_release(
        pointed, finite, part_scores, cand_score_thr=0.7, cate_score_thr=0.3, min_radius=1.0
    )
    want = loop_group_release(pointed, finite, part_scores, 0.7, 0.3, 1.0)
    assert len(want) > 8 and len({w[0] for w in want}) >= 3
    got_rows = list(zip(*(t.tolist() for t in got[:5])))
    assert got_rows == [w[:5] for w in want]
    torch.testing.assert_close(got[5], torch.tensor([w[5] for w in want]))


def crowd(num_humans: int = 8) -> tuple[SMPOutputs, dict]:
    """``num_humans`` side by side on a 16-cell grid, each with a head (class 0) 2 cells
    above its center and a body (class 1) 2 cells below, all parts scored alike."""
    grid, logit = 16, 10.0
    center = torch.full((1, 1, grid, grid), -logit)
    offsets = torch.zeros(1, 2, 2, grid, grid)
    cate = torch.full((1, 2, grid, grid), -logit)
    mask_feat = torch.zeros(1, 2 * num_humans + 1, 32, 32)  # 128 px input, stride 4
    mask_feat[0, -1] = 1
    kernels = torch.zeros(1, 2 * num_humans + 1, grid, grid)
    for q in range(num_humans):
        x = 2 * q + 1
        center[0, 0, 8, x] = 5.0  # equal peaks survive the 5 x 5 max-pool together
        offsets[0, 0, 1, 8, x], offsets[0, 1, 1, 8, x] = 2.0, -2.0
        for cls, y in ((0, 6), (1, 10)):
            cate[0, cls, y, x] = logit
            channel = 2 * q + cls
            mask_feat[0, channel, 2 * y - 2 : 2 * y + 4, 2 * x : 2 * x + 2] = 1  # 12 cells
            kernels[0, channel, y, x], kernels[0, -1, y, x] = 2 * logit, -logit
    meta = {"img_size": (128, 128), "ori_size": (128, 128)}
    return SMPOutputs(center=center, offsets=offsets, cate=[cate], kernels=[kernels],
                      mask_feat=mask_feat), meta  # fmt: skip


@pytest.mark.parametrize("grouping", ["release", "pointed_cell"])
def test_nms_pre_caps_parts_per_human_not_per_image(grouping):
    outputs, meta = crowd(8)
    # 16 true parts in the image, nms_pre = 2: a per-image cap would keep 2 of them
    (pred,) = decode_parsing(outputs, [meta], strides=STRIDES, nms_pre=2, grouping=grouping)
    assert len(pred["scores"]) == 8
    assert all(person.unique().tolist() == [0, 1, 2] for person in pred["parsing"])
    (one,) = decode_parsing(outputs, [meta], strides=STRIDES, nms_pre=1, grouping=grouping)
    assert len(one["scores"]) == 8  # (all() over no person at all would pass as well)
    assert all(person.unique().numel() == 2 for person in one["parsing"])  # one part each


def test_rank_in_group():
    score = torch.tensor([0.5, 0.9, 0.1, 0.9, 0.3])
    group = torch.tensor([1, 0, 1, 1, 0])
    assert rank_in_group(score, group, 3).tolist() == [1, 0, 2, 0, 1]


def test_decode_area_filter_drops_tiny_masks():
    outputs = two_people()
    outputs.mask_feat[0, 1] = 0
    outputs.mask_feat[0, 1, 4:6, 2:6] = 1  # A's body mask: 8 cells at stride 4 <= stride 8
    (pred,) = decode_parsing(outputs, [META], strides=STRIDES)
    assert pred["parsing"][1].unique().tolist() == [0, 1]  # body dropped, head kept


def test_decode_crops_padding_and_resizes_to_original():
    meta = {"img_size": (48, 64), "ori_size": (96, 128), "pad_size": (64, 64)}
    (pred,) = decode_parsing(two_people(), [meta], strides=STRIDES)
    assert pred["parsing"].shape == (2, 96, 128)
    want = torch.nn.functional.interpolate(
        expected_maps()[:, None, :48].float(), size=(96, 128), mode="nearest-exact"
    )[:, 0].to(torch.uint8)
    # Pixel exact but for the rounded rectangle corners (measured: 24 pixels in 3-pixel
    # triangles at two bottom corners). A 1% tolerance let a one-row shift (128 pixels) pass.
    wrong = (pred["parsing"] != want).nonzero()
    assert len(wrong) <= 24
    corners = []
    for person in range(len(want)):
        for label in want[person].unique().tolist()[1:]:
            ys, xs = (want[person] == label).nonzero().T
            for y in (ys.min(), ys.max()):
                for x in (xs.min(), xs.max()):
                    corners.append((person, int(y), int(x)))
    for person, y, x in wrong.tolist():
        assert any(
            p == person and abs(y - cy) <= 3 and abs(x - cx) <= 3 for p, cy, cx in corners
        ), (person, y, x)


def test_decode_empty_and_half_empty_batch():
    full = two_people()
    empty = SMPOutputs(
        center=torch.full_like(full.center, -10.0),
        offsets=torch.zeros_like(full.offsets),
        cate=[torch.full_like(full.cate[0], -10.0)],
        kernels=[torch.zeros_like(full.kernels[0])],
        mask_feat=torch.zeros_like(full.mask_feat),
    )
    batch = SMPOutputs(
        center=torch.cat([empty.center, full.center]),
        offsets=torch.cat([empty.offsets, full.offsets]),
        cate=[torch.cat([empty.cate[0], full.cate[0]])],
        kernels=[torch.cat([empty.kernels[0], full.kernels[0]])],
        mask_feat=torch.cat([empty.mask_feat, full.mask_feat]),
    )
    preds = decode_parsing(batch, [META, META], strides=STRIDES, return_intermediates=True)
    assert preds[0]["parsing"].shape == (0, 64, 64) and preds[0]["scores"].shape == (0,)
    assert preds[0]["centers"].shape == (0, 2) and preds[0]["part_centers"].shape == (0, C_P, 2)
    assert len(preds[1]["scores"]) == 2
    assert same_up_to_corners(preds[1]["parsing"], expected_maps())


@pytest.mark.parametrize("field", ["all", "center", "offsets", "cate", "kernels", "mask_feat"])
def test_decode_nan_gives_no_garbage(field):
    outputs = two_people()
    names = ["center", "offsets", "cate", "kernels", "mask_feat"] if field == "all" else [field]
    for name in names:
        value = getattr(outputs, name)
        if isinstance(value, list):
            setattr(outputs, name, [torch.full_like(v, float("nan")) for v in value])
        else:
            setattr(outputs, name, torch.full_like(value, float("nan")))
    (pred,) = decode_parsing(outputs, [META], strides=STRIDES)
    # whatever survives is finite and a real person map; NaN centers/parts/masks give none
    assert torch.isfinite(pred["scores"]).all()
    assert len(pred["scores"]) == 0
    assert pred["parsing"].shape == (0, 64, 64)


def test_decode_rejects_mismatched_metas():
    with pytest.raises(ValueError, match="metas"):
        decode_parsing(two_people(), [META, META], strides=STRIDES)
    with pytest.raises(ValueError, match="lacks"):
        decode_parsing(two_people(), [{"img_size": (64, 64)}], strides=STRIDES)
    with pytest.raises(ValueError, match="strides"):
        decode_parsing(two_people(), [META], strides=(8, 8))


def loop_select_parts(pointed, accepted, part_scores, thr, min_radius):
    """select_parts one human, level, class and candidate at a time."""
    levels, num_cls = part_scores.shape[:2]
    cands = loop_candidates(part_scores, thr)
    chosen = []
    for q in range(pointed.shape[0]):
        acc = [c for c in range(num_cls) if accepted[:, q, c].any()]
        if acc:
            pts = [pointed[q, c].tolist() for c in acc]
            mx = sum(p[0] for p in pts) / len(pts)
            my = sum(p[1] for p in pts) / len(pts)
            spread = sum((p[0] - mx) ** 2 + (p[1] - my) ** 2 for p in pts) / len(pts)
        else:
            spread = 0.0
        r = max(math.sqrt(spread), min_radius)
        for level in range(levels):
            for c in range(num_cls):
                if not accepted[level, q, c]:
                    continue
                best = None
                for score, lv, cc, y, x in cands:
                    if lv != level or cc != c:
                        continue
                    d = abs(x - pointed[q, c, 0].item()) + abs(y - pointed[q, c, 1].item())
                    w = score * math.exp(-(d**2) / r**2)
                    if best is None or w > best[0] + 1e-7:
                        best = (w, y, x)
                if best is not None:
                    chosen.append((q, level, c, best[1], best[2], best[0]))
    return chosen


def test_select_parts_matches_loop():
    generator = torch.Generator().manual_seed(0)
    levels, num_cls, grid, humans = 2, 3, 6, 4
    part_scores = torch.rand(levels, num_cls, grid, grid, generator=generator)
    part_scores = part_scores * (part_scores > 0.6)
    pointed = torch.rand(humans, num_cls, 2, generator=generator) * (grid - 1)
    accepted = torch.rand(levels, humans, num_cls, generator=generator) > 0.3
    accepted[:, 3] = False  # a human with nothing accepted
    got = select_parts(pointed, accepted, part_scores, cate_score_thr=0.6, min_radius=1.0)
    want = loop_select_parts(pointed, accepted, part_scores, 0.6, 1.0)
    assert len(want) > 5
    got_rows = list(zip(*(t.tolist() for t in got[:5])))
    assert got_rows == [w[:5] for w in want]
    torch.testing.assert_close(got[5], torch.tensor([w[5] for w in want]))


def loop_paint(masks, human, labels, num_humans, thr):
    """Paint each human pixel by pixel, parts in the given (ascending score) order."""
    _, h, w = masks.shape
    label_map = torch.zeros(num_humans, h, w, dtype=torch.long)
    foreground = torch.zeros(num_humans, h, w)
    for q in range(num_humans):
        parts = [(r, int(c)) for r, (hq, c) in enumerate(zip(human, labels)) if hq == q]
        rank = torch.zeros(h, w, dtype=torch.long)
        for k, (r, _) in enumerate(parts, start=1):
            foreground[q] = torch.maximum(foreground[q], masks[r])
            rank[masks[r] > thr] = k  # later = higher score wins
        for y in range(h):
            for x in range(w):
                k = int(rank[y, x])
                if k == 0:  # uncovered: best covered neighbour
                    k = int(rank[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2].max())
                label_map[q, y, x] = parts[k - 1][1] if k else 0
    return label_map, foreground


def test_paint_persons_matches_loop():
    generator = torch.Generator().manual_seed(1)
    h, w = 6, 7
    human = torch.tensor([0, 0, 0, 2, 2, 2, 3])  # human 1 has no part
    labels = torch.tensor([3, 1, 3, 2, 5, 4, 6])
    masks = torch.rand(human.numel(), h, w, generator=generator) ** 6
    got_labels, got_fg = paint_persons(masks, human, labels, 4, 0.5)
    want_labels, want_fg = loop_paint(masks, human, labels, 4, 0.5)
    assert torch.equal(got_labels, want_labels)
    torch.testing.assert_close(got_fg, want_fg)
    assert got_labels[1].sum() == 0 and got_labels[0].unique().numel() > 2
    covered = (masks[:3] > 0.5).any(0).sum()
    assert covered < (got_labels[0] > 0).sum() < h * w  # grown into neighbours, not everywhere
    empty_labels, empty_fg = paint_persons(masks[:0], human[:0], labels[:0], 2, 0.5)
    assert empty_labels.shape == (2, h, w) and not empty_labels.any() and not empty_fg.any()


def test_decode_person_covering_the_whole_image():
    outputs = two_people()
    outputs.mask_feat[0, 1] = 1.0  # A's body mask: the whole image
    (pred,) = decode_parsing(outputs, [META], strides=STRIDES)
    assert pred["parsing"].shape == (2, 64, 64)
    assert (pred["parsing"][1] > 0).all()  # A paints every pixel
    assert same_up_to_corners(pred["parsing"][0], expected_maps()[0])  # B unchanged


def test_mask_statistics_matches_loop():
    generator = torch.Generator().manual_seed(2)
    h, w = 5, 7
    soft = torch.rand(4, h * w, generator=generator) ** 3
    soft[2] = 0.1  # no covered pixel
    soft[3, 4] = float("nan")  # never covered
    area, maskness, boxes = mask_statistics(soft, 0.5, w)
    for r in range(4):
        ys, xs = [], []
        total = 0.0
        for p in range(h * w):
            if soft[r, p] > 0.5:
                ys.append(p // w)
                xs.append(p % w)
                total += float(soft[r, p])
        assert area[r] == len(ys)
        assert maskness[r] == pytest.approx(total / max(len(ys), 1), rel=1e-6)
        want = [min(ys), min(xs), max(ys), max(xs)] if ys else [h * w, h * w, -1, -1]
        assert boxes[r].tolist() == want


def test_person_windows_hold_every_part_box_with_a_margin():
    h, w = 20, 30
    boxes = torch.tensor([[2, 3, 5, 6], [4, 1, 9, 4], [15, 20, 19, 29], [0, 10, 0, 10]])
    human = torch.tensor([0, 0, 1, 3])  # human 2 has no part
    origin, (win_h, win_w) = person_windows(boxes, human, 4, (h, w))
    for q in (0, 1, 3):
        mine = boxes[human == q]
        y0, x0 = (mine[:, 0].min() - 1).clamp(min=0), (mine[:, 1].min() - 1).clamp(min=0)
        y1, x1 = (mine[:, 2].max() + 2).clamp(max=h), (mine[:, 3].max() + 2).clamp(max=w)
        oy, ox = origin[q].tolist()
        assert oy <= y0 and y1 <= oy + win_h <= h  # box + 1 cell inside the window
        assert ox <= x0 and x1 <= ox + win_w <= w
    assert (win_h, win_w) == (10, 11)  # tallest grown box: human 0 (rows 1..10), widest: human 1
    assert ((origin >= 0) & (origin + torch.tensor([win_h, win_w]) <= torch.tensor([h, w]))).all()


def test_crop_windows_matches_slicing():
    masks = torch.arange(3 * 6 * 8, dtype=torch.float32).view(3, 6, 8)
    rows = torch.tensor([2, 0, 2])
    origin = torch.tensor([[0, 0], [3, 5], [4, 2]])
    got = crop_windows(masks, rows, origin, (2, 3))
    for i, (r, (y, x)) in enumerate(zip(rows.tolist(), origin.tolist())):
        assert torch.equal(got[i], masks[r, y : y + 2, x : x + 3])
    whole = crop_windows(masks, rows, torch.zeros_like(origin), (6, 8))
    assert torch.equal(whole, masks[rows])


def test_to_original_on_windows_equals_full_maps():
    """Resampling a person from its window gives the same pixels as from all of F_mask."""
    generator = torch.Generator().manual_seed(3)
    h, w = 12, 16
    foreground = torch.zeros(2, h, w)
    foreground[0, 3:7, 4:9] = torch.rand(4, 5, generator=generator) * 0.6 + 0.3
    foreground[1, 8:12, 12:16] = torch.rand(4, 4, generator=generator) * 0.6 + 0.3  # at the corner
    foreground += torch.rand(2, h, w, generator=generator) * 0.4  # below threshold elsewhere
    labels = torch.randint(1, 5, (2, h, w), generator=generator)
    meta = {"img_size": (45, 61), "ori_size": (37, 50)}
    full = _to_original(
        labels, foreground, torch.zeros(2, 2, dtype=torch.long), (h, w), meta, 0.5, 4
    )
    boxes = torch.tensor([[3, 4, 6, 8], [8, 12, 11, 15]])
    origin, (win_h, win_w) = person_windows(boxes, torch.arange(2), 2, (h, w))
    crop = lambda t: crop_windows(t, torch.arange(2), origin, (win_h, win_w))  # noqa: E731
    windowed = _to_original(crop(labels), crop(foreground), origin, (h, w), meta, 0.5, 4)
    assert (full > 0).sum() > 100
    assert torch.equal(windowed, full)
