"""Generic drawing: palettes, person-map colouring, overlays with legends, heatmaps.

Everything here works on numpy arrays (torch tensors are accepted and converted), so the module
imports without torch and the same pictures come out of every entry point (``predict``, the image
loggers, the run report, the notebook). SMP's own Fig. 4 panels (grid outputs: centres, offsets,
part-class heatmaps) are in :mod:`smp_parsing.visualization.smp_panels`.

Conventions:
    images are ``H x W x 3`` uint8 RGB; person maps are ``P x H x W`` integer class maps (one map
    per person, 0 = background, parts 1..C-1, the layout of :mod:`smp_parsing.metadata`); sizes
    are ``(height, width)``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from smp_parsing.metadata import get_dataset_meta

# Golden-ratio hue steps give a deterministic sequence of well separated hues for any count.
_GOLDEN_RATIO_CONJUGATE = 0.6180339887498949


def to_numpy(array: Any) -> np.ndarray:
    """Return ``array`` as a numpy array, detaching and moving torch tensors to the CPU."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def as_rgb_image(image: Any) -> np.ndarray:
    """Check and normalise an image to ``H x W x 3`` uint8 RGB.

    Args:
        image: ``H x W x 3`` or ``3 x H x W`` (channel first, e.g. a tensor) uint8 image, or a
            float image with values in ``[0, 1]``.

    Returns:
        A contiguous ``H x W x 3`` uint8 copy-safe array.

    Raises:
        ValueError: when the array is not a 3-channel image.
    """
    img = to_numpy(image)
    if img.ndim == 3 and img.shape[0] == 3 and img.shape[-1] != 3:
        img = np.transpose(img, (1, 2, 0))
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"expected an H x W x 3 RGB image, got an array of shape {img.shape}")
    if img.dtype != np.uint8:
        if np.issubdtype(img.dtype, np.floating) and img.size and img.max() <= 1.0:
            img = img * 255.0
        img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


def denormalize_image(image: Any, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undo the input normalisation of the data pipeline.

    Args:
        image: ``3 x H x W`` float network input (tensor or array), normalised as
            ``(pixel - mean) / std`` with pixels in 0..255.
        mean: per-channel mean (RGB), as in the data config.
        std: per-channel std (RGB), as in the data config.

    Returns:
        ``H x W x 3`` uint8 RGB image.
    """
    arr = to_numpy(image).astype(np.float32)
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise ValueError(f"expected a 3 x H x W normalised image, got shape {arr.shape}")
    mean_arr = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    std_arr = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    pixels = arr * std_arr + mean_arr
    return np.ascontiguousarray(
        np.clip(np.rint(pixels), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    )


# --------------------------------------------------------------------------------------------
# Palettes
# --------------------------------------------------------------------------------------------


def _rgb_to_lab(colors: np.ndarray) -> np.ndarray:
    """``(N, 3)`` uint8 RGB -> ``(N, 3)`` float CIELAB (L in 0..100), via OpenCV."""
    rgb = (colors.astype(np.float32) / 255.0).reshape(-1, 1, 3)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab).reshape(-1, 3)


@functools.lru_cache(maxsize=8)
def _class_palette(num_classes: int) -> np.ndarray:
    # Greedy farthest-point selection in CIELAB over a 6-level RGB cube: each new class colour
    # is the candidate farthest (perceptually) from all colours already chosen, starting from
    # black for the background. The sequence is a fixed prefix order, so the 15-colour DensePose
    # palette is the first 15 colours of the MHP one. Too dark or too pale candidates are left out:
    # they vanish on black backgrounds or against the white centre crosses.
    levels = np.linspace(0, 255, 6).round().astype(np.uint8)
    cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    lab = _rgb_to_lab(cube)
    usable = (lab[:, 0] > 30.0) & (lab[:, 0] < 92.0)
    candidates, cand_lab = cube[usable], lab[usable]
    if num_classes - 1 > len(candidates):
        raise ValueError(f"cannot build a palette of {num_classes} distinct colours")
    chosen = np.zeros((num_classes, 3), dtype=np.uint8)  # row 0 stays black (background)
    min_dist = np.linalg.norm(cand_lab - _rgb_to_lab(chosen[:1]), axis=1)
    for k in range(1, num_classes):
        best = int(np.argmax(min_dist))
        chosen[k] = candidates[best]
        min_dist = np.minimum(min_dist, np.linalg.norm(cand_lab - cand_lab[best], axis=1))
    chosen.setflags(write=False)
    return chosen


def make_palette(num_classes: int) -> np.ndarray:
    """Deterministic class palette with distinct colours.

    Args:
        num_classes: number of classes including the background (id 0).

    Returns:
        ``(num_classes, 3)`` uint8 RGB, row 0 black, all rows pairwise different.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return _class_palette(int(num_classes)).copy()


def get_palette(dataset: str = "mhp") -> np.ndarray:
    """Class palette of a data set by config name (``mhp``/``synthetic``: 59, ``densepose``: 15).

    Returns:
        ``(num_classes, 3)`` uint8 RGB, row 0 (background) black.
    """
    return make_palette(get_dataset_meta(dataset).num_classes)


def make_instance_colors(count: int, saturation: float = 0.9, value: float = 1.0) -> np.ndarray:
    """Vivid colours for instances (persons, part instances), deterministic.

    Hues follow golden-ratio steps so any prefix is well spread around the hue circle.

    Returns:
        ``(count, 3)`` uint8 RGB.
    """
    if count <= 0:
        return np.zeros((0, 3), np.uint8)
    hues = (np.arange(count) * _GOLDEN_RATIO_CONJUGATE + 0.05) % 1.0
    hsv = np.stack(
        [hues * 180.0, np.full(count, saturation * 255.0), np.full(count, value * 255.0)], -1
    )
    hsv = np.clip(np.rint(hsv), 0, 255).astype(np.uint8).reshape(-1, 1, 3)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).reshape(-1, 3)


# --------------------------------------------------------------------------------------------
# Parsing maps
# --------------------------------------------------------------------------------------------


def colorize_parsing(parsing: Any, palette: np.ndarray | str = "mhp") -> np.ndarray:
    """Colour a class map.

    Args:
        parsing: ``H x W`` integer class map (tensor or array).
        palette: ``(C, 3)`` uint8 palette, or a data-set name for :func:`get_palette`.

    Returns:
        ``H x W x 3`` uint8 RGB, ``palette[parsing]``.

    Raises:
        ValueError: when the map holds an id outside the palette.
    """
    pal = get_palette(palette) if isinstance(palette, str) else np.asarray(palette, np.uint8)
    labels = to_numpy(parsing)
    if labels.ndim != 2:
        raise ValueError(f"expected an H x W class map, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(pal)):
        raise ValueError(
            f"class map holds ids in [{labels.min()}, {labels.max()}] but the palette has "
            f"{len(pal)} colours"
        )
    return pal[labels.astype(np.int64)]


def _as_person_maps(person_maps: Any, hw: tuple[int, int] | None = None) -> np.ndarray:
    maps = to_numpy(person_maps)
    if maps.ndim == 2:
        maps = maps[None]
    if maps.ndim != 3:
        raise ValueError(f"expected P x H x W person maps, got shape {maps.shape}")
    if hw is not None and maps.shape[1:] != tuple(hw):
        raise ValueError(f"person maps of size {maps.shape[1:]} do not match the image size {hw}")
    return maps.astype(np.int64)


def merge_person_maps(person_maps: Any, scores: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Flatten per-person maps into one class map and one owner map.

    Where persons overlap, the higher-scoring one is on top (the last painted, as ``predict``
    paints persons in ascending score order); without scores, the later person wins.

    Args:
        person_maps: ``P x H x W`` integer class maps.
        scores: ``(P,)`` person scores, or ``None``.

    Returns:
        ``(class_map, owner)``: ``H x W`` int64 class ids and ``H x W`` int64 person index
        (``-1`` where no person has a part).
    """
    maps = _as_person_maps(person_maps)
    num_persons = maps.shape[0]
    if num_persons == 0:
        empty = np.zeros(maps.shape[1:], np.int64)
        return empty, empty - 1
    if scores is None:
        rank = np.arange(num_persons)
    else:
        score_arr = to_numpy(scores).astype(np.float64).reshape(-1)
        if score_arr.shape[0] != num_persons:
            raise ValueError(f"{score_arr.shape[0]} scores for {num_persons} person maps")
        rank = np.empty(num_persons, np.int64)
        rank[np.argsort(score_arr, kind="stable")] = np.arange(num_persons)
    # Priority of each person at each pixel: rank + 1 where it has a part, 0 elsewhere.
    priority = np.where(maps > 0, rank[:, None, None] + 1, 0)
    top = priority.argmax(axis=0)
    covered = priority.max(axis=0) > 0
    owner = np.where(covered, top, -1)
    class_map = np.where(covered, np.take_along_axis(maps, top[None], axis=0)[0], 0)
    return class_map, owner


def colorize_part_instances(person_maps: Any, scores: Any = None) -> np.ndarray:
    """Colour every part instance (one person's one class) with its own colour.

    Returns:
        ``H x W x 3`` uint8 RGB, black background.
    """
    class_map, owner = merge_person_maps(person_maps, scores)
    num_classes = int(class_map.max()) + 1
    key = np.where(class_map > 0, owner * num_classes + class_map, -1)
    uniq, inverse = np.unique(key, return_inverse=True)
    colors = make_instance_colors(len(uniq))
    colors[uniq == -1] = 0
    return colors[inverse.reshape(key.shape)]


def _font_scale(height: int, width: int) -> float:
    return float(np.clip(min(height, width) / 500.0, 0.35, 1.2))


def overlay_parsing(
    image: Any,
    person_maps: Any,
    scores: Any = None,
    alpha: float = 0.6,
    palette: np.ndarray | str = "mhp",
    outline_thickness: int | None = None,
    draw_labels: bool = True,
) -> np.ndarray:
    """Blend the part classes over an image and outline each person.

    Args:
        image: ``H x W x 3`` uint8 RGB image.
        person_maps: ``P x H x W`` integer class maps at the image size.
        scores: ``(P,)`` person scores shown in the labels, or ``None`` (labels show the index).
        alpha: opacity of the part colours.
        palette: class palette or data-set name.
        outline_thickness: person outline width in pixels (0 = no outline); default scales
            with the image (1 px per 200 px of the short side, at least 1).
        draw_labels: write ``#i score`` at the top-left of each person's box.

    Returns:
        ``H x W x 3`` uint8 RGB.
    """
    img = as_rgb_image(image)
    maps = _as_person_maps(person_maps, img.shape[:2])
    class_map, _ = merge_person_maps(maps, scores)
    colored = colorize_parsing(class_map, palette)
    fg = class_map > 0
    out = img.copy()
    blended = (1.0 - alpha) * img[fg].astype(np.float32) + alpha * colored[fg].astype(np.float32)
    out[fg] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)

    score_arr = None if scores is None else to_numpy(scores).astype(np.float64).reshape(-1)
    person_colors = make_instance_colors(maps.shape[0])
    font_scale = _font_scale(*img.shape[:2])
    if outline_thickness is None:
        outline_thickness = max(1, round(min(img.shape[:2]) / 200))
    # One cv2 call per person: drawing is inherently per-contour, and P is small.
    for p in range(maps.shape[0]):
        mask = (maps[p] > 0).astype(np.uint8)
        if not mask.any():
            continue
        color = tuple(int(c) for c in person_colors[p])
        if outline_thickness > 0:
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(out, contours, -1, color, outline_thickness)
        if draw_labels:
            text = f"#{p}" if score_arr is None else f"#{p} {score_arr[p]:.2f}"
            ys, xs = np.nonzero(mask)
            _draw_label(out, text, (int(xs.min()), int(ys.min())), color, font_scale)
    return out


def _draw_label(
    canvas: np.ndarray, text: str, top_left: tuple[int, int], color: tuple, font_scale: float
) -> None:
    """Text on a filled box of ``color``, kept inside the canvas."""
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
    x = int(np.clip(top_left[0], 0, max(0, canvas.shape[1] - tw - 2)))
    y = int(np.clip(top_left[1], th + base + 2, canvas.shape[0]))
    cv2.rectangle(canvas, (x, y - th - base - 2), (x + tw + 2, y), color, cv2.FILLED)
    text_color = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
    cv2.putText(
        canvas, text, (x + 1, y - base - 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, text_color,
        max(1, round(font_scale)), cv2.LINE_AA,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Legend
# --------------------------------------------------------------------------------------------


def legend_entries(
    class_ids: Any, class_names: Sequence[str], palette: np.ndarray
) -> list[tuple[int, str, tuple[int, int, int]]]:
    """The ``(id, name, rgb)`` rows of a legend: the given non-background ids, sorted, unique."""
    ids = np.unique(to_numpy(class_ids).astype(np.int64).reshape(-1))
    ids = ids[ids > 0]
    if ids.size and ids.max() >= min(len(class_names), len(palette)):
        raise ValueError(
            f"class id {int(ids.max())} has no name/colour ({len(class_names)} names, "
            f"{len(palette)} colours)"
        )
    return [(int(i), class_names[i], tuple(int(c) for c in palette[i])) for i in ids]


def draw_legend(
    class_ids: Any,
    class_names: Sequence[str] | None = None,
    palette: np.ndarray | None = None,
    height: int = 256,
    width: int | None = None,
    dataset: str = "mhp",
    font_scale: float = 0.4,
    background: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """Class colour legend of the classes present.

    Entries fill columns top to bottom; more columns are added when they do not fit ``height``.

    Args:
        class_ids: class ids to list (any shape, e.g. a whole parsing map); 0 is skipped.
        class_names: names by id; default the data set's names from :mod:`smp_parsing.metadata`.
        palette: colours by id; default the data set's palette.
        height: panel height in pixels.
        width: panel width; default just wide enough for all columns.
        dataset: data-set name used for the defaults.
        font_scale: OpenCV Hershey font scale of the names.
        background: panel colour.

    Returns:
        ``height x width x 3`` uint8 RGB panel, one filled swatch of the class colour per entry.
    """
    names = class_names if class_names is not None else get_dataset_meta(dataset).classes
    pal = palette if palette is not None else get_palette(dataset)
    entries = legend_entries(class_ids, names, pal)
    (_, text_h), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
    row_h = text_h + base + 6
    swatch, pad = row_h - 4, 6
    rows_per_col = max(1, (height - 2 * pad) // row_h)
    n_cols = max(1, -(-len(entries) // rows_per_col))
    text_w = max(
        [cv2.getTextSize(f"{i} {n}", cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)[0][0]
         for i, n, _ in entries] or [0]
    )  # fmt: skip
    col_w = swatch + 6 + text_w + pad
    if width is None:
        width = pad + n_cols * col_w
    panel = np.empty((height, width, 3), np.uint8)
    panel[:] = background
    for k, (cid, name, color) in enumerate(entries):
        col, row = divmod(k, rows_per_col)
        x0, y0 = pad + col * col_w, pad + row * row_h
        cv2.rectangle(panel, (x0, y0), (x0 + swatch - 1, y0 + swatch - 1), color, cv2.FILLED)
        cv2.putText(
            panel, f"{cid} {name}", (x0 + swatch + 6, y0 + swatch - base), cv2.FONT_HERSHEY_SIMPLEX,
            font_scale, (0, 0, 0), 1, cv2.LINE_AA,
        )  # fmt: skip
    return panel


def render_prediction(
    image: Any,
    pred: Mapping[str, Any],
    dataset: str = "mhp",
    alpha: float = 0.6,
    outline_thickness: int | None = None,
    legend_font_scale: float | None = None,
) -> np.ndarray:
    """The picture ``predict`` writes per image and the image loggers log.

    Args:
        image: ``H x W x 3`` uint8 RGB image (original size).
        pred: ``{"parsing": P x H x W class maps, "scores": (P,)}`` (scores optional), as
            returned per image by ``SMP.predict``.
        dataset: data-set name (palette and class names).
        alpha: opacity of the part colours.
        outline_thickness: person outline width in pixels (default: scaled to the image).
        legend_font_scale: font scale of the legend names; default scaled to the image height.

    Returns:
        ``H x (W + legend width) x 3`` uint8 RGB: the overlay with a legend of the predicted
        classes on the right.
    """
    if "parsing" not in pred:
        raise KeyError(f"prediction has no 'parsing' entry (keys: {sorted(pred)})")
    img = as_rgb_image(image)
    maps = _as_person_maps(pred["parsing"], img.shape[:2])
    palette = get_palette(dataset)
    overlay = overlay_parsing(
        img, maps, pred.get("scores"), alpha=alpha, palette=palette,
        outline_thickness=outline_thickness,
    )  # fmt: skip
    if legend_font_scale is None:
        legend_font_scale = float(np.clip(img.shape[0] / 800.0, 0.4, 1.0))
    legend = draw_legend(
        maps, palette=palette, height=img.shape[0], dataset=dataset, font_scale=legend_font_scale
    )
    return np.concatenate([overlay, legend], axis=1)


# --------------------------------------------------------------------------------------------
# Heatmaps
# --------------------------------------------------------------------------------------------


def render_heatmap(
    heatmap: Any,
    size: tuple[int, int] | None = None,
    vmin: float = 0.0,
    vmax: float = 1.0,
    colormap: int = cv2.COLORMAP_JET,
) -> np.ndarray:
    """Colour a confidence map with a jet colour map (blue = ``vmin``, red = ``vmax``).

    Args:
        heatmap: ``S_h x S_w`` float map (probabilities, not logits).
        size: output ``(height, width)``; resized with nearest neighbour so grid cells stay
            visible. Default: the map size.
        vmin: value shown as the coldest colour (values below are clipped).
        vmax: value shown as the hottest colour.
        colormap: an OpenCV colour map id.

    Returns:
        ``height x width x 3`` uint8 RGB.
    """
    heat = to_numpy(heatmap).astype(np.float32)
    heat = np.squeeze(heat)
    if heat.ndim != 2:
        raise ValueError(f"expected a 2-D heatmap, got shape {to_numpy(heatmap).shape}")
    if vmax <= vmin:
        raise ValueError(f"vmax ({vmax}) must be greater than vmin ({vmin})")
    scaled = np.clip((heat - vmin) / (vmax - vmin), 0.0, 1.0)
    gray = np.rint(scaled * 255.0).astype(np.uint8)
    rgb = cv2.cvtColor(cv2.applyColorMap(gray, colormap), cv2.COLOR_BGR2RGB)
    if size is not None and tuple(size) != rgb.shape[:2]:
        rgb = cv2.resize(rgb, (int(size[1]), int(size[0])), interpolation=cv2.INTER_NEAREST)
    return rgb
