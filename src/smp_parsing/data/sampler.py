"""The train sampler and loader: ``(index, epoch)`` keys, an order that is a function of the epoch.

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

:class:`LazyDataLoader` starts its iterator (draws the indices, starts the workers, prefetches)
at the first batch instead of at ``iter()``. Lightning creates the train iterator early, while
it sets up the optimisers (``estimated_stepping_batches``), and on resume keeps that iterator for
the first epoch: without the delay that epoch's indices would be drawn before the checkpoint's
loop state, hence the epoch, is restored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DataLoader, DistributedSampler

SampleKey = tuple[int, int]  # (index, epoch)


class EpochKeyedSampler(DistributedSampler):
    """``DistributedSampler`` yielding ``(index, epoch)`` keys (same shard and order).

    Pass ``num_replicas=1, rank=0`` outside a process group.
    """

    def __iter__(self) -> Iterator[SampleKey]:  # type: ignore[override]
        epoch = self.epoch  # read now, not when the first key is drawn
        return ((int(index), epoch) for index in super().__iter__())


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
