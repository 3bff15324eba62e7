"""Image + person-map transforms (albumentations 2.x) and the wrapper that yields model samples.

The albumentations pieces specific to parsing:

- :class:`RandomShortSideResize`: keep-ratio resize of the short side to a value drawn from a
  list, with a cap on the long side (mmdetection's ``Resize(img_scale=[(1333, 800), ...],
  keep_ratio=True)``, i.e. SOLO/SMP's scale jitter); person maps use nearest neighbour.
- :class:`HorizontalFlipWithClassSwap`: mirrors the pixels **and** swaps left/right classes
  (``left-arm`` <-> ``right-arm`` ...). A plain ``HorizontalFlip`` would teach wrong labels, so
  :class:`ParsingTransforms` refuses it.

:class:`ParsingTransforms` runs a configured list of albumentations transforms, pads to a multiple of
``pad_divisor`` and returns the sample of the data contract (``DEVELOPERS.md``): ``image`` float32
``3 x Hp x Wp``, ``parsing`` uint8 ``N x Hp x Wp`` (or ``N x H0 x W0`` with
``keep_original_parsing``), ``image_id`` and ``meta``.

Reproducible augmentation: albumentations 2.x draws from the Compose's own generators (seeded by
``Compose(seed=...)`` and nothing else; ``seed_everything`` does not reach them).
:meth:`ParsingTransforms.reseed` sets them, before a sample is transformed, from
``(seed, epoch, sample index)``, so that a sample's augmentation does not depend on the worker
that draws it, on the number of workers, or on the samples drawn before it in the process, and
a resumed run draws what the uninterrupted run drew (see :mod:`smp_parsing.data.sampler`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch

from smp_parsing.metadata import get_dataset_meta, mirror_lut

PAPER_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)  # RGB, 0..255 scale
PAPER_STD: tuple[float, float, float] = (58.395, 57.12, 57.375)


def hflip(image: Any, parsing: Any, flip_pairs: Sequence[Sequence[int]]) -> tuple[Any, Any]:
    """Mirror an image and its person maps left-right, swapping left/right classes.

    Args:
        image: ``H x W x C`` numpy array, or ``C x H x W`` / ``B x C x H x W`` torch tensor.
        parsing: ``N x H x W`` integer maps (numpy or torch, like ``image``).
        flip_pairs: Pairs of class ids to swap, e.g. ``metadata.MHP_V2_FLIP_PAIRS``.

    Returns:
        ``(flipped_image, flipped_parsing)`` of the same types and shapes (new arrays).
    """
    lut = mirror_lut(flip_pairs)
    if isinstance(image, torch.Tensor):
        flipped = torch.flip(image, dims=[-1])
        table = torch.as_tensor(lut, device=parsing.device)
        return flipped, table[torch.flip(parsing, dims=[-1]).long()].to(parsing.dtype)
    return np.ascontiguousarray(image[:, ::-1]), lut[parsing[..., ::-1]]


def resize_maps(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of ``N x H x W`` maps to ``N x height x width`` in one OpenCV call.

    OpenCV resizes up to 512 channels at once; maps are moved to the channel axis for that.
    ``INTER_NEAREST_EXACT`` samples at pixel centres like the bilinear image resize does, so maps
    and image stay aligned (plain ``INTER_NEAREST`` shifts by up to half a source pixel).
    """
    if len(maps) == 0:
        return np.zeros((0, height, width), maps.dtype)
    out = np.empty((len(maps), height, width), maps.dtype)
    for start in range(0, len(maps), 512):
        chunk = np.ascontiguousarray(maps[start : start + 512].transpose(1, 2, 0))
        resized = cv2.resize(chunk, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
        out[start : start + 512] = resized.reshape(height, width, -1).transpose(2, 0, 1)
    return out


class RandomShortSideResize(A.DualTransform):
    """Keep-ratio resize: short side drawn from ``short_sides``, long side at most ``max_long_side``.

    The scale is ``min(short / min(H, W), max_long_side / max(H, W))`` and the new size is rounded
    as mmdetection does (``int(x * scale + 0.5)``). Images use ``interpolation``, masks nearest
    neighbour at pixel centres (``INTER_NEAREST_EXACT``).

    Args:
        short_sides: Candidate short sides (one is drawn per call; a single value = fixed size).
        max_long_side: Cap on the long side.
        interpolation: OpenCV flag for the image.
        p: Probability of applying.
    """

    def __init__(
        self,
        short_sides: Sequence[int] = (800,),
        max_long_side: int = 1333,
        interpolation: int = cv2.INTER_LINEAR,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.short_sides = [int(s) for s in short_sides]
        if not self.short_sides:
            raise ValueError("short_sides needs at least one size")
        self.max_long_side = int(max_long_side)
        self.interpolation = interpolation

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        height, width = params["shape"][:2]
        short = self.py_random.choice(self.short_sides)
        scale = min(short / min(height, width), self.max_long_side / max(height, width))
        return {"size": (int(height * scale + 0.5), int(width * scale + 0.5))}

    def apply(self, img: np.ndarray, size: tuple[int, int], **params: Any) -> np.ndarray:
        return cv2.resize(img, (size[1], size[0]), interpolation=self.interpolation)

    def apply_to_mask(self, mask: np.ndarray, size: tuple[int, int], **params: Any) -> np.ndarray:
        return cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST_EXACT)

    def apply_to_masks(self, masks: np.ndarray, size: tuple[int, int], **params: Any) -> np.ndarray:
        return resize_maps(np.asarray(masks), *size)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("short_sides", "max_long_side", "interpolation")


class HorizontalFlipWithClassSwap(A.DualTransform):
    """Horizontal flip that also swaps the data set's left/right classes in the masks.

    Args:
        dataset: Data set name (``mhp``, ``synthetic``, ``densepose``) whose flip pairs to use.
        flip_pairs: Explicit pairs instead of ``dataset``'s.
        p: Probability of flipping (0.5 in the paper's training).
    """

    def __init__(
        self,
        dataset: str | None = None,
        flip_pairs: Sequence[Sequence[int]] | None = None,
        p: float = 0.5,
    ) -> None:
        super().__init__(p=p)
        if (dataset is None) == (flip_pairs is None):
            raise ValueError("give exactly one of dataset or flip_pairs")
        self.dataset = dataset
        self.flip_pairs = (
            tuple(tuple(pair) for pair in flip_pairs)
            if flip_pairs is not None
            else get_dataset_meta(dataset).flip_pairs
        )
        self.lut = mirror_lut(self.flip_pairs)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return np.ascontiguousarray(img[:, ::-1])

    def apply_to_mask(self, mask: np.ndarray, **params: Any) -> np.ndarray:
        return cv2.flip(cv2.LUT(np.ascontiguousarray(mask, np.uint8), self.lut), 1)

    def apply_to_masks(self, masks: np.ndarray, **params: Any) -> np.ndarray:
        masks = np.ascontiguousarray(masks, np.uint8)
        # All maps at once: stacked as (N*H) x W rows, a left-right flip of the stack flips each map.
        rows = masks.reshape(-1, masks.shape[-1])
        return cv2.flip(cv2.LUT(rows, self.lut), 1).reshape(masks.shape)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("dataset", "flip_pairs")


class ParsingTransforms:
    """Run an albumentations pipeline on a raw sample and produce the model sample.

    The pipeline is ``resize -> flip -> augment... -> normalize`` followed by zero padding; each
    piece is its own config node (``conf/data/transforms/{train,test}.yaml``) so that a data set or
    a sweep can change one of them, e.g. ``data.train_transforms.resize.short_sides=[320,352]``.

    Args:
        resize: Usually :class:`RandomShortSideResize`; ``None`` keeps the original size.
        flip: Usually :class:`HorizontalFlipWithClassSwap` (train only); ``None`` for no flip. A
            plain ``albumentations.HorizontalFlip`` is refused anywhere in the pipeline: it would
            leave left/right classes unswapped.
        augment: Further albumentations transforms (photometric ...) applied before ``normalize``.
        normalize: Usually ``albumentations.Normalize`` with the paper's mean/std (0..255 scale).
        dataset: Data set name stored in ``meta["dataset"]``.
        pad_divisor: Pad bottom/right with zeros to a multiple of this (32: the FPN's largest
            stride).
        keep_original_parsing: Test mode: leave ``parsing`` at the original image size (GT for the
            metrics, which are computed at the original size) instead of transforming it.
        seed: Base seed of the random draws (the run's ``seed``): :meth:`reseed` makes a sample's
            augmentation a pure function of ``(seed, epoch, index)``; the pipeline is also
            created with it, so that plain calls in one process repeat too. ``None``: every
            :meth:`reseed` takes fresh OS entropy (not reproducible).

    Call with a raw dataset item (``image`` ``H0 x W0 x 3`` uint8, ``parsing`` ``N x H0 x W0``,
    ``image_id``); returns ``image`` float32 tensor ``3 x Hp x Wp``, ``parsing`` uint8 tensor
    (``N x Hp x Wp`` or ``N x H0 x W0``), ``image_id`` and ``meta`` with ``ori_size``, ``img_size``
    (content size, top-left in the padded image), ``pad_size``, ``scale`` ``(h / H0, w / W0)``,
    ``flipped`` and ``dataset``. Keypoints, when present, are not carried (SMP does not use them
    and they would need their own flip/resize rules).
    """

    def __init__(
        self,
        dataset: str,
        resize: A.BasicTransform | None = None,
        flip: A.BasicTransform | None = None,
        augment: Sequence[A.BasicTransform] = (),
        normalize: A.BasicTransform | None = None,
        pad_divisor: int = 32,
        keep_original_parsing: bool = False,
        seed: int | None = None,
    ) -> None:
        transforms = [t for t in (resize, flip, *augment, normalize) if t is not None]
        for transform in transforms:
            if type(transform) is A.HorizontalFlip:
                raise ValueError(
                    "albumentations.HorizontalFlip does not swap left/right classes; use "
                    "smp_parsing.data.transforms.HorizontalFlipWithClassSwap"
                )
        # SeedSequence entropy must be non-negative: any int seed is taken modulo 2**64.
        self.seed = None if seed is None else int(seed) % 2**64
        self.pipeline = A.Compose(transforms, save_applied_params=True, seed=self.seed)
        self.dataset = dataset
        self.pad_divisor = int(pad_divisor)
        self.keep_original_parsing = keep_original_parsing

    def reseed(self, index: int, epoch: int) -> None:
        """Seed the next call's random draws from ``(seed, epoch, index)``.

        One NumPy and one Python generator, both derived from
        ``numpy.random.SeedSequence([seed, epoch, index])``, are shared by the Compose and every
        transform in it (``Compose.set_random_state``). ``Compose.set_random_seed`` is not used:
        it gives each transform its own generator started from the same seed, so the draws of
        different transforms (the resize choice, the flip decision) would be correlated. A few
        tens of microseconds per sample, against milliseconds to decode and resize an image.

        Args:
            index: Sample index in the data set.
            epoch: Training epoch (the sampler's, see :mod:`smp_parsing.data.sampler`).
        """
        entropy = None if self.seed is None else [self.seed, int(epoch), int(index)]
        np_seq, py_seq = np.random.SeedSequence(entropy).spawn(2)
        py_seed = int.from_bytes(py_seq.generate_state(4).tobytes(), "little")
        self.pipeline.set_random_state(np.random.default_rng(np_seq), random.Random(py_seed))

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        image, parsing = sample["image"], np.asarray(sample["parsing"], np.uint8)
        ori_size = image.shape[:2]
        num_persons = len(parsing)
        if self.keep_original_parsing:
            out = self.pipeline(image=image)
            maps = parsing
        else:
            # An image without persons still goes through the mask path (one empty map, dropped
            # after) so that the pipeline does exactly the same geometric work.
            masks = parsing if num_persons else np.zeros((1, *ori_size), np.uint8)
            out = self.pipeline(image=image, masks=masks)
            maps = np.asarray(out["masks"], np.uint8)[:num_persons]
        content = out["image"]
        img_size = content.shape[:2]
        pad_size = tuple(-(-s // self.pad_divisor) * self.pad_divisor for s in img_size)
        padded = np.zeros((*pad_size, content.shape[2]), np.float32)
        padded[: img_size[0], : img_size[1]] = content
        if not self.keep_original_parsing:
            padded_maps = np.zeros((num_persons, *pad_size), np.uint8)
            padded_maps[:, : img_size[0], : img_size[1]] = maps
            maps = padded_maps
        flipped = any(
            name == HorizontalFlipWithClassSwap.__name__
            for name, _ in out.get("applied_transforms", [])
        )
        return {
            "image": torch.from_numpy(padded.transpose(2, 0, 1).copy()),
            "parsing": torch.from_numpy(np.ascontiguousarray(maps)),
            "image_id": sample["image_id"],
            "meta": {
                "ori_size": (int(ori_size[0]), int(ori_size[1])),
                "img_size": (int(img_size[0]), int(img_size[1])),
                "pad_size": (int(pad_size[0]), int(pad_size[1])),
                "scale": (img_size[0] / ori_size[0], img_size[1] / ori_size[1]),
                "flipped": bool(flipped),
                "dataset": self.dataset,
            },
        }


def paper_normalize() -> A.Normalize:
    """``Normalize`` with the paper's RGB mean/std on the 0..255 scale."""
    return A.Normalize(mean=PAPER_MEAN, std=PAPER_STD, max_pixel_value=1.0)
