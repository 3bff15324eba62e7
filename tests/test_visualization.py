"""Tests of smp_parsing.visualization (draw + smp_panels) on small arrays: shapes, colours, legends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smp_parsing import visualization as vis
from smp_parsing.metadata import DENSEPOSE_CLASSES, MHP_V2_CLASSES


def _two_person_maps(h: int = 48, w: int = 64) -> np.ndarray:
    """Person 0: face block over pants block on the left; person 1: hair over t-shirt on the right."""
    maps = np.zeros((2, h, w), np.uint8)
    maps[0, 4:20, 4:20] = 3
    maps[0, 20:44, 4:20] = 17
    maps[1, 6:14, 32:60] = 4
    maps[1, 14:40, 32:60] = 12
    return maps


# ---------------------------------------------------------------- palettes


@pytest.mark.parametrize(("dataset", "n"), [("mhp", 59), ("densepose", 15), ("synthetic", 59)])
def test_palette_shape_black_background_and_distinct(dataset, n):
    pal = vis.get_palette(dataset)
    assert pal.shape == (n, 3) and pal.dtype == np.uint8
    assert (pal[0] == 0).all()
    assert len(np.unique(pal, axis=0)) == n
    # Perceptually distinct, not just different bytes: every pair at least 15 CIELAB units apart.
    lab = vis.draw._rgb_to_lab(pal)
    dist = np.linalg.norm(lab[:, None] - lab[None], axis=-1)
    assert dist[~np.eye(n, dtype=bool)].min() > 15.0


def test_palette_deterministic_and_prefix_consistent():
    assert np.array_equal(vis.get_palette("mhp"), vis.make_palette(len(MHP_V2_CLASSES)))
    assert np.array_equal(
        vis.get_palette("densepose"), vis.get_palette("mhp")[: len(DENSEPOSE_CLASSES)]
    )
    # The returned palette is a copy: editing it does not change the next call.
    pal = vis.get_palette("mhp")
    pal[1] = 0
    assert not (vis.get_palette("mhp")[1] == 0).all()


def test_palette_unknown_dataset():
    with pytest.raises(KeyError, match="unknown data set"):
        vis.get_palette("cityscapes")


def test_instance_colors_distinct():
    colors = vis.make_instance_colors(12)
    assert colors.shape == (12, 3) and len(np.unique(colors, axis=0)) == 12


# ---------------------------------------------------------------- parsing maps


def test_colorize_parsing_known_pixels_and_tensor_input():
    pal = vis.get_palette("mhp")
    parsing = np.array([[0, 1], [58, 3]], np.uint8)
    out = vis.colorize_parsing(torch.from_numpy(parsing), "mhp")
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert (out[0, 0] == 0).all()
    assert (
        (out[0, 1] == pal[1]).all() and (out[1, 0] == pal[58]).all() and (out[1, 1] == pal[3]).all()
    )


def test_colorize_parsing_rejects_ids_outside_palette():
    with pytest.raises(ValueError, match="15 colours"):
        vis.colorize_parsing(np.array([[0, 20]]), "densepose")


def _merge_loop(maps: np.ndarray, scores: np.ndarray | None):
    class_map = np.zeros(maps.shape[1:], np.int64)
    owner = np.full(maps.shape[1:], -1, np.int64)
    order = range(len(maps)) if scores is None else np.argsort(scores, kind="stable")
    for p in order:  # paint in ascending score order: the best person ends on top
        fg = maps[p] > 0
        class_map[fg] = maps[p][fg]
        owner[fg] = p
    return class_map, owner


@pytest.mark.parametrize("with_scores", [True, False])
def test_merge_person_maps_matches_loop(with_scores):
    rng = np.random.default_rng(0)
    maps = rng.integers(0, 6, size=(5, 9, 11)) * (rng.random((5, 9, 11)) < 0.4)
    scores = rng.random(5) if with_scores else None
    got = vis.merge_person_maps(maps, scores)
    want = _merge_loop(maps, scores)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_merge_person_maps_empty():
    class_map, owner = vis.merge_person_maps(np.zeros((0, 4, 5), np.uint8))
    assert class_map.shape == (4, 5) and (class_map == 0).all() and (owner == -1).all()


def test_colorize_part_instances_one_colour_per_instance():
    maps = _two_person_maps()
    maps[1, 30:40, 32:60] = 3  # person 1 also has a "face": same class, other instance
    out = vis.colorize_part_instances(maps)
    assert (out[0, 0] == 0).all()
    instance_colors = {
        tuple(out[y, x]) for y, x in [(10, 10), (30, 10), (8, 40), (20, 40), (35, 40)]
    }
    assert len(instance_colors) == 5
    assert len(np.unique(out.reshape(-1, 3), axis=0)) == 6  # five instances + background


def test_overlay_parsing_pixels():
    img = np.full((48, 64, 3), 100, np.uint8)
    maps = _two_person_maps()
    pal = vis.get_palette("mhp")
    out = vis.overlay_parsing(img, maps, scores=[0.9, 0.4], alpha=0.5, draw_labels=False)
    assert out.shape == img.shape and out.dtype == np.uint8
    # Inside a part (away from the outline): exact blend of image and class colour.
    want = np.rint(0.5 * 100 + 0.5 * pal[17].astype(float)).astype(np.uint8)
    assert (out[32, 12] == want).all()
    # Far background pixel untouched; outline pixel in the person's colour.
    assert (out[46, 30] == 100).all()
    person_colors = vis.make_instance_colors(2)
    assert (out[30, 4] == person_colors[0]).all()
    assert (out[30, 59] == person_colors[1]).all()


def test_overlay_parsing_labels_and_no_outline():
    img = np.zeros((48, 64, 3), np.uint8)
    maps = _two_person_maps()
    plain = vis.overlay_parsing(img, maps, outline_thickness=0, draw_labels=False)
    labelled = vis.overlay_parsing(img, maps, scores=[0.9, 0.4], outline_thickness=0)
    # Without outline nor label, background stays black; the label box changes pixels near the
    # top-left corner of each person's box.
    assert (plain[maps.max(0) == 0] == 0).all()
    assert (labelled[:6, 4:20] != plain[:6, 4:20]).any()


def test_overlay_parsing_size_mismatch():
    with pytest.raises(ValueError, match="do not match the image size"):
        vis.overlay_parsing(np.zeros((10, 10, 3), np.uint8), np.zeros((1, 12, 10), np.uint8))


def test_as_rgb_image_channel_first_and_float():
    chw = torch.zeros(3, 5, 7)
    chw[0] = 1.0
    img = vis.as_rgb_image(chw)
    assert img.shape == (5, 7, 3) and (img[..., 0] == 255).all() and (img[..., 1:] == 0).all()
    with pytest.raises(ValueError, match="RGB image"):
        vis.as_rgb_image(np.zeros((5, 7)))


def test_denormalize_image_inverts_normalisation():
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    img = np.random.default_rng(1).integers(0, 256, (6, 8, 3)).astype(np.uint8)
    norm = (img.astype(np.float32) - np.array(mean, np.float32)) / np.array(std, np.float32)
    back = vis.denormalize_image(torch.from_numpy(norm).permute(2, 0, 1), mean, std)
    assert np.array_equal(back, img)


# ---------------------------------------------------------------- legend and prediction


def test_legend_lists_present_classes_only():
    pal = vis.get_palette("mhp")
    parsing = _two_person_maps()
    entries = vis.legend_entries(parsing, MHP_V2_CLASSES, pal)
    assert [e[0] for e in entries] == [3, 4, 12, 17]
    assert [e[1] for e in entries] == ["face", "hair", "t-shirt", "pants"]
    panel = vis.draw_legend(parsing, height=100)
    assert panel.shape[0] == 100 and panel.dtype == np.uint8
    colors = {tuple(c) for c in panel.reshape(-1, 3)}
    for cid in (3, 4, 12, 17):
        # A filled swatch: many pixels of exactly the class colour.
        assert (panel == pal[cid]).all(-1).sum() >= 25
    for absent in (1, 2, 5, 58):
        assert tuple(pal[absent]) not in colors


def test_legend_wraps_into_columns():
    tall = vis.draw_legend(np.arange(1, 21), height=400)
    short = vis.draw_legend(np.arange(1, 21), height=80)
    assert short.shape[0] == 80 and short.shape[1] > 2 * tall.shape[1] - 20
    fixed = vis.draw_legend(np.arange(1, 21), height=80, width=50)
    assert fixed.shape == (80, 50, 3)


def test_legend_rejects_unknown_id():
    with pytest.raises(ValueError, match="no name/colour"):
        vis.draw_legend([20], dataset="densepose")


def test_render_prediction_is_overlay_plus_legend():
    img = np.full((48, 64, 3), 90, np.uint8)
    maps = _two_person_maps()
    scores = torch.tensor([0.8, 0.3])
    out = vis.render_prediction(
        torch.from_numpy(img), {"parsing": torch.from_numpy(maps), "scores": scores}
    )
    assert out.shape[0] == 48 and out.shape[1] > 64 and out.dtype == np.uint8
    assert np.array_equal(out[:, :64], vis.overlay_parsing(img, maps, scores.numpy()))
    legend = out[:, 64:]
    assert (legend == vis.get_palette("mhp")[17]).all(-1).sum() > 0


def test_render_prediction_no_person_and_densepose():
    img = np.zeros((32, 32, 3), np.uint8)
    out = vis.render_prediction(
        img, {"parsing": np.zeros((0, 32, 32), np.uint8)}, dataset="densepose"
    )
    assert out.shape[0] == 32 and np.array_equal(out[:, :32], img)
    with pytest.raises(KeyError, match="parsing"):
        vis.render_prediction(img, {"scores": []})


# ---------------------------------------------------------------- heatmaps and offsets


def test_render_heatmap_jet_and_nearest_resize():
    heat = np.array([[0.0, 1.0], [0.5, 0.0]], np.float32)
    out = vis.render_heatmap(torch.from_numpy(heat), size=(20, 40))
    assert out.shape == (20, 40, 3) and out.dtype == np.uint8
    low, high = out[5, 5].astype(int), out[5, 30].astype(int)
    assert low[2] > 100 and low[0] < 30  # cold end of jet: blue
    assert high[0] > 100 and high[2] < 30  # hot end: red
    # Nearest resize: each grid cell is a flat block of one colour.
    assert (out[:10, 20:] == out[0, 20]).all()
    mid = out[15, 5].astype(int)
    assert mid[1] > 200  # 0.5 is green-ish in jet
    with pytest.raises(ValueError, match="2-D heatmap"):
        vis.render_heatmap(np.zeros((2, 3, 4)))


def test_grid_to_pixels():
    pts = vis.grid_to_pixels(np.array([[0, 0], [3, 1]]), 4, (40, 80))
    assert np.allclose(pts, [[10.0, 5.0], [70.0, 15.0]])


def test_draw_offsets_arrows_where_expected():
    canvas = np.zeros((100, 100, 3), np.uint8)
    centers = np.array([[2.0, 5.0]])  # grid 10 x 10 -> pixel (25, 55)
    part_centers = np.full((1, 3, 2), np.nan)
    part_centers[0, 0] = [8.0, 5.0]  # pixel (85, 55): horizontal arrow to the right
    part_centers[0, 1] = [2.0, 0.0]  # pixel (25, 5): drawn only when valid
    valid = np.array([[True, False, True]])  # part 2 is NaN: skipped even though "valid"
    color = np.array([[0, 200, 0]], np.uint8)
    out = vis.draw_offsets(
        canvas, centers, part_centers, 10, part_valid=valid, arrow_colors=color, thickness=3
    )
    assert out.shape == canvas.shape
    assert (out[55, 55] == [0, 200, 0]).all()  # middle of the arrow: the person's colour
    assert (out[55, 25] == vis.HUMAN_CENTER_COLOR).all()  # white cross on the human centre
    assert (out[55, 85] == vis.PART_CENTER_COLOR).all()  # yellow cross on the part centre
    assert (out[5:20, 20:30] == 0).all()  # the invalid part has no arrow
    assert (canvas == 0).all()  # input untouched


def test_draw_offsets_default_all_finite_and_shape_check():
    canvas = np.zeros((40, 40, 3), np.uint8)
    out = vis.draw_offsets(canvas, [[1, 1]], [[[3, 1]]], 4)
    assert (out != 0).any()
    with pytest.raises(ValueError, match=r"\(P, C_P, 2\)"):
        vis.draw_offsets(canvas, [[1, 1], [2, 2]], [[[3, 1]]], 4)


def test_draw_centers_crosses():
    out = vis.draw_centers(np.zeros((40, 40, 3), np.uint8), np.array([[1, 2]]), 4)
    assert (out[25, 15] == 255).all() and (out[0, 0] == 0).all()


def test_figure_smp_panels(tmp_path):
    img = np.full((48, 64, 3), 120, np.uint8)
    maps = _two_person_maps()
    rng = np.random.default_rng(0)
    fig = vis.figure_smp_panels(
        img,
        center_heatmap=rng.random((1, 10, 10)),
        centers=np.array([[2, 3], [7, 4]]),
        part_centers=rng.random((2, 58, 2)) * 10,
        part_heatmap=rng.random((8, 8)),
        pred_parsing=torch.from_numpy(maps),
        gt_parsing=maps[::-1],
        pred_scores=[0.7, 0.6],
        part_class_name="face",
        grid_image=np.zeros((64, 64, 3), np.uint8),
    )
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 8
    assert "Category preds (face)" in titles and "Ground truth (2 persons)" in titles
    path = tmp_path / "fig.png"
    fig.savefig(path, dpi=40)
    assert path.stat().st_size > 1000


def test_module_imports_without_torch():
    # predict / report tooling must be able to draw without paying the torch import.
    import subprocess
    import sys

    code = "import sys, smp_parsing.visualization; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_package_reexports_generic_drawing_and_smp_panels():
    """``vis.<name>`` keeps working for every public name of both modules; generic drawing
    does not depend on SMP's panels."""
    import ast
    import inspect

    for module in (vis.draw, vis.smp_panels):
        public = [n for n, obj in vars(module).items() if not n.startswith("_")
                  and inspect.isfunction(obj) and obj.__module__ == module.__name__]  # fmt: skip
        assert public and all(getattr(vis, n) is getattr(module, n) for n in public)
        assert set(public) <= set(vis.__all__)
    assert vis.HUMAN_CENTER_COLOR == (255, 255, 255) and vis.PART_CENTER_COLOR == (255, 255, 0)
    tree = ast.parse(inspect.getsource(vis.draw))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(str(m).startswith("smp_parsing.visualization") for m in imported)


def test_parts_present_matches_loop():
    rng = np.random.default_rng(3)
    maps = rng.integers(0, 8, size=(4, 6, 7)) * (rng.random((4, 6, 7)) < 0.3)
    got = vis.parts_present(maps, 7)
    want = np.zeros((4, 7), bool)
    for p in range(4):
        for c in range(1, 8):
            want[p, c - 1] = (maps[p] == c).any()
    assert np.array_equal(got, want)
    with pytest.raises(ValueError, match="exceeds num_part_classes"):
        vis.parts_present(maps, 3)
    assert vis.parts_present(np.zeros((0, 6, 7), np.uint8), 7).shape == (0, 7)


def test_part_class_heatmap_max_over_levels():
    coarse = np.zeros((2, 2), np.float32)
    coarse[0, 1] = 0.8  # top-right quarter after nearest resize to 4 x 4
    fine = np.zeros((4, 4), np.float32)
    fine[3, 0] = 0.6
    fine[0, 3] = 0.5  # lower than the coarse level there: the max keeps 0.8
    out = vis.part_class_heatmap([torch.from_numpy(coarse), fine], (4, 4))
    assert out.shape == (4, 4)
    assert out[0, 3] == pytest.approx(0.8) and out[1, 2] == pytest.approx(0.8)
    assert out[3, 0] == pytest.approx(0.6) and out[2, 1] == 0.0


def test_no_person_inputs():
    canvas = np.zeros((20, 20, 3), np.uint8)
    out = vis.draw_offsets(canvas, np.zeros((0, 2)), np.zeros((0, 58, 2)), 5)
    assert np.array_equal(out, canvas)
    empty = np.zeros((0, 20, 20), np.uint8)
    assert np.array_equal(vis.overlay_parsing(canvas, empty), canvas)
    assert (vis.colorize_part_instances(empty) == 0).all()
