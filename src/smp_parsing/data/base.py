"""Base class of the parsing readers: one sample read, bad samples reported, transforms applied."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch.utils.data import Dataset

from smp_parsing.data.errors import BadSampleError, BadSampleTracker
from smp_parsing.data.image_files import DATASET_IMAGE_SUFFIXES, read_image_size


class ParsingDataset(Dataset, ABC):
    """A reader of person parsing maps (MHP v2, DensePose-COCO).

    Subclasses set ``self.transforms`` (or ``None``) and ``self.tracker`` (a
    :class:`BadSampleTracker`) and implement :meth:`load_sample`, which raises
    :class:`BadSampleError` for a sample that must not be used.
    """

    transforms: Callable[[dict[str, Any]], dict[str, Any]] | None
    tracker: BadSampleTracker
    # The layout the reader expects on disk, shown with the missing paths (see the registry).
    layout_help: ClassVar[str] = ""

    @classmethod
    def required_paths(cls, split: str, **keywords: Any) -> list[Path]:
        """What ``split`` needs on disk before any file is read, for a reader built with
        ``keywords`` (the config's arguments): the data module checks that they exist before it
        builds the reader (:meth:`smp_parsing.data.registry.DatasetSpec.missing`).

        This default needs nothing; readers list their id list / annotation file and folders.
        """
        return []

    @abstractmethod
    def load_sample(self, index: int) -> dict[str, Any]:
        """Read sample ``index`` without transforms (see the subclass for the keys)."""

    def read_image_sizes(self) -> np.ndarray:
        """``(N, 2)`` int64 ``(height, width)`` of every raw image, ``(0, 0)`` when unreadable.

        This default decodes every sample; readers override it with what they know without
        decoding (file headers, the annotation file).
        """
        sizes = np.zeros((len(self), 2), np.int64)  # type: ignore[arg-type]
        for index in range(len(sizes)):
            try:
                sizes[index] = self.load_sample(index)["image"].shape[:2]
            except BadSampleError:
                pass
        return sizes

    def aspect_groups(self) -> np.ndarray:
        """``(N,)`` int64 aspect group of every image: 0 landscape (``w > h``), 1 otherwise.

        The train sampler batches each group apart (mmdetection's ``GroupSampler`` flag,
        detectron2's buckets: squares go with the portraits). The keep-ratio resize keeps the
        orientation, so the raw sizes decide. Computed once per data set (cached).
        """
        if getattr(self, "_aspect_groups", None) is None:
            sizes = self.read_image_sizes()
            self._aspect_groups = (sizes[:, 1] <= sizes[:, 0]).astype(np.int64)
        return self._aspect_groups

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any] | None:
        """The transformed sample, or ``None`` for a bad sample under ``on_bad_sample="skip"``.

        Args:
            key: A sample index, or ``(index, epoch)`` from the train sampler
                (:mod:`smp_parsing.data.sampler`): the transforms are then reseeded
                (``transforms.reseed(index, epoch)``, when they have it) so that the sample's
                augmentation is a function of the run seed, the epoch and the index only.

        Under ``"error"`` the tracker re-raises the :class:`BadSampleError` naming the file.
        """
        index, epoch = key if isinstance(key, tuple) else (key, None)
        try:
            sample = self.load_sample(index)
        except BadSampleError as error:
            self.tracker.report(error)
            return None
        if self.transforms is None:
            return sample
        reseed = getattr(self.transforms, "reseed", None)
        if epoch is not None and callable(reseed):
            reseed(index, epoch)
        return self.transforms(sample)


class ListedDataset(ParsingDataset):
    """A reader that indexes its split when it is built (MHP v2, CIHP).

    Subclasses fill ``self.samples`` with one tuple per item whose first two entries are the
    image id and the image path, and set ``self.max_image_pixels``.
    """

    samples: list[tuple[Any, ...]]
    max_image_pixels: int

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def image_ids(self) -> list[str]:
        """Image ids in item order."""
        return [s[0] for s in self.samples]

    def stored_size(self, index: int) -> tuple[int, int] | None:
        """``(height, width)`` of item ``index`` as the annotation file gives it, ``None`` when
        it gives none (the image header is then read)."""
        return None

    def read_image_sizes(self) -> np.ndarray:
        """``(N, 2)`` ``(height, width)`` without decoding: :meth:`stored_size`, else the image
        header (PIL reads no pixel data).

        ``(0, 0)`` for an unreadable image header; reading the sample reports the file.
        """
        sizes = np.zeros((len(self.samples), 2), np.int64)
        for index, sample in enumerate(self.samples):
            stored = self.stored_size(index)
            if stored is not None:
                sizes[index] = stored
                continue
            try:
                sizes[index] = read_image_size(sample[1], self.max_image_pixels)
            except BadSampleError:
                pass
        return sizes

    def listed_images(
        self, list_file: Path, image_dir: Path, images: dict[str, Path], limit: int | None
    ) -> Iterator[tuple[str, Path]]:
        """The ids of an id list with their image files, in list order.

        Args:
            list_file: One image id per line (blank lines skipped).
            image_dir: The images folder (for the message).
            images: Its images by id (:func:`index_images`).
            limit: Use only the first ``limit`` ids; ``None`` for all.

        Yields:
            ``(image_id, image path)``; an id without image is reported to the tracker when it
            is reached (in list order with what the caller reports) and left out.
        """
        ids = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
        for image_id in ids if limit is None else ids[:limit]:
            if image_id in images:
                yield image_id, images[image_id]
            else:
                self.tracker.report(
                    BadSampleError(
                        list_file, f"lists id {image_id!r} but {image_dir} has no image for it"
                    )
                )


def index_images(image_dir: Path) -> dict[str, Path]:
    """Image id (file stem) -> image file, from one listing of ``image_dir`` (not one stat per
    id: CIHP train lists 28k ids)."""
    return {p.stem: p for p in image_dir.iterdir() if p.suffix.lower() in DATASET_IMAGE_SUFFIXES}


def check_class_ids(label: np.ndarray, path: Path, num_classes: int, note: str = "") -> None:
    """Raise :class:`BadSampleError` naming ``path`` when ``label`` holds an id ``>= num_classes``
    (``note`` is appended to the message)."""
    top = int(label.max(initial=0))
    if top >= num_classes:
        raise BadSampleError(path, f"class id {top} out of range 0..{num_classes - 1}{note}")


def drop_empty_persons(
    parsing: np.ndarray, image_id: str, names: list[str], logger: logging.Logger
) -> tuple[np.ndarray, np.ndarray]:
    """Leave out the persons without any part pixel: they are not ground truth (nothing to parse;
    the official MHP evaluation skips them).

    Args:
        parsing: ``N x H x W`` uint8, one map per person.
        image_id: The image, for the debug log.
        names: ``N`` names of the persons (their files, their ids), for the debug log.
        logger: The reader's logger (the debug line names the reader's module).

    Returns:
        ``parsing`` without the empty persons (``M x H x W``) and the ``(N,)`` bool mask kept.
    """
    keep = parsing.any(axis=(1, 2))
    if not keep.all():
        logger.debug(
            "%s: dropping persons without part pixels: %s",
            image_id,
            [names[i] for i in np.flatnonzero(~keep)],
        )
    return parsing[keep], keep
