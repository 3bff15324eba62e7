"""LightningDataModule for MHP v2, DensePose-COCO and the synthetic MHP set, built from config.

Everything comes from ``conf/data/<name>.yaml`` through Hydra ``instantiate``: the data set
constructors arrive as partials (``_partial_: true``) that receive the transforms here, the
transforms are :class:`smp_parsing.data.transforms.ParsingTransforms` objects, and for
``synthetic`` a :class:`smp_parsing.data.synthetic.SyntheticMHPGenerator` writes the data on first
use (``prepare_data`` runs on one process per node).
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from smp_parsing.data.cihp import CIHP_LAYOUT_HELP, CIHPDataset
from smp_parsing.data.collate import collate_parsing
from smp_parsing.data.densepose import DENSEPOSE_LAYOUT_HELP
from smp_parsing.data.errors import DataRootError
from smp_parsing.data.image_files import DEFAULT_MAX_IMAGE_PIXELS
from smp_parsing.data.mhp import MHP_LAYOUT_HELP, split_directory
from smp_parsing.data.sampler import (
    AspectGroupedBatchSampler,
    KeyBatchDataset,
    LazyDataLoader,
    ShardSampler,
)
from smp_parsing.data.synthetic import SyntheticMHPGenerator, is_generated
from smp_parsing.metadata import DatasetMeta, get_dataset_meta

log = logging.getLogger(__name__)

SYNTHETIC_STAMP = (
    "synthetic.json"  # what generated a synthetic tree; a different recipe regenerates
)


class ParsingDataModule(pl.LightningDataModule):
    """Data sets, transforms and loaders of one multi-human parsing data set.

    Args:
        dataset_name: ``mhp``, ``densepose`` or ``synthetic`` (label space and flip pairs).
        num_classes: Classes including background (59 or 15); checked against the metadata.
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
        generator: Synthetic only: the generator that writes ``data_dir`` when it is missing.
        num_train: Synthetic only: train images to generate.
        num_val: Synthetic only: val images to generate.
        seed: Synthetic only: generator seed.
        generate_workers: Synthetic only: processes used to generate.
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
        generator: SyntheticMHPGenerator | None = None,
        num_train: int = 1000,
        num_val: int = 200,
        seed: int = 0,
        generate_workers: int = 1,
        on_bad_sample: str = "error",
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        super().__init__()
        self.meta: DatasetMeta = get_dataset_meta(dataset_name)
        if num_classes != self.meta.num_classes:
            raise ValueError(
                f"data.num_classes={num_classes} but {dataset_name!r} has {self.meta.num_classes} classes"
            )
        if dataset_name == "synthetic" and generator is None:
            raise ValueError("data set 'synthetic' needs a generator (conf/data/synthetic.yaml)")
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
        self.generator = generator
        self.generation = {"num_train": num_train, "num_val": num_val, "seed": seed}
        self.generate_workers = generate_workers
        self.on_bad_sample = on_bad_sample
        self.max_image_pixels = max_image_pixels
        self.datasets: dict[str, Dataset] = {}

    # ------------------------------------------------------------------ preparation
    def prepare_data(self) -> None:
        """Generate the synthetic set when missing or stale; check the root of a real data set.

        Raises:
            DataRootError: a real data set's files are missing; the message gives the expected
                layout and how to use the synthetic set instead.
        """
        if self.dataset_name == "synthetic":
            self._generate_synthetic()
            return
        for split, factory in self.dataset_factories.items():
            if factory is not None:
                self._check_files(split, factory)

    def _synthetic_recipe(self) -> dict[str, Any]:
        assert self.generator is not None
        return {"generator": dict(vars(self.generator)), **self.generation}

    def _generate_synthetic(self) -> None:
        stamp = self.data_dir / SYNTHETIC_STAMP
        recipe = json.loads(json.dumps(self._synthetic_recipe()))  # tuples -> lists, as on disk
        if (
            is_generated(self.data_dir)
            and stamp.is_file()
            and json.loads(stamp.read_text()) == recipe
        ):
            log.info("synthetic data set found in %s", self.data_dir)
            return
        if stamp.is_file():
            # Our own earlier output with another recipe: stale person files would mix in, so clear it.
            log.info("synthetic recipe changed, regenerating %s", self.data_dir)
            for sub in ("list", "train", "val"):
                shutil.rmtree(self.data_dir / sub, ignore_errors=True)
        elif self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise DataRootError(
                f"{self.data_dir} is not empty and was not written by the synthetic generator "
                f"(no {SYNTHETIC_STAMP}); refusing to write into it. Point data.data_dir elsewhere."
            )
        log.info("generating the synthetic MHP v2 set in %s (%s)", self.data_dir, self.generation)
        assert self.generator is not None
        # The stamp goes in with the tree (one rename): an interrupted generation leaves no folder
        # that the next run would refuse, it simply generates again.
        self.generator.generate(
            self.data_dir,
            workers=self.generate_workers,
            extra_files={SYNTHETIC_STAMP: json.dumps(recipe, indent=1)},
            **self.generation,
        )

    @staticmethod
    def _keywords(factory: Callable[..., Dataset]) -> dict[str, Any]:
        return dict(getattr(factory, "keywords", {}) or {})

    def _check_files(self, split: str, factory: Callable[..., Dataset]) -> None:
        """Cheap existence checks of what a data set partial points to (no data loaded)."""
        kwargs = self._keywords(factory)
        if "layout" in kwargs:  # CIHP, official or coco layout
            needed = CIHPDataset.required_paths(**{"split": split, **kwargs})
            help_text = CIHP_LAYOUT_HELP
        elif "root" in kwargs:
            root, list_name = Path(kwargs["root"]), kwargs.get("split", split)
            needed = [
                root / "list" / f"{list_name}.txt",
                split_directory(root, list_name) / "images",
            ]
            help_text = MHP_LAYOUT_HELP
        elif "ann_file" in kwargs:
            needed = [Path(kwargs["ann_file"]), Path(kwargs["image_root"])]
            help_text = DENSEPOSE_LAYOUT_HELP
        else:
            return
        missing = [str(p) for p in needed if not p.exists()]
        if missing:
            raise DataRootError(
                f"{self.dataset_name} {split} data not found: missing {', '.join(missing)}\n{help_text}"
            )

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
