"""Drawing for ``predict``, the image loggers, the run report and the notebook (numpy only).

- :mod:`~smp_parsing.visualization.draw`: generic drawing (palettes, person-map colouring,
  overlays with legends, heatmaps) for any parsing model.
- :mod:`~smp_parsing.visualization.smp_panels`: SMP's Fig. 4 panels (centre heatmap, centres,
  offset arrows, part-class heatmaps, the 2 x 4 figure).

Both are re-exported here: ``from smp_parsing import visualization as vis; vis.overlay_parsing``.
"""

from smp_parsing.visualization.draw import (
    as_rgb_image,
    colorize_parsing,
    colorize_part_instances,
    denormalize_image,
    draw_legend,
    get_palette,
    legend_entries,
    make_instance_colors,
    make_palette,
    merge_person_maps,
    overlay_parsing,
    render_heatmap,
    render_prediction,
    to_numpy,
)
from smp_parsing.visualization.smp_panels import (
    HUMAN_CENTER_COLOR,
    PART_CENTER_COLOR,
    draw_centers,
    draw_offsets,
    figure_smp_panels,
    grid_to_pixels,
    part_class_heatmap,
    parts_present,
)

__all__ = [
    "HUMAN_CENTER_COLOR",
    "PART_CENTER_COLOR",
    "as_rgb_image",
    "colorize_parsing",
    "colorize_part_instances",
    "denormalize_image",
    "draw_centers",
    "draw_legend",
    "draw_offsets",
    "figure_smp_panels",
    "get_palette",
    "grid_to_pixels",
    "legend_entries",
    "make_instance_colors",
    "make_palette",
    "merge_person_maps",
    "overlay_parsing",
    "part_class_heatmap",
    "parts_present",
    "render_heatmap",
    "render_prediction",
    "to_numpy",
]
