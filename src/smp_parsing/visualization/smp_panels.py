"""SMP's Fig. 4 panels: grid outputs (centre heatmap, centres, offsets, part classes) drawn.

Grid coordinates are ``(x, y)`` cells of an ``S x S`` grid laid over the whole (padded) network
input, the layout of ``SMP.predict(..., return_intermediates=True)``; images are ``H x W x 3``
uint8 RGB and person maps ``P x H x W`` class maps, as in :mod:`smp_parsing.visualization.draw`,
whose generic pieces (palettes, overlays, legends, heatmaps) the panels are made of. Numpy only,
like ``draw`` (matplotlib is imported when a figure is made).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from smp_parsing.visualization.draw import (
    _as_person_maps,
    as_rgb_image,
    colorize_part_instances,
    draw_legend,
    get_palette,
    make_instance_colors,
    overlay_parsing,
    render_heatmap,
    to_numpy,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Colours with a fixed meaning in the paper's Fig. 4: white crosses mark human centres, yellow
# crosses the part locations the offsets point at.
HUMAN_CENTER_COLOR: tuple[int, int, int] = (255, 255, 255)
PART_CENTER_COLOR: tuple[int, int, int] = (255, 255, 0)


def grid_to_pixels(
    points: Any, grid_size: int | tuple[int, int], canvas_hw: tuple[int, int]
) -> np.ndarray:
    """Map grid cell coordinates to the pixel centres of a canvas covering the whole grid.

    Args:
        points: ``(..., 2)`` grid coordinates ``(x, y)``.
        grid_size: ``S`` or ``(S_h, S_w)``.
        canvas_hw: canvas ``(height, width)`` (e.g. a heatmap rendered at any size, or the
            padded network input).

    Returns:
        float array of the same shape, ``(x_px, y_px)``.
    """
    s_h, s_w = (grid_size, grid_size) if np.isscalar(grid_size) else grid_size
    pts = to_numpy(points).astype(np.float64)
    scale = np.array([canvas_hw[1] / s_w, canvas_hw[0] / s_h])
    return (pts + 0.5) * scale


def _marker_size(canvas: np.ndarray, grid_size: int | tuple[int, int]) -> int:
    s = grid_size if np.isscalar(grid_size) else max(grid_size)
    return int(max(5, round(1.2 * min(canvas.shape[:2]) / s)))


def part_class_heatmap(level_maps: Sequence[Any], size: tuple[int, int]) -> np.ndarray:
    """One part class's category confidence over all part levels, on one grid.

    The part head predicts each class on every FPN level's own ``S_l x S_l`` grid; for display
    (Fig. 4 "Category preds") the levels are resized to one grid (nearest, so each cell keeps a
    real prediction) and the maximum is taken.

    Args:
        level_maps: per level an ``S_l x S_l`` probability map of the class.
        size: output grid ``(S_h, S_w)``, e.g. the center grid.

    Returns:
        ``S_h x S_w`` float32 map.
    """
    if not level_maps:
        raise ValueError("part_class_heatmap needs at least one level map")
    resized = [
        cv2.resize(
            np.squeeze(to_numpy(m)).astype(np.float32),
            (int(size[1]), int(size[0])),
            interpolation=cv2.INTER_NEAREST,
        )
        for m in level_maps
    ]
    return np.max(np.stack(resized), axis=0)


def parts_present(person_maps: Any, num_part_classes: int) -> np.ndarray:
    """Which part classes each person's map contains.

    Args:
        person_maps: ``P x H x W`` integer class maps.
        num_part_classes: ``C_P`` (classes 1..C_P).

    Returns:
        ``(P, C_P)`` bool, column ``c - 1`` for class ``c``.
    """
    maps = _as_person_maps(person_maps)
    num_persons = maps.shape[0]
    if maps.size and maps.max() > num_part_classes:
        raise ValueError(f"class id {int(maps.max())} exceeds num_part_classes={num_part_classes}")
    # One bincount over (person, class) pairs for all persons at once.
    flat = maps.reshape(num_persons, maps.shape[1] * maps.shape[2])
    person_offset = np.arange(num_persons)[:, None] * (num_part_classes + 1)
    counts = np.bincount(
        (flat + person_offset).ravel(), minlength=num_persons * (num_part_classes + 1)
    )
    return counts.reshape(num_persons, num_part_classes + 1)[:, 1:] > 0


def draw_centers(
    canvas: Any,
    centers: Any,
    grid_size: int | tuple[int, int],
    color: tuple[int, int, int] = HUMAN_CENTER_COLOR,
    thickness: int = 2,
) -> np.ndarray:
    """Draw crosses at grid positions (detected human centres by default, white as in Fig. 4).

    Args:
        canvas: ``H x W x 3`` uint8 image covering the whole grid.
        centers: ``(P, 2)`` grid coordinates ``(x, y)``.
        grid_size: ``S`` or ``(S_h, S_w)``.
        color: cross colour.
        thickness: line width.

    Returns:
        A copy of the canvas with the crosses.
    """
    out = as_rgb_image(canvas).copy()
    pts = grid_to_pixels(np.asarray(to_numpy(centers), np.float64).reshape(-1, 2), grid_size,
                         out.shape[:2])  # fmt: skip
    size = _marker_size(out, grid_size)
    for x, y in pts[np.isfinite(pts).all(axis=1)]:
        cv2.drawMarker(out, (round(x), round(y)), color, cv2.MARKER_CROSS, size, thickness)
    return out


def draw_offsets(
    image_or_heatmap: Any,
    centers: Any,
    part_centers: Any,
    grid_size: int | tuple[int, int],
    part_valid: Any = None,
    arrow_colors: np.ndarray | None = None,
    thickness: int = 1,
) -> np.ndarray:
    """Arrows from each human centre to its part centres (the paper's Fig. 4 "offsets output").

    Args:
        image_or_heatmap: ``H x W x 3`` uint8 canvas covering the whole grid.
        centers: ``(P, 2)`` human-centre grid coordinates ``(x, y)``.
        part_centers: ``(P, C_P, 2)`` part-centre grid coordinates (``cell - offset``).
        grid_size: ``S`` or ``(S_h, S_w)`` of the centre grid.
        part_valid: ``(P, C_P)`` bool, which parts to draw (e.g. the parts kept by the decoder);
            default all finite entries.
        arrow_colors: ``(P, 3)`` uint8 arrow colour per person; default :func:`make_instance_colors`.
        thickness: arrow line width.

    Returns:
        A copy of the canvas with the arrows, yellow crosses at the part centres and white crosses
        at the human centres.
    """
    out = as_rgb_image(image_or_heatmap).copy()
    ctr = np.asarray(to_numpy(centers), np.float64).reshape(-1, 2)
    parts = np.asarray(to_numpy(part_centers), np.float64)
    if parts.ndim != 3 or parts.shape[0] != ctr.shape[0] or parts.shape[2] != 2:
        raise ValueError(
            f"part_centers must be (P, C_P, 2) with P = {ctr.shape[0]} centres, got {parts.shape}"
        )
    valid = np.isfinite(parts).all(axis=-1)
    if part_valid is not None:
        valid &= to_numpy(part_valid).astype(bool).reshape(valid.shape)
    ctr_px = grid_to_pixels(ctr, grid_size, out.shape[:2])
    parts_px = grid_to_pixels(np.where(np.isfinite(parts), parts, 0.0), grid_size, out.shape[:2])
    colors = make_instance_colors(len(ctr)) if arrow_colors is None else np.asarray(arrow_colors)
    size = _marker_size(out, grid_size)
    person_idx, part_idx = np.nonzero(valid)
    # A dark shadow under every arrow keeps it readable on any background (jet heatmaps too).
    for shadow in (True, False):
        for p, k in zip(person_idx, part_idx, strict=True):
            cv2.arrowedLine(
                out, tuple(int(round(v)) for v in ctr_px[p]),
                tuple(int(round(v)) for v in parts_px[p, k]),
                (0, 0, 0) if shadow else tuple(int(c) for c in colors[p]),
                thickness + 2 if shadow else thickness, cv2.LINE_AA, tipLength=0.15,
            )  # fmt: skip
    for x, y in parts_px[valid]:
        cv2.drawMarker(
            out, (round(x), round(y)), PART_CENTER_COLOR, cv2.MARKER_CROSS, size // 2 + 2
        )
    return draw_centers(out, ctr, grid_size, HUMAN_CENTER_COLOR, thickness=max(1, thickness + 1))


# --------------------------------------------------------------------------------------------
# Fig. 4 panels
# --------------------------------------------------------------------------------------------


def figure_smp_panels(
    image: Any,
    center_heatmap: Any,
    centers: Any,
    part_centers: Any,
    part_heatmap: Any,
    pred_parsing: Any,
    gt_parsing: Any,
    pred_scores: Any = None,
    part_valid: Any = None,
    part_class_name: str = "part",
    grid_image: Any = None,
    dataset: str = "mhp",
    cell_pixels: int = 8,
    figsize: tuple[float, float] = (16.0, 8.5),
) -> Figure:
    """The paper's Fig. 4 for one image, as a matplotlib figure (2 x 4 panels).

    Panels: the image; the center heatmap with the detected human centres; the offsets as arrows
    from each human centre to its part centres; one part-class heatmap; the part masks (one colour
    per part instance); the final per-person parsing; the GT parsing; the class legend. As in the
    paper, grid outputs are shown at ``S x S``.

    Args:
        image: ``H x W x 3`` uint8 RGB image (original size).
        center_heatmap: ``S x S`` human-center probabilities.
        centers: ``(P, 2)`` detected human centres, grid ``(x, y)``.
        part_centers: ``(P, C_P, 2)`` part centres pointed at by the offsets, grid ``(x, y)``.
        part_heatmap: ``S' x S'`` category probabilities of one part class.
        pred_parsing: ``P x H x W`` predicted person maps at the image size.
        gt_parsing: ``G x H x W`` ground-truth person maps at the image size.
        pred_scores: ``(P,)`` person scores, or ``None``.
        part_valid: ``(P, C_P)`` parts to draw arrows for; default the part classes present in
            each person's predicted map (the parts the decoder kept).
        part_class_name: name of the class of ``part_heatmap`` (panel title).
        grid_image: ``H' x W' x 3`` uint8 view of the padded network input, used as the
            background of the offsets panel (the grid covers the padded input); default the center
            heatmap.
        dataset: data-set name (palette and class names).
        cell_pixels: display pixels per grid cell for the grid panels.
        figsize: matplotlib figure size in inches.

    Returns:
        A :class:`matplotlib.figure.Figure` (not attached to pyplot; ``fig.savefig`` works).
    """
    from matplotlib.figure import Figure

    img = as_rgb_image(image)
    center = np.squeeze(to_numpy(center_heatmap).astype(np.float32))
    grid_hw = center.shape
    grid_px = (grid_hw[0] * cell_pixels, grid_hw[1] * cell_pixels)
    heat_rgb = render_heatmap(center, grid_px)
    centers_panel = draw_centers(heat_rgb, centers, grid_hw)
    if grid_image is None:
        offsets_bg = heat_rgb
    else:
        bg = as_rgb_image(grid_image)
        offsets_bg = cv2.resize(bg, (grid_px[1], grid_px[0]), interpolation=cv2.INTER_AREA)
    pred_maps = _as_person_maps(pred_parsing, img.shape[:2])
    parts = to_numpy(part_centers)
    if part_valid is None and parts.ndim == 3 and parts.shape[0] == pred_maps.shape[0]:
        part_valid = parts_present(pred_maps, parts.shape[1])
    offsets_panel = draw_offsets(offsets_bg, centers, parts, grid_hw, part_valid=part_valid)
    part_heat = np.squeeze(to_numpy(part_heatmap).astype(np.float32))
    part_px = (part_heat.shape[0] * cell_pixels, part_heat.shape[1] * cell_pixels)
    part_panel = render_heatmap(part_heat, part_px)

    gt_maps = _as_person_maps(gt_parsing, img.shape[:2])
    palette = get_palette(dataset)
    masks_panel = colorize_part_instances(pred_maps, pred_scores)
    pred_panel = overlay_parsing(img, pred_maps, pred_scores, palette=palette)
    gt_panel = overlay_parsing(img, gt_maps, None, palette=palette)
    present = np.union1d(np.unique(pred_maps), np.unique(gt_maps))
    legend = draw_legend(present, palette=palette, height=max(img.shape[0], 200), dataset=dataset)

    n_pred, n_gt = pred_maps.shape[0], gt_maps.shape[0]
    panels = [
        (img, "Image"),
        (centers_panel, f"Center preds + {len(np.reshape(to_numpy(centers), (-1, 2)))} centers"),
        (offsets_panel, "Offsets output (white: human, yellow: parts)"),
        (part_panel, f"Category preds ({part_class_name})"),
        (masks_panel, "Part masks (one colour per part instance)"),
        (pred_panel, f"Prediction ({n_pred} persons)"),
        (gt_panel, f"Ground truth ({n_gt} persons)"),
        (legend, "Classes"),
    ]
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(2, 4)
    for ax, (panel, title) in zip(axes.ravel(), panels, strict=True):
        ax.imshow(panel, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    return fig
