"""DDP: two gloo processes on the CPU, each updating half of the data, give the single-process result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from smp_parsing.metrics import ParsingMetrics

from .cases import random_images, to_metric_inputs, worked_example

NUM_CLASSES = 6
WORLD_SIZE = 2


def _dataset() -> tuple[list[dict], list[dict]]:
    """Twelve random images (overlaps, empty maps, tied scores) with image ids."""
    rng = np.random.default_rng(11)
    preds, target = to_metric_inputs(random_images(rng, 12, NUM_CLASSES, max_size=20))
    for index, t in enumerate(target):
        t["image_id"] = f"{1000 + index}"
    return preds, target


def _shard(items: list, rank: int, interleaved: bool) -> list:
    if interleaved:  # DistributedSampler style: rank r gets r, r + W, r + 2W, ...
        return items[rank::WORLD_SIZE]
    half = (len(items) + 1) // 2  # contiguous halves, rank 1 may get fewer
    return items[half * rank : half * (rank + 1)]


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE
    )
    try:
        results = {}
        preds, target = _dataset()
        for interleaved in (False, True):
            metric = ParsingMetrics(NUM_CLASSES)
            shard_p, shard_t = _shard(preds, rank, interleaved), _shard(target, rank, interleaved)
            metric.update(shard_p[:2], shard_t[:2])  # several updates per rank
            metric.update(shard_p[2:], shard_t[2:])
            results["interleaved" if interleaved else "contiguous"] = metric.compute()
        # Without image ids, contiguous shards keep the arrival order: still exact.
        metric = ParsingMetrics(NUM_CLASSES)
        no_ids = [{"parsing": t["parsing"]} for t in target]
        metric.update(_shard(preds, rank, False), _shard(no_ids, rank, False))
        results["contiguous_no_ids"] = metric.compute()
        example_p, example_t = worked_example()
        metric = ParsingMetrics(59)
        metric.update(_shard(example_p, rank, True), _shard(example_t, rank, True))
        results["worked_example"] = metric.compute()
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def _check_ranks_equal_single_process(out_dir: Path) -> None:
    preds, target = _dataset()
    single = ParsingMetrics(NUM_CLASSES)
    single.update(preds, target)
    expected = single.compute()
    no_ids = ParsingMetrics(NUM_CLASSES)
    no_ids.update(preds, [{"parsing": t["parsing"]} for t in target])
    example_p, example_t = worked_example()
    example = ParsingMetrics(59)
    example.update(example_p, example_t)
    for rank in range(WORLD_SIZE):
        results = json.loads(Path(out_dir, f"rank{rank}.json").read_text())
        assert results["contiguous"] == expected
        assert results["interleaved"] == expected
        assert results["contiguous_no_ids"] == no_ids.compute()
        assert results["worked_example"]["APpvol"] == example.compute()["APpvol"]
        assert abs(results["worked_example"]["APpvol"] - 49 / 108) < 1e-12


def test_ddp_forked_processes_equal_single_process(tmp_path, free_port):
    """Fast variant: forked workers inherit the imported modules (start-up in milliseconds)."""
    mp.start_processes(
        _worker, args=(free_port, str(tmp_path)), nprocs=WORLD_SIZE, start_method="fork"
    )
    _check_ranks_equal_single_process(tmp_path)


@pytest.mark.slow
def test_ddp_spawned_processes_equal_single_process(tmp_path, free_port):
    """As Lightning's ``ddp_spawn``: fresh interpreters (each re-imports torch, ~20-30 s here)."""
    mp.start_processes(
        _worker, args=(free_port, str(tmp_path)), nprocs=WORLD_SIZE, start_method="spawn"
    )
    _check_ranks_equal_single_process(tmp_path)


def _uneven_worker(rank: int, port: int, out_dir: str, world_size: int, num_images: int) -> None:
    """One rank of ``world_size`` updating its :class:`ShardSampler` share, one image per step."""
    from smp_parsing.data.sampler import ShardSampler

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        preds, target = _dataset()
        metric = ParsingMetrics(NUM_CLASSES)
        for index in ShardSampler(range(num_images), num_replicas=world_size, rank=rank):
            metric.update(preds[index : index + 1], target[index : index + 1])
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(metric.compute()))
    finally:
        dist.destroy_process_group()


def test_uneven_shards_of_three_ranks_equal_single_process(tmp_path, free_port):
    """7 images on 3 ranks (3, 2, 2 updates): the synchronised metric is the one-process one."""
    mp.start_processes(
        _uneven_worker, args=(free_port, str(tmp_path), 3, 7), nprocs=3, start_method="fork"
    )
    preds, target = _dataset()
    single = ParsingMetrics(NUM_CLASSES)
    single.update(preds[:7], target[:7])
    expected = single.compute()
    for rank in range(3):
        assert json.loads(Path(tmp_path, f"rank{rank}.json").read_text()) == expected
