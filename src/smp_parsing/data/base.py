"""Base class of the parsing readers: one sample read, bad samples reported, transforms applied."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch.utils.data import Dataset

from smp_parsing.data.errors import BadSampleError, BadSampleTracker


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
