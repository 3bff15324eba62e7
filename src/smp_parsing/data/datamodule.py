"""LightningDataModule of any registered data set (:mod:`smp_parsing.data.registry`), from config.

Everything comes from ``conf/data/<name>.yaml`` through Hydra ``instantiate``: the data set
constructors arrive as partials (``_partial_: true``) that receive the transforms here, the
transforms are :class:`smp_parsing.data.transforms.ParsingTransforms` objects, and an optional
``prepare`` hook writes the data on first use (``prepare_data`` runs on one process per node; the
synthetic sets' hook is :class:`smp_parsing.data.synthetic_tool.GeneratedTree`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from smp_parsing.data.collate import collate_parsing
from smp_parsing.data.image_files import DEFAULT_MAX_IMAGE_PIXELS
from smp_parsing.data.registry import DatasetSpec, get_dataset_spec
from smp_parsing.data.sampler import (
    AspectGroupedBatchSampler,
    KeyBatchDataset,
    LazyDataLoader,
    ShardSampler,
)
from smp_parsing.metadata import DatasetMeta

log = logging.getLogger(__name__)


class ParsingDataModule(pl.LightningDataModule):
    """Data sets, transforms and loaders of one multi-human parsing data set.

    Args:
        dataset_name: A registered data set (``mhp``, ``densepose``, ``cihp``, ``synthetic``):
            its label space, flip pairs and root check (:mod:`smp_parsing.data.registry`).
        num_classes: Classes including background; checked against the registered label space.
        data_dir: Root of the data (MHP tree, DensePose folder or where the synthetic set goes).
        train_dataset: Partial building the train data set, called with ``transforms=`` (and
            ``limit=`` when ``limit_train`` is set).
        val_dataset: Same for validation.
        test_dataset: Same for test; ``None`` uses ``val_dataset`` (no public MHP test GT).
        train_transforms: Train :class:`ParsingTransforms` (resize jitter, flip with class swap).
        test_transforms: Eval :class:`ParsingTransforms` (``keep_original_parsing: true``).
        batch_size: Train images per device and step.
        eval_batch_size: Validation/test images per step (loading and decoding only: the
            network runs on each image alone, so the metrics do not depend on it).
        group_by_aspect_ratio: Train batches hold landscape or portrait images only
            (:class:`~smp_parsing.data.sampler.AspectGroupedBatchSampler`).
        num_workers: DataLoader worker processes.
        pin_memory: Pin host memory for faster host-to-GPU copies.
        persistent_workers: Keep workers alive between epochs (only with ``num_workers > 0``).
        limit_train: Use only the first K train images (``None`` = all).
        limit_val: Use only the first K validation images (fast CPU validation).
        limit_test: Use only the first K test images.
        prepare: Called with ``data_dir`` by :meth:`prepare_data` before the files are checked,
            e.g. to write a generated data set on first use
            (:class:`~smp_parsing.data.synthetic_tool.GeneratedTree`); ``None``: the data is there.
        on_bad_sample: The data sets' bad-sample policy (the config interpolates it into the data
            set partials; kept here so that it is logged with the hyper-parameters).
        max_image_pixels: Largest image/label ``width * height`` the readers decode (checked on
            the file header; interpolated into the partials and kept here like ``on_bad_sample``).
    """

    def __init__(
        self,
        dataset_name: str,
        num_classes: int,
        data_dir: str,
        train_dataset: Callable[..., Dataset] | None = None,
        val_dataset: Callable[..., Dataset] | None = None,
        test_dataset: Callable[..., Dataset] | None = None,
        train_transforms: Callable[[dict], dict] | None = None,
        test_transforms: Callable[[dict], dict] | None = None,
        batch_size: int = 2,
        eval_batch_size: int = 1,
        group_by_aspect_ratio: bool = True,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        limit_train: int | None = None,
        limit_val: int | None = None,
        limit_test: int | None = None,
        prepare: Callable[[Path], None] | None = None,
        on_bad_sample: str = "error",
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        super().__init__()
        self.spec: DatasetSpec = get_dataset_spec(dataset_name)
        self.meta: DatasetMeta = self.spec.meta
        if num_classes != self.meta.num_classes:
            raise ValueError(
                f"data.num_classes={num_classes} but {dataset_name!r} has {self.meta.num_classes} classes"
            )
        self.dataset_name = dataset_name
        self.num_classes = num_classes
        self.data_dir = Path(data_dir)
        self.dataset_factories = {
            "train": train_dataset,
            "val": val_dataset,
            "test": test_dataset or val_dataset,
        }
        self.limits = {"train": limit_train, "val": limit_val, "test": limit_test}
        self.train_transforms = train_transforms
        self.test_transforms = test_transforms
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.group_by_aspect_ratio = group_by_aspect_ratio
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.prepare_hook = prepare
        self.on_bad_sample = on_bad_sample
        self.max_image_pixels = max_image_pixels
        self.datasets: dict[str, Dataset] = {}

    # ------------------------------------------------------------------ preparation
    def prepare_data(self) -> None:
        """Run the ``prepare`` hook (e.g. generate a synthetic set), then check the files.

        Raises:
            DataRootError: a split's files are missing; the message gives the layout the
                data set's reader expects and how to use the synthetic set instead.
        """
        if self.prepare_hook is not None:
            self.prepare_hook(self.data_dir)
        for split, factory in self.dataset_factories.items():
            if factory is not None:
                self._check_files(split, factory)

    @staticmethod
    def _keywords(factory: Callable[..., Dataset]) -> dict[str, Any]:
        return dict(getattr(factory, "keywords", {}) or {})

    def _check_files(self, split: str, factory: Callable[..., Dataset]) -> None:
        """Ask the registered reader whether a split's files exist (cheap, no data loaded).

        Only a partial of the data set's own reader is checked: its keywords are that reader's
        arguments (another factory may take anything).

        Raises:
            DataRootError: naming the missing paths and the layout the reader expects.
        """
        reader = getattr(factory, "func", None)
        if not (isinstance(reader, type) and isinstance(self.spec.reader, type)):
            return
        if issubclass(reader, self.spec.reader):
            self.spec.check_root(split, **self._keywords(factory))

    # ------------------------------------------------------------------ data sets
    def _build(self, split: str) -> Dataset:
        factory = self.dataset_factories[split]
        if factory is None:
            raise ValueError(f"no {split} data set configured for {self.dataset_name!r}")
        transforms = self.train_transforms if split == "train" else self.test_transforms
        extra = {} if self.limits[split] is None else {"limit": self.limits[split]}
        return factory(transforms=transforms, **extra)

    def setup(self, stage: str | None = None) -> None:
        """Build the data sets a stage needs (``fit``, ``validate``, ``test``, ``predict``)."""
        wanted = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("test",),
            None: ("train", "val", "test"),
        }[stage]
        for split in wanted:
            if split not in self.datasets:
                self.datasets[split] = self._build(split)

    # ------------------------------------------------------------------ loaders
    def _dataset(self, split: str) -> Dataset:
        """The data set of ``split``, set up on first use."""
        if split not in self.datasets:
            self.setup({"train": "fit", "val": "validate"}.get(split, "test"))
        return self.datasets[split]

    def _loader(
        self, split: str, batch_size: int | None, sampler: Sampler | None = None
    ) -> DataLoader:
        """The loader of ``split``; ``batch_size=None``: ``sampler`` yields whole batches."""
        dataset = self._dataset(split)
        return (LazyDataLoader if split == "train" else DataLoader)(
            dataset if batch_size is not None else KeyBatchDataset(dataset),
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            collate_fn=functools.partial(collate_parsing, pad_parsing=split == "train"),
        )

    def _shard(self) -> dict[str, int] | None:
        """``num_replicas`` and ``rank`` under a parallel strategy (DDP, even on one device)."""
        return self.trainer.distributed_sampler_kwargs if self.trainer is not None else None

    def _completed_train_batches(self) -> int:
        """Batches of the current epoch already trained: non-zero when a run resumes mid-epoch.

        Lightning restores its loop progress before the first batch of the resumed epoch is
        drawn (the train loader is lazy), and resets it to 0 at every epoch start.
        """
        trainer = self.trainer
        loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
        if loop is None or not getattr(trainer, "training", False):
            return 0
        return int(loop.batch_progress.current.completed)

    def train_sampler(self) -> AspectGroupedBatchSampler:
        """The train batch sampler: batches of ``(index, epoch)`` keys, order = f(seed, epoch).

        One aspect group per batch (unless ``group_by_aspect_ratio`` is off), this process's
        shard under a parallel strategy (see ``data/sampler.py``). Its seed is the run seed, on
        every rank (not ``PL_GLOBAL_SEED``, Lightning's default, which PerRankSeed makes
        seed + rank: the shards would overlap); it reaches the data module through the train
        transforms. Without a run seed: 0 under DDP (the ranks must agree), otherwise one draw
        of the torch generator.
        """
        seed = getattr(self.train_transforms, "seed", None)
        shard = self._shard()
        if seed is None:
            seed = 0 if shard is not None else int(torch.randint(2**31, ()).item())
        dataset = self._dataset("train")
        groups = (
            dataset.aspect_groups()
            if self.group_by_aspect_ratio and hasattr(dataset, "aspect_groups")
            else [0] * len(dataset)  # type: ignore[arg-type]
        )
        sampler = AspectGroupedBatchSampler(
            dataset,
            groups,
            batch_size=self.batch_size,
            seed=seed % 2**31,
            completed_batches=self._completed_train_batches,
            **(shard if shard is not None else {"num_replicas": 1, "rank": 0}),
        )
        sampler.set_epoch(self.trainer.current_epoch if self.trainer is not None else 0)
        return sampler

    def eval_sampler(self, split: str) -> ShardSampler | None:
        """This process's share of ``split`` under a parallel strategy, each image once."""
        shard = self._shard()
        return ShardSampler(self._dataset(split), **shard) if shard is not None else None

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", None, sampler=self.train_sampler())

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, sampler=self.eval_sampler("val"))

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, sampler=self.eval_sampler("test"))

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, sampler=self.eval_sampler("test"))
