"""Keyed train sampler and lazy loader: (index, epoch) keys, order = f(seed, epoch), late start."""

from __future__ import annotations

import pytest
from torch.utils.data import DistributedSampler

from smp_parsing.data.sampler import (
    AspectGroupedBatchSampler,
    EpochKeyedSampler,
    KeyBatchDataset,
    LazyDataLoader,
    ShardSampler,
)


def test_keys_carry_the_epoch_and_the_distributed_sampler_order():
    data = range(11)
    seen = []
    for rank in range(2):
        plain = DistributedSampler(data, num_replicas=2, rank=rank, shuffle=True, seed=5)
        keyed = EpochKeyedSampler(data, num_replicas=2, rank=rank, shuffle=True, seed=5)
        plain.set_epoch(3)
        keyed.set_epoch(3)
        keys = list(keyed)
        assert keys == [(index, 3) for index in plain] and len(keyed) == len(plain)
        seen += [index for index, _ in keys]
    assert set(seen) == set(data)  # the ranks cover the data set (one index padded in twice)


def test_order_is_a_function_of_seed_and_epoch():
    def order(seed, epoch):
        sampler = EpochKeyedSampler(range(20), num_replicas=1, rank=0, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return [index for index, _ in sampler]

    assert order(1, 2) == order(1, 2) and sorted(order(1, 2)) == list(range(20))
    assert order(1, 2) != order(1, 3) and order(1, 2) != order(2, 2)


def test_epoch_is_read_when_the_iteration_starts():
    sampler = EpochKeyedSampler(range(3), num_replicas=1, rank=0, shuffle=False)
    first = iter(sampler)
    sampler.set_epoch(1)  # keys already being drawn keep the epoch they were drawn in
    assert list(first) == [(0, 0), (1, 0), (2, 0)]
    assert list(sampler) == [(0, 1), (1, 1), (2, 1)]


class KeyEcho:
    """A data set whose samples are the keys they are fetched with."""

    def __init__(self, size: int = 4) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key):
        return key


def test_lazy_loader_draws_the_indices_at_the_first_batch():
    sampler = EpochKeyedSampler(range(4), num_replicas=1, rank=0, shuffle=False)
    loader = LazyDataLoader(KeyEcho(), batch_size=2, sampler=sampler, collate_fn=list)
    batches = iter(loader)  # what Lightning does while it sets up the optimisers
    sampler.set_epoch(2)  # ... then the restored epoch arrives
    assert next(batches) == [(0, 2), (1, 2)]
    assert list(batches) == [[(2, 2), (3, 2)]]


# --------------------------------------------------------------------------------------------
# Aspect-grouped train batches
# --------------------------------------------------------------------------------------------


def grouped(groups, batch_size=3, num_replicas=1, rank=0, seed=4, epoch=0, **kwargs):
    sampler = AspectGroupedBatchSampler(
        range(len(groups)), groups, batch_size=batch_size, num_replicas=num_replicas, rank=rank,
        seed=seed, **kwargs,
    )  # fmt: skip
    sampler.set_epoch(epoch)
    return sampler


GROUPS = [0, 1, 1, 0, 0, 1, 0, 0, 1, 1, 1, 0, 0, 1, 0, 0, 0]  # 10 landscape, 7 portrait


def test_every_batch_is_one_group_and_the_epoch_is_covered_once():
    sampler = grouped(GROUPS, epoch=2)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 4 + 3  # ceil(10 / 3) + ceil(7 / 3)
    assert all(len({GROUPS[i] for i, _ in batch}) == 1 for batch in batches)
    assert all(1 <= len(batch) <= 3 and {e for _, e in batch} == {2} for batch in batches)
    assert sorted(i for batch in batches for i, _ in batch) == list(range(len(GROUPS)))
    # the groups are interleaved over the epoch, not one after the other
    firsts = [GROUPS[batch[0][0]] for batch in batches]
    assert firsts != sorted(firsts) and firsts != sorted(firsts, reverse=True)


def test_grouped_order_is_a_function_of_seed_and_epoch():
    def order(seed, epoch):
        return list(grouped(GROUPS, seed=seed, epoch=epoch))

    assert order(1, 2) == order(1, 2)
    assert order(1, 2) != order(1, 3) and order(1, 2) != order(2, 2)


@pytest.mark.parametrize("num_replicas", [2, 3, 4])
@pytest.mark.parametrize("batch_size", [2, 3, 4])
def test_ddp_shards_are_disjoint_cover_the_epoch_and_step_together(num_replicas, batch_size):
    shards = [
        list(grouped(GROUPS, batch_size, num_replicas, rank, epoch=5))
        for rank in range(num_replicas)
    ]
    # every rank runs the same number of steps, every batch one group and epoch 5
    assert {len(shard) for shard in shards} == {len(grouped(GROUPS, batch_size, num_replicas))}
    for shard in shards:
        assert all(len({GROUPS[i] for i, _ in b}) == 1 and {e for _, e in b} == {5} for b in shard)
    seen = [i for shard in shards for batch in shard for i, _ in batch]
    assert sorted(seen) == list(range(len(GROUPS)))  # disjoint (no repeat) and covering


def test_too_few_images_for_the_ranks_repeat_with_a_warning(caplog):
    shards = [list(grouped([0, 1, 0], 1, 2, rank)) for rank in range(2)]
    assert [len(s) for s in shards] == [2, 2]
    seen = [i for s in shards for b in s for i, _ in b]
    assert len(seen) == 4 and set(seen) == {0, 1, 2}
    assert "without repeating" in caplog.text


def test_resumed_epoch_skips_the_trained_batches():
    full = list(grouped(GROUPS, epoch=3))
    for done in (0, 2, len(full)):
        assert list(grouped(GROUPS, epoch=3, completed_batches=lambda d=done: d)) == full[done:]


def test_grouping_off_with_one_group_and_input_checks():
    batches = list(grouped([0] * 7, batch_size=3, shuffle=False))
    assert [[i for i, _ in b] for b in batches] == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(ValueError, match="groups for"):
        AspectGroupedBatchSampler(range(3), [0, 1], batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        AspectGroupedBatchSampler(range(2), [0, 1], batch_size=0)


@pytest.mark.parametrize("workers", [0, 2])
def test_grouped_loader_order_does_not_depend_on_workers(workers):
    sampler = grouped(GROUPS, epoch=1)
    loader = LazyDataLoader(KeyBatchDataset(KeyEcho(len(GROUPS))), batch_size=None,
                            sampler=sampler, collate_fn=list, num_workers=workers)  # fmt: skip
    assert list(loader) == list(sampler)


# --------------------------------------------------------------------------------------------
# Evaluation shards
# --------------------------------------------------------------------------------------------


def test_eval_shards_repeat_nothing_and_cover_the_set():
    shards = [list(ShardSampler(range(7), num_replicas=3, rank=rank)) for rank in range(3)]
    assert [len(s) for s in shards] == [3, 2, 2]
    assert [len(ShardSampler(range(7), 3, rank)) for rank in range(3)] == [3, 2, 2]
    assert sorted(i for s in shards for i in s) == list(range(7))
    with pytest.raises(ValueError, match="without repeating"):
        ShardSampler(range(2), num_replicas=3, rank=0)
