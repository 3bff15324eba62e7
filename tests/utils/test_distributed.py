"""broadcast_buffers: two forked gloo processes whose BatchNorm statistics diverged end equal."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from smp_parsing.utils.distributed import broadcast_buffers


def _net(rank: int) -> nn.Module:
    torch.manual_seed(0)  # same weights on both ranks
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    net.train()
    torch.manual_seed(100 + rank)  # a different batch per rank, as under DDP
    net(torch.randn(2, 3, 8, 8) * (rank + 1))
    return net


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        net = _net(rank)
        count = broadcast_buffers(net)
        torch.save({"count": count, "state": net.state_dict()}, Path(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_broadcast_buffers_gives_every_rank_rank_zero_statistics(tmp_path, free_port):
    mp.start_processes(_worker, args=(free_port, str(tmp_path)), nprocs=2, start_method="fork")
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert results[0]["count"] == results[1]["count"] == 3  # mean, var, num_batches_tracked
    rank0 = _net(0).state_dict()
    assert not torch.equal(_net(1)[1].running_mean, rank0["1.running_mean"])  # they diverged
    for result in results:
        for key, value in rank0.items():
            torch.testing.assert_close(result["state"][key], value, rtol=0, atol=0)


def test_broadcast_buffers_is_a_no_op_outside_a_process_group():
    net = _net(1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert broadcast_buffers(net) == 0
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key])
