"""decode_parsing on hand-built outputs: humans, parts, distance weighting, filters,
resizing, empty and NaN inputs."""

from __future__ import annotations

import math

import pytest
import torch

from smp_parsing.models.decode import (
    _to_original,
    crop_windows,
    decode_parsing,
    mask_statistics,
    paint_persons,
    person_windows,
    select_parts,
)
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
    # A's body offset now points one cell below the body cell: rejected with the paper's
    # single-cell test, accepted (and the body cell chosen) with a 3 x 3 window.
    outputs.offsets[0, 1, 1, HUMAN_A[1], HUMAN_A[0]] -= 1.0
    (strict,) = decode_parsing(outputs, [META], strides=STRIDES)
    (window,) = decode_parsing(outputs, [META], strides=STRIDES, accept_window=3)
    assert 2 not in strict["parsing"][1].unique().tolist()
    assert same_up_to_corners(window["parsing"], expected_maps())
    with pytest.raises(ValueError, match="accept_window"):
        decode_parsing(outputs, [META], strides=STRIDES, accept_window=2)


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
    )[:, 0]
    assert (pred["parsing"] != want).float().mean() < 0.01


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


def loop_select_parts(pointed, accepted, part_scores, thr, nms_pre, min_radius):
    """select_parts one human, level, class and candidate at a time."""
    levels, num_cls, grid, _ = part_scores.shape
    cands = [
        (part_scores[lv, c, y, x].item(), lv, c, y, x)
        for lv in range(levels)
        for c in range(num_cls)
        for y in range(grid)
        for x in range(grid)
        if part_scores[lv, c, y, x] > thr
    ]
    cands = sorted(cands, key=lambda e: -e[0])[:nms_pre]  # stable: flat order on ties
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
    got = select_parts(
        pointed, accepted, part_scores, cate_score_thr=0.6, nms_pre=30, min_radius=1.0
    )
    want = loop_select_parts(pointed, accepted, part_scores, 0.6, 30, 1.0)
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
