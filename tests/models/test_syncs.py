"""Host-device syncs of a training step and of a decode stay at their measured counts
(issue 13): the counter sees every kind of sync, and the code path has at most the
data-sized reads it needs."""

from __future__ import annotations

import torch
from benchmarks.bench_syncs import count_syncs

from smp_parsing.utils.sync_counter import SyncCounter

# Measured by benchmarks/bench_syncs.py (before the issue-13 pass: 50 per step, 44 / 51 per
# decode). Training step: the foreground pixels, the kept persons, the part instances, the
# positive cells (4 nonzero), the packed positives' K_max (1) and the CPU-only class-range
# check (2; asynchronous on a GPU). Decode: one compaction per stage plus two window sizes.
MAX_TRAIN_STEP = 7
MAX_DECODE = 13


def test_sync_counter_sees_every_kind():
    t = torch.arange(5.0)
    with SyncCounter() as syncs:
        t[0].item(), int(t[1]), float(t[2]), bool(t[3] > 0)
        if t.sum() > 0:  # a tensor as a condition
            pass
        t[t > 2]
        t[t > 3] = 0
        t.nonzero(), torch.where(t > 1), torch.bincount(t.long()), t.unique()
        torch.nn.functional.one_hot(t.long(), 5)  # its range check
        t.tolist(), t.numpy()
        torch.tensor([1, 2]), t.new_tensor([3.0])
        t[1:3], t[t.argmax()], t * 2, torch.where(t > 1, t, 0.0)  # none of these
    assert syncs.counts == {"item": 6, "bool_index": 2, "nonzero": 4, "host": 2, "constant": 2}


def test_training_step_and_decode_syncs_stay_bounded():
    report = count_syncs(size=128, batch=2, persons=2)
    assert report["forward"]["total"] == 0 and report["backward"]["total"] == 0
    assert 0 < report["train_step"]["total"] <= MAX_TRAIN_STEP, report["loss"]
    for grouping in ("release", "pointed_cell"):
        decode = report[f"decode_{grouping}"]
        assert decode["persons"] == 2  # the whole decode path ran
        assert decode["total"] <= MAX_DECODE, decode
        assert "bool_index" not in decode["by_kind"] and "constant" not in decode["by_kind"]
