"""Keyed train sampler and lazy loader: (index, epoch) keys, order = f(seed, epoch), late start."""

from __future__ import annotations

from torch.utils.data import DistributedSampler

from smp_parsing.data.sampler import EpochKeyedSampler, LazyDataLoader


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

    def __len__(self) -> int:
        return 4

    def __getitem__(self, key):
        return key


def test_lazy_loader_draws_the_indices_at_the_first_batch():
    sampler = EpochKeyedSampler(range(4), num_replicas=1, rank=0, shuffle=False)
    loader = LazyDataLoader(KeyEcho(), batch_size=2, sampler=sampler, collate_fn=list)
    batches = iter(loader)  # what Lightning does while it sets up the optimisers
    sampler.set_epoch(2)  # ... then the restored epoch arrives
    assert next(batches) == [(0, 2), (1, 2)]
    assert list(batches) == [[(2, 2), (3, 2)]]
