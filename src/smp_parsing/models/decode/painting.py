"""The decode's windowed painting and resampling machinery: mask statistics, per-person windows,
painting the parts of each person into one label map, and one resampling of the maps to the
original image size over a window around each person.

Shapes convention: R part masks, Q persons, h x w mask-feature size, H0 x W0 original image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from smp_parsing.models.layers.packing import pack_by_group


def mask_statistics(soft: Tensor, mask_thr: float, mask_w: int) -> tuple[Tensor, Tensor, Tensor]:
    """Area, maskness and covered box of every part mask, from its covered pixels.

    The covered pixels (probability > ``mask_thr``) are a small fraction of R x h x w, so
    they are listed once and every statistic is a reduction over that list.

    Args:
        soft: ``(R, h * w)`` part probabilities (NaN is never covered).
        mask_thr: coverage threshold.
        mask_w: w, the row length of F_mask.

    Returns:
        ``area`` ``(R,)`` float covered pixels; ``maskness`` ``(R,)`` mean probability over
        them (0 when none); ``boxes`` ``(R, 4)`` long ``(y_min, x_min, y_max, x_max)`` of the
        covered pixels, inclusive (``(h * w, h * w, -1, -1)`` when none).
    """
    num, size = soft.shape
    flat = (soft > mask_thr).view(-1).nonzero().squeeze(1)
    row = torch.div(flat, size, rounding_mode="floor")
    pixel = flat - row * size
    # index_add, not bincount (whose CUDA kernel reads the range on the host)
    area = soft.new_zeros(num).index_add_(0, row, torch.ones_like(row, dtype=soft.dtype))
    total = soft.new_zeros(num).index_add_(0, row, soft.view(-1)[flat])
    maskness = total / area.clamp(min=1)
    y = torch.div(pixel, mask_w, rounding_mode="floor")
    x = pixel - y * mask_w
    # one column at a time: a scatter over an expanded (E, 2) index is several times slower
    boxes = torch.stack(
        [
            torch.full((num,), init, dtype=torch.long, device=soft.device).scatter_reduce_(
                0, row, coord, reduce
            )
            for coord, init, reduce in (
                (y, size, "amin"),
                (x, size, "amin"),
                (y, -1, "amax"),
                (x, -1, "amax"),
            )
        ],
        1,
    )
    return area, maskness, boxes


def person_windows(
    boxes: Tensor, human: Tensor, num_humans: int, mask_size: tuple[int, int]
) -> tuple[Tensor, tuple[int, int]]:
    """One same-size F_mask window per human holding its parts' boxes grown by one cell.

    One cell of margin holds everything the painting and the resampling read next to a
    covered cell (3 x 3 label growing, bilinear taps). The size is the largest human's,
    and each window is shifted to lie inside F_mask.

    Args:
        boxes: ``(R, 4)`` ``(y_min, x_min, y_max, x_max)`` inclusive covered box of each part.
        human: ``(R,)`` human of each part.
        num_humans: Q.
        mask_size: ``(h, w)``.

    Returns:
        ``origin`` ``(Q, 2)`` long top-left ``(y, x)`` cell of each window and the window
        size ``(win_h, win_w)`` (at least 1 x 1; a human without parts gets any window).
    """
    mask_h, mask_w = mask_size
    limit = torch.full((2,), mask_h, dtype=torch.long, device=boxes.device)
    # fill_ on a slice: no host-to-device copy (`limit[1] = mask_w` copies a CPU scalar and waits)
    limit[1:].fill_(mask_w)
    lows = torch.full((num_humans, 2), mask_h + mask_w, dtype=torch.long, device=boxes.device)
    lows.scatter_reduce_(0, human[:, None].expand(-1, 2), boxes[:, :2], "amin")
    highs = torch.full((num_humans, 2), -1, dtype=torch.long, device=boxes.device)
    highs.scatter_reduce_(0, human[:, None].expand(-1, 2), boxes[:, 2:], "amax")
    lo = (lows - 1).clamp(min=0)
    hi = torch.minimum(highs + 2, limit)
    extent = (hi - lo).clamp(min=1).amax(0) if human.numel() else torch.ones_like(limit)
    win_h, win_w = extent.tolist()  # one read of the (2,) size, not two
    window = (int(win_h), int(win_w))
    origin = torch.minimum(lo, limit - extent).clamp(min=0)
    return origin, window


def crop_windows(masks: Tensor, rows: Tensor, origin: Tensor, window: tuple[int, int]) -> Tensor:
    """The ``window``-sized crop of each selected mask at its origin.

    Args:
        masks: ``(R, h, w)``.
        rows: ``(R',)`` rows to crop.
        origin: ``(R', 2)`` top-left ``(y, x)`` of each crop (inside ``(h, w)``).
        window: ``(win_h, win_w)``.

    Returns:
        ``(R', win_h, win_w)``.
    """
    _, mask_h, mask_w = masks.shape
    win_h, win_w = window
    if (win_h, win_w) == (mask_h, mask_w):
        return masks[rows]  # whole masks (origins are 0): a row gather, no pixel index
    ys = origin[:, :1] + torch.arange(win_h, device=masks.device)  # (R', win_h)
    xs = origin[:, 1:] + torch.arange(win_w, device=masks.device)  # (R', win_w)
    # One flat index (a single gather) rather than three broadcast ones.
    flat = (rows[:, None, None] * mask_h + ys[:, :, None]) * mask_w + xs[:, None, :]
    return masks.reshape(-1)[flat]


def paint_persons(
    masks: Tensor,
    human: Tensor,
    labels: Tensor,
    num_humans: int,
    mask_thr: float,
) -> tuple[Tensor, Tensor]:
    """One label map per human from its parts' soft masks, all humans at once.

    Per human and pixel, the label of the last (highest-scored) of its parts whose
    probability exceeds ``mask_thr``; a pixel no part covers but next to a covered one
    (3 x 3) takes the label of the best covered neighbour, since the bilinear foreground
    may grow into it when upsampled. The foreground is the max part probability.

    Args:
        masks: ``(R, h, w)`` part probabilities (each part in its human's window), grouped
            by human in ascending score.
        human: ``(R,)`` human of each part.
        labels: ``(R,)`` part class (1..C_P) of each part.
        num_humans: Q.
        mask_thr: coverage threshold.

    Returns:
        ``label_map`` ``(Q, h, w)`` long and ``foreground`` ``(Q, h, w)`` float (0 for a
        human without parts).
    """
    _, mask_h, mask_w = masks.shape
    device = masks.device
    if human.numel() == 0:
        return (
            torch.zeros(num_humans, mask_h, mask_w, dtype=torch.long, device=device),
            masks.new_zeros(num_humans, mask_h, mask_w),
        )
    # (Q, K, h * w), zero (never covered) where a human has fewer than K parts
    packed, slot = pack_by_group(masks.flatten(1), human, num_groups=num_humans)
    k_max = packed.shape[1]
    label_of = torch.zeros(num_humans, k_max + 1, dtype=torch.long, device=device)
    label_of[slot[:, 0], slot[:, 1] + 1] = labels  # column 0: background
    foreground = packed.amax(1)
    rank = torch.arange(1, k_max + 1, device=device, dtype=packed.dtype).view(1, -1, 1)
    winner = torch.where(packed > mask_thr, rank, 0.0).amax(1)  # 0 = not covered
    grown = F.max_pool2d(winner.view(num_humans, 1, mask_h, mask_w), 3, stride=1, padding=1)
    winner = torch.where(winner > 0, winner, grown.view(num_humans, mask_h * mask_w))
    label_map = label_of.gather(1, winner.long())
    return label_map.view(num_humans, mask_h, mask_w), foreground.view(num_humans, mask_h, mask_w)


def to_original(
    label_map: Tensor,
    foreground: Tensor,
    origin: Tensor,
    mask_size: tuple[int, int],
    meta: dict,
    mask_thr: float,
    mask_stride: int,
) -> Tensor:
    """Person maps in F_mask windows -> the original image size.

    The three steps of the spec (upsample to the padded input, crop the padding, resize to
    the original size) are done as one resampling of the F_mask-resolution maps at the
    original pixels' positions: labels by nearest neighbour, the foreground probability
    bilinearly (as SOLO resizes soft masks, edge-clamped, half-pixel centres) and
    thresholded at ``mask_thr``. Only the output pixels whose samples can reach a covered
    cell are resampled (all persons at once, with the size of the largest): a sample
    above the threshold has a covered tap, so all its taps lie within one cell of the
    covered box, inside the person's window; the cost follows the persons' sizes, not
    P x H0 x W0.

    Args:
        label_map: ``(P, win_h, win_w)`` part class per cell of each person's window.
        foreground: ``(P, win_h, win_w)`` person foreground probability.
        origin: ``(P, 2)`` top-left ``(y, x)`` F_mask cell of each window.
        mask_size: ``(h, w)`` of F_mask.
        meta: ``img_size`` (resized content, top-left of the batch tensor), ``ori_size``.
        mask_thr: foreground threshold.
        mask_stride: F_mask stride on the batch tensor (its padded size = F_mask size x
            stride, whatever the image's own ``pad_size``).

    Returns:
        ``(P, H0, W0)`` uint8 person maps.
    """
    num, win_h, win_w = label_map.shape
    mask_h, mask_w = mask_size
    device = label_map.device
    img_h, img_w = (int(v) for v in meta["img_size"])
    ori_h, ori_w = (int(v) for v in meta["ori_size"])
    out = torch.zeros(num, ori_h, ori_w, dtype=torch.uint8, device=device)
    if num == 0:
        return out
    covered = foreground > mask_thr  # NaN compares False
    # Original pixel Y samples F_mask at the continuous coordinate (Y + 0.5) * scale.
    # (F_mask covers the batch tensor at 1 / mask_stride, whatever the image's own padding)
    scale_y = img_h / (ori_h * mask_stride)
    scale_x = img_w / (ori_w * mask_stride)
    y_lo, y_hi = _window(covered.any(2), origin[:, 0], mask_h, scale_y, ori_h)
    x_lo, x_hi = _window(covered.any(1), origin[:, 1], mask_w, scale_x, ori_w)
    extent_h, extent_w = torch.stack([(y_hi - y_lo).amax(), (x_hi - x_lo).amax()]).tolist()
    out_h, out_w = max(int(extent_h), 1), max(int(extent_w), 1)  # one host read for both
    # Same-size output windows for all persons, shifted inside the image where needed.
    y_lo = y_lo.clamp(max=ori_h - out_h)
    x_lo = x_lo.clamp(max=ori_w - out_w)
    ys = y_lo[:, None] + torch.arange(out_h, device=device)  # (P, out_h)
    xs = x_lo[:, None] + torch.arange(out_w, device=device)  # (P, out_w)
    # Continuous sampling coordinates in each person's F_mask window.
    src_y = (ys + 0.5) * scale_y - origin[:, :1]
    src_x = (xs + 0.5) * scale_x - origin[:, 1:]

    # Bilinear foreground: grid_sample with per-person grids (normalised, half-pixel).
    # Edge clamping at a window side inside F_mask only reaches taps that are all
    # uncovered, so it cannot change a thresholded sample.
    grid = torch.stack(
        [
            (2 * src_x / win_w - 1)[:, None, :].expand(num, out_h, out_w),
            (2 * src_y / win_h - 1)[:, :, None].expand(num, out_h, out_w),
        ],
        -1,
    ).to(foreground.dtype)
    fg = F.grid_sample(
        foreground[:, None], grid, mode="bilinear", padding_mode="border", align_corners=False
    )[:, 0]
    # Nearest labels: the F_mask cell containing the sampling point.
    cell_y = src_y.floor().long().clamp(0, win_h - 1)
    cell_x = src_x.floor().long().clamp(0, win_w - 1)
    person = torch.arange(num, device=device)[:, None, None]
    labels = label_map[person, cell_y[:, :, None], cell_x[:, None, :]].to(torch.uint8)
    window = labels.masked_fill_(~(fg > mask_thr), 0)
    if (out_h, out_w) == (ori_h, ori_w):
        return window  # the windows are the whole image
    # Paste through one flat index (8 bytes per window pixel, not three broadcast indices).
    flat = (person * ori_h + ys[:, :, None]) * ori_w + xs[:, None, :]
    out.view(-1)[flat.view(-1)] = window.view(-1)
    return out


def _window(
    covered_lines: Tensor, origin: Tensor, length: int, scale: float, size: int
) -> tuple[Tensor, Tensor]:
    """Output pixel range ``[lo, hi)`` whose samples can touch a covered line +- 1 cell.

    Args:
        covered_lines: ``(P, L_win)`` bool, window rows (or columns) with a covered cell.
        origin: ``(P,)`` F_mask index of each window's first line.
        length: F_mask rows (or columns).
        scale: F_mask units per output pixel.
        size: output length (H0 or W0).

    Returns:
        ``lo``, ``hi`` ``(P,)`` long, empty (``lo == hi``) for a person with no cell.
    """
    win = covered_lines.shape[1]
    any_line = covered_lines.any(1)
    first = origin + covered_lines.to(torch.uint8).argmax(1)
    last = origin + win - 1 - covered_lines.flip(1).to(torch.uint8).argmax(1)
    # Grow by one cell (bilinear support), convert [first - 1, last + 2) to pixels.
    lo = ((first - 1).clamp(min=0) / scale).floor().long().clamp(0, size)
    hi = ((last + 2).clamp(max=length) / scale).ceil().long().clamp(0, size)
    hi = torch.where(any_line, hi, lo)
    return lo, hi
