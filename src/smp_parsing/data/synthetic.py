"""Synthetic MHP v2: a procedural data set written in the exact MHP v2 layout.

Every image holds 1..``max_persons`` articulated figures drawn with OpenCV on a textured
background. Figures face the camera, so a figure's **right** arm, hand, leg and shoe are on the
**image left**: left and right are told apart by body geometry only, and a horizontal flip that
does not swap the classes produces wrong labels (as on real MHP). Figures are painted back to front
(farther = feet higher in the image), so nearer figures occlude farther ones; every person PNG holds
only the pixels of that person that are visible, like the real annotations.

The files are what :class:`smp_parsing.data.mhp.MHPv2Dataset` reads: ``list/{train,val}.txt``,
``<split>/images/<id>.jpg``, ``<split>/parsing_annos/<id>_<NN>_<kk>.png`` with the part id in the R
channel and other values in G and B, and ``<split>/pose_annos/<id>.mat`` (16 MPII joints + face and
person box corners) when ``write_pose`` is on.

An image depends only on ``(seed, split, index)``: N images are a prefix of N + k images.

CLI::

    python -m smp_parsing.data.synthetic --root DIR --num-train 1000 --num-val 200 --size 384 --seed 0
"""

from __future__ import annotations

import argparse
import inspect
import logging
import math
import os
import shutil
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import scipy.io

from smp_parsing.data.mhp import MHP_V2_CLASSES, MHP_V2_FLIP_PAIRS, MHPv2Dataset
from smp_parsing.data.registry import DatasetSpec, register

log = logging.getLogger(__name__)

# The synthetic set: MHP v2's label space, files in the MHP v2 layout read by the MHP v2 reader.
register(
    DatasetSpec(
        "synthetic",
        MHP_V2_CLASSES,
        MHP_V2_FLIP_PAIRS,
        MHPv2Dataset,
        MHPv2Dataset.required_paths,
        MHPv2Dataset.layout_help,
    )
)

SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1}
# Label PNGs are long runs of equal values: no row filter + zlib's RLE strategy encode them about
# 5x faster than libpng's adaptive filters, and smaller.
PNG_FLAGS = [
    cv2.IMWRITE_PNG_COMPRESSION, 1,
    cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
    cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE,
]  # fmt: skip
VAL_ID_OFFSET = 500_000  # val ids are distinct from train ids, as in the real set
HEAD_UNITS_PER_HEIGHT = 8.0  # a figure is 8 "head units" tall (classic figure drawing canon)

UPPER_CLOTHES = ("t-shirt", "jacket/windbreaker/hoodie", "sweater", "coat", "dress")
LOWER_CLOTHES = ("pants", "shorts/swim-shorts", "skirt")
ACCESSORIES = ("cap/hat", "sunglasses", "belt", "carrybag", "scarf")


def class_id(name: str) -> int:
    """MHP v2 id of a class name (raises ``ValueError`` naming the known classes otherwise)."""
    try:
        return MHP_V2_CLASSES.index(name)
    except ValueError:
        raise ValueError(f"unknown MHP v2 class {name!r}; known: {MHP_V2_CLASSES[1:]}") from None


# Sided classes, indexed by side: 0 = the figure's right (image left), 1 = the figure's left.
ARM = (class_id("right-arm"), class_id("left-arm"))
HAND = (class_id("right-hand"), class_id("left-hand"))
LEG = (class_id("right-leg"), class_id("left-leg"))
SHOE = (class_id("right-shoe"), class_id("left-shoe"))
FACE, HAIR = class_id("face"), class_id("hair")
SIDE_SIGN = (-1.0, 1.0)  # x direction of each side in the image (figure faces the camera)

SKIN_TONES = np.array(
    [[255, 224, 196], [234, 192, 160], [198, 144, 108], [160, 110, 75], [110, 72, 50]], np.float32
)
HAIR_COLOURS = np.array(
    [[20, 16, 14], [70, 45, 25], [120, 80, 40], [210, 180, 110], [150, 60, 30], [170, 170, 170]],
    np.float32,
)


@dataclass
class Layer:
    """One painted part: what to draw and with which class, colour and texture."""

    class_id: int
    colour: np.ndarray
    texture: int = 0  # 0 = flat; otherwise a row of the image's texture table
    polygons: list[np.ndarray] = field(default_factory=list)  # each K x 2 int32 (x, y)
    lines: list[tuple[np.ndarray, int]] = field(default_factory=list)  # (K x 2 points, thickness)
    ellipses: list[tuple[tuple[int, int], tuple[int, int], float]] = field(default_factory=list)


@dataclass
class Skeleton:
    """Joint positions of one figure in pixels, ``(x, y)`` float arrays of shape ``(2,)``."""

    joints: dict[str, np.ndarray]
    unit: float  # pixels per head unit


class SyntheticMHPGenerator:
    """Procedural multi-human parsing images with MHP v2 classes.

    Every knob below is a difficulty control the config exposes (``conf/data/synthetic.yaml``).

    Args:
        size: Long side of the images in pixels.
        aspect_range: Range of short side / long side; orientation (portrait/landscape) is random.
        min_persons: Fewest figures in an image.
        max_persons: Most figures in an image (placement may give fewer when they do not fit).
        scale_range: Range of figure height / image height, sampled log-uniformly so that the
            part instances spread over several FPN levels.
        occlusion: Largest fraction of a figure's box another figure's box may cover (0 = no
            overlap, 1 = anything goes).
        texture_strength: 0..1, contrast of clothing patterns and of background clutter.
        background_clutter: Mean number of random shapes drawn on the background.
        upper_clothes: Torso garments to choose from (MHP class names; ``dress`` also covers legs).
        lower_clothes: Leg garments to choose from.
        accessories: Optional items (``cap/hat``, ``sunglasses``, ``belt``, ``carrybag``, ``scarf``).
        accessory_prob: Probability of each accessory on a figure.
        long_sleeve_prob: Probability that sleeves cover the whole arm (no arm class visible).
        extremity_scale: Size of head (face, hair, hat, glasses), hands and shoes relative to
            natural proportions; above 1 makes the smallest parts easier to segment.
        noise_std: Standard deviation of the pixel noise added to the image (0..255 scale).
        write_pose: Also write ``pose_annos/<id>.mat``.
        jpeg_quality: JPEG quality of the images.
    """

    def __init__(
        self,
        size: int = 384,
        aspect_range: Sequence[float] = (0.75, 1.0),
        min_persons: int = 1,
        max_persons: int = 8,
        scale_range: Sequence[float] = (0.25, 0.95),
        occlusion: float = 0.3,
        texture_strength: float = 0.35,
        background_clutter: float = 6.0,
        upper_clothes: Sequence[str] = UPPER_CLOTHES,
        lower_clothes: Sequence[str] = LOWER_CLOTHES,
        accessories: Sequence[str] = ACCESSORIES,
        accessory_prob: float = 0.25,
        long_sleeve_prob: float = 0.25,
        extremity_scale: float = 1.25,
        noise_std: float = 4.0,
        write_pose: bool = True,
        jpeg_quality: int = 92,
    ) -> None:
        if not 1 <= min_persons <= max_persons:
            raise ValueError(
                f"need 1 <= min_persons <= max_persons, got {min_persons}, {max_persons}"
            )
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be 0 < low <= high, got {tuple(scale_range)}")
        for names, allowed in (
            (upper_clothes, UPPER_CLOTHES),
            (lower_clothes, LOWER_CLOTHES),
            (accessories, ACCESSORIES),
        ):
            unknown = set(names) - set(allowed)
            if unknown:
                raise ValueError(
                    f"unsupported synthetic items {sorted(unknown)}; choose from {allowed}"
                )
        if not upper_clothes or not lower_clothes:
            raise ValueError("upper_clothes and lower_clothes need at least one item each")
        self.size = int(size)
        self.aspect_range = (float(aspect_range[0]), float(aspect_range[1]))
        self.min_persons = int(min_persons)
        self.max_persons = int(max_persons)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.occlusion = float(occlusion)
        self.texture_strength = float(texture_strength)
        self.background_clutter = float(background_clutter)
        self.upper_clothes = tuple(upper_clothes)
        self.lower_clothes = tuple(lower_clothes)
        self.accessories = tuple(accessories)
        self.accessory_prob = float(accessory_prob)
        self.long_sleeve_prob = float(long_sleeve_prob)
        self.extremity_scale = float(extremity_scale)
        self.noise_std = float(noise_std)
        self.write_pose = bool(write_pose)
        self.jpeg_quality = int(jpeg_quality)

    # ------------------------------------------------------------------ one image
    def render(self, seed: int, split: str, index: int) -> dict[str, np.ndarray]:
        """Draw one image.

        Args:
            seed: Data set seed.
            split: ``train`` or ``val`` (part of the random stream).
            index: Image index within the split.

        Returns:
            Dict with ``image`` ``H x W x 3`` uint8 RGB, ``parsing`` ``N x H x W`` uint8 (visible
            pixels of each person, back-to-front order) and ``keypoints`` ``N x 20 x 3`` float32.
        """
        rng = np.random.default_rng([seed, SPLIT_CODES[split], index])
        height, width = self._image_shape(rng)
        image = self._background(rng, height, width)
        class_map = np.zeros((height, width), np.uint8)
        person_map = np.zeros((height, width), np.uint8)
        texture_map = np.zeros((height, width), np.uint8)
        textures: list[np.ndarray] = [np.zeros(5, np.float32)]  # row 0 = flat

        skeletons = self._place_figures(rng, height, width)
        for person, skeleton in enumerate(skeletons, start=1):
            for layer in self._figure_layers(rng, skeleton, textures):
                self._paint(layer, person, image, class_map, person_map, texture_map)
            self._draw_face_details(skeleton, image)

        image = self._apply_textures(image, texture_map, np.stack(textures))
        image = cv2.GaussianBlur(image, (3, 3), 0.6)
        if self.noise_std > 0:
            # Luminance noise, uniform with the requested standard deviation: a third of the cost of
            # per-channel Gaussian noise and indistinguishable for the model.
            noise = rng.random((*image.shape[:2], 1), dtype=np.float32) - 0.5
            image += (self.noise_std * math.sqrt(12.0)) * noise
        image = np.clip(image, 0, 255).astype(np.uint8)

        ids = np.arange(1, len(skeletons) + 1, dtype=np.uint8)
        parsing = np.where(person_map[None] == ids[:, None, None], class_map[None], 0).astype(
            np.uint8
        )
        keypoints = self._keypoints(skeletons, person_map)
        visible = parsing.any(axis=(1, 2))  # a figure pushed fully out of view is not a person
        return {"image": image, "parsing": parsing[visible], "keypoints": keypoints[visible]}

    def _image_shape(self, rng: np.random.Generator) -> tuple[int, int]:
        short = int(round(self.size * rng.uniform(*self.aspect_range)))
        return (short, self.size) if rng.random() < 0.5 else (self.size, short)

    def _background(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """Smooth colour field plus low-contrast clutter shapes (walls, furniture, ground)."""
        grid = rng.uniform(60, 200, (rng.integers(2, 6), rng.integers(2, 6), 3)).astype(np.float32)
        image = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        # A horizon: the lower part a different "ground" tone makes the scene look like a scene.
        horizon = int(height * rng.uniform(0.4, 0.8))
        image[horizon:] = 0.5 * image[horizon:] + 0.5 * rng.uniform(50, 180, 3).astype(np.float32)
        strength = self.texture_strength
        mean_colour = grid.mean(axis=(0, 1))
        for _ in range(rng.poisson(self.background_clutter)):
            colour = (mean_colour + rng.normal(0, 80 * strength, 3)).tolist()
            x, y = int(rng.uniform(0, width)), int(rng.uniform(0, height))
            a, b = int(rng.uniform(0.03, 0.25) * width), int(rng.uniform(0.03, 0.25) * height)
            shape = rng.integers(3)
            if shape == 0:
                cv2.rectangle(image, (x - a, y - b), (x + a, y + b), colour, -1)
            elif shape == 1:
                cv2.ellipse(image, (x, y), (a, b), float(rng.uniform(0, 180)), 0, 360, colour, -1)
            else:
                end = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
                cv2.line(image, (x, y), end, colour, max(1, int(0.01 * self.size)))
        # Fine-grained noise texture (stronger with texture_strength).
        coarse = rng.normal(0, 25 * strength, (height // 8 + 1, width // 8 + 1, 1)).astype(
            np.float32
        )
        image += cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)[..., None]
        return image

    # ------------------------------------------------------------------ figures
    def _sample_pose(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Joints in head units, origin at the top of the head, y down, figure facing the camera."""
        j: dict[str, np.ndarray] = {
            "head_top": np.array([0.0, 0.0]),
            "upper_neck": np.array([0.0, 1.05]),
            "thorax": np.array([0.0, 1.4]),
            "pelvis": np.array([0.0, 4.0]),
        }
        for side, sign in enumerate(SIDE_SIGN):
            name = "rl"[side]
            shoulder = np.array([sign * 0.85, 1.45])
            up = math.radians(rng.uniform(0, 150))  # upper arm angle from straight down, outward
            fore = up + math.radians(rng.uniform(-60, 90))
            fore = min(
                max(fore, math.radians(-20)), math.radians(180)
            )  # keep the wrist on its side
            elbow = shoulder + 1.5 * np.array([sign * math.sin(up), math.cos(up)])
            wrist = elbow + 1.3 * np.array([sign * math.sin(fore), math.cos(fore)])
            hip = np.array([sign * 0.45, 4.0])
            thigh = math.radians(rng.uniform(-8, 30))
            shin = thigh + math.radians(rng.uniform(-25, 10))
            knee = hip + 1.9 * np.array([sign * math.sin(thigh), math.cos(thigh)])
            ankle = knee + 1.8 * np.array([sign * math.sin(shin), math.cos(shin)])
            j |= {
                f"{name}_shoulder": shoulder,
                f"{name}_elbow": elbow,
                f"{name}_wrist": wrist,
                f"{name}_hip": hip,
                f"{name}_knee": knee,
                f"{name}_ankle": ankle,
            }
        return j

    def _place_figures(self, rng: np.random.Generator, height: int, width: int) -> list[Skeleton]:
        """Sample figures and positions under the occlusion limit; return them back to front."""
        count = int(rng.integers(self.min_persons, self.max_persons + 1))
        low, high = np.log(self.scale_range[0]), np.log(self.scale_range[1])
        placed: list[tuple[np.ndarray, Skeleton]] = []
        for _ in range(count):
            pose = self._sample_pose(rng)
            points = np.stack(list(pose.values()))
            # Extent in head units, padded by half a limb width and the head/shoe size.
            extent_min = points.min(axis=0) - 0.6
            extent_max = points.max(axis=0) + np.array([0.6, 0.3])
            scale = float(np.exp(rng.uniform(low, high)))
            for _attempt in range(25):
                unit = scale * height / HEAD_UNITS_PER_HEIGHT
                size = (extent_max - extent_min) * unit
                if size[0] < width:
                    x0 = rng.uniform(-0.1 * size[0], width - 0.9 * size[0])
                    y0 = rng.uniform(-0.05 * size[1], max(height - 0.85 * size[1], 1.0))
                    box = np.array([x0, y0, x0 + size[0], y0 + size[1]])
                    if all(self._overlap_ok(box, other) for other, _ in placed):
                        offset = np.array([x0, y0]) - extent_min * unit
                        joints = {k: v * unit + offset for k, v in pose.items()}
                        placed.append((box, Skeleton(joints, unit)))
                        break
                # Smaller figures fit more easily, but never below the configured smallest scale.
                scale = max(scale * 0.85, self.scale_range[0])
        placed.sort(key=lambda item: item[0][3])  # feet lower in the image = nearer = painted later
        return [skeleton for _, skeleton in placed]

    def _overlap_ok(self, box: np.ndarray, other: np.ndarray) -> bool:
        inter_w = min(box[2], other[2]) - max(box[0], other[0])
        inter_h = min(box[3], other[3]) - max(box[1], other[1])
        if inter_w <= 0 or inter_h <= 0:
            return True
        inter = inter_w * inter_h
        smaller = min(
            (box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1])
        )
        return inter <= self.occlusion * smaller

    def _new_texture(
        self, rng: np.random.Generator, textures: list[np.ndarray], unit: float
    ) -> int:
        """Add a stripe/check pattern to the image's texture table; 0 (flat) half of the time."""
        if self.texture_strength <= 0 or rng.random() < 0.5 or len(textures) >= 255:
            return 0
        period = rng.uniform(0.15, 0.6) * unit
        angle = rng.uniform(0, np.pi)
        kind = float(rng.integers(2))  # 0 stripes, 1 checks
        frequency = 2 * np.pi / max(period, 2.0)
        textures.append(
            np.array(
                [frequency * np.cos(angle), frequency * np.sin(angle), rng.uniform(0, 2 * np.pi), kind,
                 self.texture_strength * rng.uniform(0.3, 0.8)],
                np.float32,
            )
        )  # fmt: skip
        return len(textures) - 1

    def _figure_layers(
        self, rng: np.random.Generator, skeleton: Skeleton, textures: list[np.ndarray]
    ) -> list[Layer]:
        """All parts of one figure in painting order (later layers cover earlier ones)."""
        j, u = skeleton.joints, skeleton.unit
        skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] + rng.normal(0, 8, 3).astype(np.float32)

        def cloth() -> np.ndarray:
            return rng.uniform(0, 255, 3).astype(np.float32)

        def pt(*xy: float) -> np.ndarray:
            return np.asarray(xy, np.float64)

        def poly(*points: np.ndarray) -> np.ndarray:
            return np.array(points).round().astype(np.int32)

        upper = self.upper_clothes[rng.integers(len(self.upper_clothes))]
        lower = self.lower_clothes[rng.integers(len(self.lower_clothes))]
        wears = {a for a in self.accessories if rng.random() < self.accessory_prob}
        limb = max(2, int(round(0.42 * u)))
        leg_width = max(2, int(round(0.55 * u)))
        layers: list[Layer] = []

        # Legs (skin), then the lower garment over them, then shoes.
        for side in (0, 1):
            name = "rl"[side]
            path = poly(j[f"{name}_hip"], j[f"{name}_knee"], j[f"{name}_ankle"])
            layers.append(Layer(LEG[side], skin, lines=[(path, leg_width)]))
        hips = poly(j["r_hip"] + pt(-0.25, -0.2) * u, j["l_hip"] + pt(0.25, -0.2) * u,
                    j["l_hip"] + pt(0.3, 0.5) * u, j["r_hip"] + pt(-0.3, 0.5) * u)  # fmt: skip
        if upper != "dress":
            colour, texture = cloth(), self._new_texture(rng, textures, u)
            garment = Layer(class_id(lower), colour, texture, polygons=[hips])
            if lower == "pants":
                for name in "rl":
                    path = poly(
                        j[f"{name}_hip"], j[f"{name}_knee"], j[f"{name}_ankle"] - pt(0, 0.15) * u
                    )
                    garment.lines.append((path, leg_width + 2))
            elif lower == "shorts/swim-shorts":
                for name in "rl":
                    knee_ward = j[f"{name}_hip"] + 0.45 * (j[f"{name}_knee"] - j[f"{name}_hip"])
                    garment.lines.append((poly(j[f"{name}_hip"], knee_ward), leg_width + 2))
            else:  # skirt: a trapezoid widening to above the knees
                hem = 0.5 * (j["r_knee"] + j["l_knee"]) - pt(0, 0.3) * u
                half = abs(j["l_knee"][0] - j["r_knee"][0]) / 2 + 0.6 * u
                garment.polygons.append(
                    poly(
                        j["r_hip"] + pt(-0.3, -0.2) * u,
                        j["l_hip"] + pt(0.3, -0.2) * u,
                        pt(hem[0] + half, hem[1]),
                        pt(hem[0] - half, hem[1]),
                    )  # fmt: skip
                )
            layers.append(garment)
        for side in (0, 1):
            name, sign = "rl"[side], SIDE_SIGN[side]
            ankle = j[f"{name}_ankle"]
            centre = ankle + pt(sign * 0.2, 0.1) * u
            axes = (
                max(2, int(0.42 * u * self.extremity_scale)),
                max(1, int(0.22 * u * self.extremity_scale)),
            )
            layers.append(
                Layer(
                    SHOE[side],
                    cloth() * 0.5,
                    ellipses=[(tuple(np.round(centre).astype(int)), axes, 0.0)],
                )
            )

        # Torso garment (a dress runs down to the knees).
        shoulder_r, shoulder_l = j["r_shoulder"], j["l_shoulder"]
        torso_colour, torso_texture = cloth(), self._new_texture(rng, textures, u)
        bottom = 4.3 if upper != "dress" else 6.0
        flare = 0.0 if upper != "dress" else 0.6
        coat_extra = 0.6 if upper == "coat" else 0.0
        torso = poly(shoulder_r + pt(-0.2, -0.1) * u, j["upper_neck"] + pt(-0.3, 0.05) * u,
                     j["upper_neck"] + pt(0.3, 0.05) * u, shoulder_l + pt(0.2, -0.1) * u,
                     j["l_hip"] + pt(0.25 + flare, bottom - 4.0 + coat_extra) * u,
                     j["r_hip"] + pt(-0.25 - flare, bottom - 4.0 + coat_extra) * u)  # fmt: skip
        torso_layer = Layer(class_id(upper), torso_colour, torso_texture, polygons=[torso])
        layers.append(torso_layer)
        if "scarf" in wears:
            scarf = poly(j["upper_neck"] + pt(-0.55, -0.05) * u, j["upper_neck"] + pt(0.55, -0.05) * u,
                         j["thorax"] + pt(0.5, 0.25) * u, j["thorax"] + pt(-0.5, 0.25) * u)  # fmt: skip
            layers.append(Layer(class_id("scarf"), cloth(), polygons=[scarf]))
        if "belt" in wears and upper != "dress":
            belt = poly(j["r_hip"] + pt(-0.3, -0.3) * u, j["l_hip"] + pt(0.3, -0.3) * u,
                        j["l_hip"] + pt(0.3, -0.05) * u, j["r_hip"] + pt(-0.3, -0.05) * u)  # fmt: skip
            layers.append(Layer(class_id("belt"), cloth() * 0.4, polygons=[belt]))

        # Arms (skin) in front of the torso, sleeves over their upper part, then hands.
        sleeve = 1.0 if rng.random() < self.long_sleeve_prob else rng.uniform(0.0, 0.5)
        if upper in ("coat", "jacket/windbreaker/hoodie", "sweater") and sleeve < 0.3:
            sleeve = 1.0 if rng.random() < 0.5 else 0.4
        for side in (0, 1):
            name, sign = "rl"[side], SIDE_SIGN[side]
            shoulder, elbow, wrist = j[f"{name}_shoulder"], j[f"{name}_elbow"], j[f"{name}_wrist"]
            layers.append(Layer(ARM[side], skin, lines=[(poly(shoulder, elbow, wrist), limb)]))
            if sleeve > 0.05:
                # Sleeve = the first `sleeve` fraction of the arm's length, same class as the garment.
                total = np.linalg.norm(elbow - shoulder) + np.linalg.norm(wrist - elbow)
                reach = sleeve * total
                first = np.linalg.norm(elbow - shoulder)
                if reach <= first:
                    path = poly(shoulder, shoulder + (elbow - shoulder) * reach / max(first, 1e-6))
                else:
                    t = (reach - first) / max(total - first, 1e-6)
                    path = poly(shoulder, elbow, elbow + (wrist - elbow) * min(t, 1.0))
                sleeve_layer = Layer(torso_layer.class_id, torso_colour, torso_texture)
                sleeve_layer.lines.append((path, limb + 2))
                layers.append(sleeve_layer)
            hand_centre = (
                wrist + (wrist - elbow) / max(np.linalg.norm(wrist - elbow), 1e-6) * 0.22 * u
            )
            radius = max(2, int(round(0.3 * u * self.extremity_scale)))
            layers.append(
                Layer(
                    HAND[side],
                    skin,
                    ellipses=[(tuple(np.round(hand_centre).astype(int)), (radius, radius), 0.0)],
                )
            )
            if "carrybag" in wears and side == int(rng.integers(2)):
                top = hand_centre + pt(sign * 0.1, 0.1) * u
                bag = poly(
                    top + pt(-0.5, 0.0) * u,
                    top + pt(0.5, 0.0) * u,
                    top + pt(0.55, 0.9) * u,
                    top + pt(-0.55, 0.9) * u,
                )
                layers.append(Layer(class_id("carrybag"), cloth(), polygons=[bag]))
                wears.discard("carrybag")

        # Head: hair behind and above the face, then face, then what sits on it.
        head_unit = u * self.extremity_scale
        head_centre = j["head_top"] + pt(0, 0.6) * u

        def hp(x: float, y: float) -> np.ndarray:
            """Head point given in head units from the head top, scaled about the head centre."""
            return head_centre + (pt(x, y) - pt(0, 0.6)) * head_unit

        hair_style = rng.integers(3)  # 0 bald/short, 1 medium, 2 long (falls beside the neck)
        if hair_style > 0:
            hair = Layer(HAIR, HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))])
            hair.ellipses.append(
                (
                    tuple(np.round(hp(0, 0.5)).astype(int)),
                    (int(0.47 * head_unit), int(0.52 * head_unit)),
                    0.0,
                )
            )
            if hair_style == 2:
                hair.polygons.append(poly(hp(-0.47, 0.5), hp(0.47, 0.5),
                                          hp(0.5, 1.5), hp(-0.5, 1.5)))  # fmt: skip
            layers.append(hair)
        face_centre = tuple(np.round(hp(0, 0.6 + 0.07 * (hair_style > 0))).astype(int))
        layers.append(
            Layer(
                FACE,
                skin,
                ellipses=[
                    (
                        face_centre,
                        (max(2, int(0.36 * head_unit)), max(2, int(0.46 * head_unit))),
                        0.0,
                    )
                ],
            )
        )
        if "cap/hat" in wears:
            crown = (
                tuple(np.round(hp(0, 0.32)).astype(int)),
                (int(0.46 * head_unit), int(0.3 * head_unit)),
                0.0,
            )
            brim = poly(
                hp(-0.6, 0.25),
                hp(0.6, 0.25),
                hp(0.6, 0.38),
                hp(-0.6, 0.38),
            )
            layers.append(Layer(class_id("cap/hat"), cloth(), ellipses=[crown], polygons=[brim]))
        if "sunglasses" in wears:
            glasses = poly(
                hp(-0.33, 0.47),
                hp(0.33, 0.47),
                hp(0.33, 0.62),
                hp(-0.33, 0.62),
            )
            layers.append(
                Layer(class_id("sunglasses"), np.full(3, 25, np.float32), polygons=[glasses])
            )
        return layers

    @staticmethod
    def _paint(
        layer: Layer,
        person: int,
        image: np.ndarray,
        class_map: np.ndarray,
        person_map: np.ndarray,
        texture_map: np.ndarray,
    ) -> None:
        """Draw one layer into the image and the three label maps with identical geometry."""
        targets = (
            (image, layer.colour.tolist()),
            (class_map, layer.class_id),
            (person_map, person),
            (texture_map, layer.texture),
        )
        for canvas, value in targets:
            if layer.polygons:
                cv2.fillPoly(canvas, layer.polygons, value)
            for path, thickness in layer.lines:
                cv2.polylines(canvas, [path], False, value, thickness)
            for centre, axes, angle in layer.ellipses:
                cv2.ellipse(canvas, centre, axes, angle, 0, 360, value, -1)

    def _draw_face_details(self, skeleton: Skeleton, image: np.ndarray) -> None:
        """Eyes and mouth (image only): a face that reads as a face, seen from the front."""
        u = skeleton.unit
        head_unit = u * self.extremity_scale
        if head_unit < 6:
            return
        face_centre = skeleton.joints["head_top"] + np.array([0.0, 0.6]) * u
        radius = max(1, int(0.06 * head_unit))
        for dx in (-0.15, 0.15):
            centre = tuple(np.round(face_centre + np.array([dx, 0.0]) * head_unit).astype(int))
            cv2.circle(image, centre, radius, (30.0, 25.0, 25.0), -1)
        mouth = tuple(np.round(face_centre + np.array([0.0, 0.25]) * head_unit).astype(int))
        axes = (max(1, int(0.12 * head_unit)), max(1, int(0.04 * head_unit)))
        cv2.ellipse(image, mouth, axes, 0, 0, 360, (150.0, 60.0, 60.0), -1)

    @staticmethod
    def _apply_textures(
        image: np.ndarray, texture_map: np.ndarray, table: np.ndarray
    ) -> np.ndarray:
        """Modulate textured pixels by their stripe/check pattern, all pixels at once.

        Args:
            image: ``H x W x 3`` float32.
            texture_map: ``H x W`` uint8 row of ``table`` per pixel (0 = flat).
            table: ``T x 5`` float32 (freq_x, freq_y, phase, kind, amplitude).
        """
        ys, xs = np.nonzero(texture_map)
        if len(ys) == 0:
            return image
        params = table[texture_map[ys, xs]]
        phase = params[:, 0] * xs + params[:, 1] * ys + params[:, 2]
        checks = np.sin(params[:, 0] * xs + params[:, 2]) * np.sin(params[:, 1] * ys + params[:, 2])
        pattern = np.where(params[:, 3] > 0.5, np.sign(checks), np.sign(np.sin(phase)))
        image[ys, xs] *= (1.0 + params[:, 4] * pattern)[:, None]
        return image

    @staticmethod
    def _keypoints(skeletons: list[Skeleton], person_map: np.ndarray) -> np.ndarray:
        """MHP pose rows per person: 16 MPII joints, face box corners, person box corners.

        Flag 0 when the joint pixel shows this person, 1 when covered, 2 (and -1, -1) outside.
        """
        order = ["r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
                 "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder",
                 "l_elbow", "l_wrist"]  # fmt: skip
        height, width = person_map.shape
        rows = np.full((len(skeletons), 20, 3), -1.0, np.float32)
        rows[..., 2] = 2.0
        for person, skeleton in enumerate(skeletons):
            j, u = skeleton.joints, skeleton.unit
            points = [j[name] for name in order]
            head = j["head_top"]
            points += [head + np.array([-0.4, 0.1]) * u, head + np.array([0.4, 1.1]) * u]
            all_points = np.stack(list(j.values()))
            points += [all_points.min(axis=0) - 0.5 * u, all_points.max(axis=0) + 0.5 * u]
            rows[person, :, :2] = np.stack(points)
        xy = np.round(rows[..., :2]).astype(np.int64)
        inside = (
            (xy[..., 0] >= 0) & (xy[..., 0] < width) & (xy[..., 1] >= 0) & (xy[..., 1] < height)
        )
        owner = person_map[np.clip(xy[..., 1], 0, height - 1), np.clip(xy[..., 0], 0, width - 1)]
        own = owner == (np.arange(len(skeletons))[:, None] + 1)
        rows[..., 2] = np.where(inside, np.where(own, 0.0, 1.0), 2.0)
        rows[~inside, :2] = -1.0
        return rows

    # ------------------------------------------------------------------ files
    def write_sample(self, root: Path, seed: int, split: str, index: int) -> str:
        """Render image ``index`` of ``split`` and write its MHP v2 files; return its id."""
        sample = self.render(seed, split, index)
        image_id = str(index + 1 + (VAL_ID_OFFSET if split == "val" else 0))
        folder = root / split
        cv2.imwrite(
            str(folder / "images" / f"{image_id}.jpg"),
            cv2.cvtColor(sample["image"], cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality],
        )
        parsing = sample["parsing"]
        for k, label in enumerate(parsing, start=1):
            # Like real MHP PNGs: the id in R, other values in G and B (BGR order for OpenCV).
            foreground = label > 0
            bgr = np.zeros((*label.shape, 3), np.uint8)
            bgr[..., 0][foreground] = 128 + k
            bgr[..., 1] = np.where(foreground, np.uint8(255) - label, np.uint8(0))
            bgr[..., 2] = label
            name = f"{image_id}_{len(parsing):02d}_{k:02d}.png"
            cv2.imwrite(str(folder / "parsing_annos" / name), bgr, PNG_FLAGS)
        if self.write_pose:
            content = {
                f"person_{k}": rows.astype(np.float64) for k, rows in enumerate(sample["keypoints"])
            }
            scipy.io.savemat(str(folder / "pose_annos" / f"{image_id}.mat"), content)
        return image_id

    def is_complete(self, root: str | Path) -> bool:
        """Whether ``root`` holds a finished tree of this generator (see :func:`is_generated`)."""
        return is_generated(root)

    def generate(
        self,
        root: str | Path,
        num_train: int,
        num_val: int,
        seed: int = 0,
        workers: int = 1,
        extra_files: dict[str, str] | None = None,
    ) -> Path:
        """Write a complete synthetic MHP v2 tree, all at once or not at all.

        The tree is written into a hidden sibling ``.<root name>.partial-<host>-<pid>`` and
        renamed into place when complete, so an interrupted generation (an exception, Ctrl-C,
        a killed job) never leaves a half-written ``root`` that a later run would refuse or
        read: the next run simply starts over, and removes the partial folders of processes of
        this host that no longer exist.

        Args:
            root: Output folder. When it exists, its ``list/``, ``train/`` and ``val/`` are
                replaced (``list/`` removed first and put back last: the list files mark a
                complete tree, see :func:`is_generated`); other files in it are kept.
            num_train: Number of train images.
            num_val: Number of val images.
            seed: Data set seed.
            workers: Processes used to render (1 = in this process).
            extra_files: ``{name: text}`` written into the tree before it is put in place and
                moved in last (the data module's recipe stamp).

        Returns:
            The root path.
        """
        root = Path(root).absolute()
        root.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(root)
        partial = root.parent / f"{_partial_prefix(root)}{socket.gethostname()}-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            self._write_tree(partial, num_train, num_val, seed, workers)
            for name, text in (extra_files or {}).items():
                (partial / name).write_text(text)
            _move_into_place(partial, root)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return root

    def _write_tree(
        self, root: Path, num_train: int, num_val: int, seed: int, workers: int
    ) -> None:
        """Write the MHP v2 files of both splits under ``root`` (the list files last)."""
        (root / "list").mkdir(parents=True, exist_ok=True)
        for split, count in (("train", num_train), ("val", num_val)):
            for sub in ("images", "parsing_annos", "pose_annos"):
                (root / split / sub).mkdir(parents=True, exist_ok=True)
            ids = self.write_split(root, seed, split, count, workers)
            # The list file is written last: its presence marks a complete split.
            (root / "list" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))

    def write_split(self, root: Path, seed: int, split: str, count: int, workers: int) -> list[Any]:
        """Write the ``count`` samples of ``split`` under ``root`` (:meth:`write_sample`).

        Args:
            workers: Processes used to render (1 = in this process).

        Returns:
            What :meth:`write_sample` returned for each sample, in index order.
        """
        jobs = [(root, seed, split, i) for i in range(count)]
        if workers > 1 and count > 1:
            with get_context("spawn").Pool(workers) as pool:
                return pool.starmap(self.write_sample, jobs, chunksize=16)
        return [self.write_sample(*job) for job in jobs]


def add_tree_arguments(parser: argparse.ArgumentParser, generator: type) -> None:
    """The options every synthetic-tree CLI has: the folder, the counts, the seed, the workers
    and the image size and figure count (defaults: ``generator``'s)."""
    defaults = inspect.signature(generator).parameters
    parser.add_argument("--root", required=True, type=Path, help="output folder")
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--num-val", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="processes used to render")
    parser.add_argument("--size", type=int, default=defaults["size"].default, help="long side (px)")
    parser.add_argument("--max-persons", type=int, default=defaults["max_persons"].default)


def _partial_prefix(root: Path) -> str:
    return f".{root.name}.partial-"


def remove_stale_partials(root: str | Path) -> list[Path]:
    """Delete the partial trees of ``root`` left by generations killed on this host.

    A partial tree ``.<root name>.partial-<host>-<pid>`` is stale when no process ``pid`` runs
    on this host; partial trees of other hosts (a shared file system) are left alone.

    Returns:
        The folders removed.
    """
    root = Path(root).absolute()
    prefix = f"{_partial_prefix(root)}{socket.gethostname()}-"
    removed = []
    for path in root.parent.glob(f"{prefix}*"):
        pid = path.name[len(prefix) :]
        if not pid.isdigit() or _process_alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _move_into_place(partial: Path, root: Path) -> None:
    """Rename the finished tree ``partial`` to ``root`` (entry by entry when ``root`` has files)."""
    try:
        os.rename(partial, root)  # root missing or an empty folder: one atomic rename
        return
    except OSError:
        if not root.is_dir():
            raise
    # root holds files (our earlier tree, or its recipe stamp): swap list/, the splits and the
    # extra files in, with list/ gone while the splits are swapped so that no reader ever sees
    # a list next to a split that is not its own.
    entries = sorted(p.name for p in partial.iterdir())
    # (a tree without list/, e.g. synthetic_cihp's layouts, just has its entries swapped in)
    order = [n for n in entries if n in SPLIT_CODES] + [n for n in ("list",) if n in entries]
    order += [n for n in entries if n not in order]
    shutil.rmtree(root / "list", ignore_errors=True)
    for name in order:
        target = root / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.rename(partial / name, target)
    partial.rmdir()


def is_generated(root: str | Path) -> bool:
    """Whether ``root`` holds a finished synthetic tree (both list files written)."""
    root = Path(root)
    return all((root / "list" / f"{split}.txt").is_file() for split in SPLIT_CODES)


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: write a synthetic MHP v2 tree and print how long it took.

    Generator knobs left out keep the defaults of :class:`SyntheticMHPGenerator` (the same as
    ``conf/data/synthetic.yaml``).
    """
    defaults = inspect.signature(SyntheticMHPGenerator).parameters
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_tree_arguments(parser, SyntheticMHPGenerator)
    low, high = defaults["scale_range"].default
    parser.add_argument(
        "--min-scale", type=float, default=low, help="smallest figure height / image height"
    )
    parser.add_argument(
        "--max-scale", type=float, default=high, help="largest figure height / image height"
    )
    parser.add_argument("--occlusion", type=float, default=defaults["occlusion"].default)
    parser.add_argument(
        "--texture-strength", type=float, default=defaults["texture_strength"].default
    )
    parser.add_argument("--no-pose", action="store_true", help="do not write pose_annos/*.mat")
    args = parser.parse_args(argv)
    generator = SyntheticMHPGenerator(
        size=args.size,
        max_persons=args.max_persons,
        scale_range=(args.min_scale, args.max_scale),
        occlusion=args.occlusion,
        texture_strength=args.texture_strength,
        write_pose=not args.no_pose,
    )
    start = time.perf_counter()
    generator.generate(
        args.root, args.num_train, args.num_val, seed=args.seed, workers=args.workers
    )
    elapsed = time.perf_counter() - start
    total = args.num_train + args.num_val
    print(
        f"wrote {total} images ({args.num_train} train, {args.num_val} val) to {args.root} in {elapsed:.1f} s"
    )


if __name__ == "__main__":
    main()
