"""Train and evaluation samplers: ``(index, epoch)`` keys, aspect-grouped batches, exact shards.

The train augmentation is a pure function of ``(run seed, epoch, sample index)``
(:meth:`smp_parsing.data.transforms.ParsingTransforms.reseed`), so the data set has to know the
epoch of every sample it transforms. The epoch travels **with the index**, through the sampler,
rather than as an attribute set on the data set (``dataset.set_epoch``): the sampler runs in the
main process (the DataLoader draws the indices there and sends them to the workers), and an
attribute set on the data set in the main process after the workers have started never reaches
the workers' copies when ``persistent_workers=True``. A key inside each index does, whatever the
worker count, without shared memory or worker restarts.

:class:`EpochKeyedSampler` is a ``DistributedSampler`` (one replica in a single process): the
order of an epoch is a function of ``(seed, epoch)`` only, not of the global torch generator,
whose state at the start of an epoch depends on what drew from it before (a new worker pool
draws a base seed, a persistent one does not); Lightning calls ``set_epoch`` at the start of
every epoch and, the sampler being a ``DistributedSampler``, leaves it in place under DDP
instead of wrapping it again.

:class:`AspectGroupedBatchSampler` is the train sampler: it yields whole batches of keys, every
batch of one aspect group (landscape / portrait, as mmdetection's ``GroupSampler`` and
detectron2's ``AspectRatioGroupedDataset``): SOLO-style grids span the padded canvas, and a
portrait image padded to the square of a landscape batch mate trains on a grid ~1.5x coarser
along one axis than at test time. It is a ``DistributedSampler`` too, its shards disjoint
(nothing repeated, unlike ``DistributedSampler``'s padding) with the same number of batches on
every rank (DDP needs it), and it skips the batches a resumed epoch already trained.
:class:`KeyBatchDataset` lets the ``DataLoader`` fetch such a batch as one item
(``batch_size=None``), so a worker process builds a whole batch, as with plain batching.

:class:`ShardSampler` is the evaluation sampler under DDP: every image on exactly one rank (the
metrics must not count the copies ``DistributedSampler`` pads with), the ranks' counts off by one
at most.

:class:`LazyDataLoader` starts its iterator (draws the indices, starts the workers, prefetches)
at the first batch instead of at ``iter()``. Lightning creates the train iterator early, while
it sets up the optimisers (``estimated_stepping_batches``), and on resume keeps that iterator for
the first epoch: without the delay that epoch's indices would be drawn before the checkpoint's
loop state, hence the epoch and the batches it already trained, is restored.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

log = logging.getLogger(__name__)

SampleKey = tuple[int, int]  # (index, epoch)


class EpochKeyedSampler(DistributedSampler):
    """``DistributedSampler`` yielding ``(index, epoch)`` keys (same shard and order).

    Pass ``num_replicas=1, rank=0`` outside a process group.
    """

    def __iter__(self) -> Iterator[SampleKey]:  # type: ignore[override]
        epoch = self.epoch  # read now, not when the first key is drawn
        return ((int(index), epoch) for index in super().__iter__())


def split_batches(members: Tensor, batch_size: int) -> list[Tensor]:
    """Consecutive batches of ``batch_size`` indices; the last one may be smaller."""
    return list(torch.split(members, batch_size)) if members.numel() else []


class AspectGroupedBatchSampler(DistributedSampler):
    """Batches of ``(index, epoch)`` keys, one aspect group per batch, sharded over the ranks.

    An epoch (the same on every rank, a function of ``(seed, epoch)`` only):

    1. shuffle the indices (``torch.randperm`` seeded with ``seed + epoch``), split them by
       group keeping that order, cut each group into batches of ``batch_size`` (each group's
       last batch may be smaller), shuffle the batches;
    2. make the batch count a multiple of ``num_replicas`` (each rank must run as many steps)
       by halving the largest batch, as often as needed (at most ``num_replicas - 1`` times);
       only an epoch with fewer images than batches needed repeats batches (warned);
    3. rank ``r`` takes batches ``r, r + R, r + 2R, ...``: step ``k`` of every rank comes from
       the same stretch of the epoch, and the shards are disjoint and cover the epoch.

    Args:
        dataset: The (sized) data set.
        groups: ``(N,)`` integer group of every index (e.g. 0 landscape, 1 portrait); one value
            everywhere disables the grouping.
        batch_size: Images per batch (per rank and step).
        num_replicas: Number of ranks (1 outside a process group).
        rank: This process's rank.
        shuffle: Shuffle the indices and the batches (``False``: index order, group by group).
        seed: Base seed of the order (the run seed; the same on every rank).
        completed_batches: Called when an epoch's iteration starts: how many of this rank's
            batches of the epoch are already trained (a resumed run); they are skipped, so the
            epoch continues with the batches the interrupted run had not reached.
    """

    def __init__(
        self,
        dataset: Dataset,
        groups: Sequence[int] | Tensor,
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        completed_batches: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.groups = torch.as_tensor(groups, dtype=torch.long).flatten()
        if self.groups.numel() != len(dataset):  # type: ignore[arg-type]
            raise ValueError(f"{self.groups.numel()} groups for {len(dataset)} samples")  # type: ignore[arg-type]
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.completed_batches = completed_batches
        counts = torch.bincount(self.groups - self.groups.min()) if self.groups.numel() else []
        batches = sum(math.ceil(int(c) / batch_size) for c in counts)
        self.num_batches = math.ceil(batches / num_replicas)  # per rank, the same every epoch

    def epoch_batches(self, epoch: int) -> list[Tensor]:
        """Every rank's batches of ``epoch`` in step order (rank ``r`` gets ``r::num_replicas``)."""
        n = self.groups.numel()
        generator = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        batches: list[Tensor] = []
        for group in torch.unique(self.groups).tolist():
            batches += split_batches(order[self.groups[order] == group], self.batch_size)
        if self.shuffle and batches:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
        wanted = self.num_batches * self.num_replicas
        while len(batches) < wanted:
            sizes = torch.tensor([len(b) for b in batches])
            largest = int(sizes.argmax())
            if sizes[largest] < 2:
                break
            half = (int(sizes[largest]) + 1) // 2
            batches[largest : largest + 1] = [batches[largest][:half], batches[largest][half:]]
        if len(batches) < wanted:
            log.warning(
                "%d images cannot fill %d ranks x %d steps without repeating: %d batches repeat",
                n, self.num_replicas, self.num_batches, wanted - len(batches),
            )  # fmt: skip
            batches += [batches[i % len(batches)] for i in range(wanted - len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[SampleKey]]:  # type: ignore[override]
        epoch = self.epoch  # read now, not when the first batch is drawn
        mine = self.epoch_batches(epoch)[self.rank :: self.num_replicas]
        skip = int(self.completed_batches()) if self.completed_batches is not None else 0
        if skip:
            log.info("epoch %d resumed: skipping its %d trained batches", epoch, skip)
        return ([(int(i), epoch) for i in batch] for batch in mine[skip:])

    def __len__(self) -> int:
        return self.num_batches


class KeyBatchDataset(Dataset):
    """A data set whose item is a whole batch: ``dataset[keys]`` is ``[dataset[k] for k in keys]``.

    Used with ``DataLoader(batch_size=None, sampler=<batch sampler>)`` so that the sampler stays
    the loader's ``sampler`` (a ``DistributedSampler``, which Lightning keeps under DDP instead
    of wrapping it as it does a custom ``batch_sampler``).
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, keys: Sequence[Any]) -> list[Any]:
        return [self.dataset[key] for key in keys]


class ShardSampler(DistributedSampler):
    """Evaluation shard: indices ``rank, rank + R, ...`` in order, nothing repeated.

    ``DistributedSampler`` pads the ranks to equal lengths with repeated indices, which an
    evaluation would count twice. The ranks' step counts may then differ by one: the evaluation
    steps must not run collectives (they do not; the metrics synchronise at the epoch end). A
    rank without any image would skip the evaluation, epoch end included, and leave the others
    waiting there: a set smaller than the world is refused.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        size = len(dataset)  # type: ignore[arg-type]
        if 0 < size < num_replicas:
            raise ValueError(
                f"{size} evaluation images cannot be split over {num_replicas} processes without "
                "repeating some (which the metrics would count twice): use fewer devices"
            )
        self.num_samples = len(range(rank, size, num_replicas))
        self.total_size = size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))


class _LazyIterator:
    """Calls ``start`` for the real iterator at the first ``next``."""

    def __init__(self, start: Callable[[], Iterator[Any]]) -> None:
        self._start = start
        self._iterator: Iterator[Any] | None = None

    def __iter__(self) -> _LazyIterator:
        return self

    def __next__(self) -> Any:
        if self._iterator is None:
            self._iterator = self._start()
        return next(self._iterator)


class LazyDataLoader(DataLoader):
    """``DataLoader`` whose iteration starts at the first batch (see the module docstring)."""

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return _LazyIterator(super().__iter__)

    def state_dict(self) -> dict[str, Any]:
        """Empty: a run resumed mid-epoch continues where its sampler's ``completed_batches``
        (the trainer's restored loop progress) says. Lightning stores loader states and warns
        that a loader without one cannot resume mid-epoch."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore (see :meth:`state_dict`)."""
