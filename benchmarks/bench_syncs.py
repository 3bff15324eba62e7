"""Host-device synchronisations of one training step and of one image's decode (issue 13).

Counted with :class:`smp_parsing.utils.sync_counter.SyncCounter` (the operations that sync on
CUDA, seen at the aten dispatch level and for host copies at the Python level: ``.item()`` /
``int()`` / ``bool()``, ``.tolist()`` / ``.cpu()``, data-sized outputs such as ``nonzero``,
boolean-mask indexing, Python numbers or data copied to the device), so the figures are the
same on the CPU and on a GPU, whatever the speed; on the H200 the decode's count equalled
``torch.cuda.set_sync_debug_mode("warn")``'s (14) and the step's CUDA figure (5) is the CPU
count less the CPU-only class-range read (2). The network is the narrow
ResNet-18 SMP of the smoke benchmarks at the 1x grids (the count depends on the code path,
not on the widths); the training batch holds ``--batch`` images of ``--size`` px with
``--persons`` blocky persons each (the last image empty); the decode runs on the oracle
outputs of one image (every person and part found, the work of a trained model) with
each part grouping rule.

Counts by stage: ``forward``, ``loss`` (``net.loss``: targets + losses), ``backward``,
``optimizer`` (SGD step), ``train_step`` (their sum) and ``decode_<grouping>``; with
``--sites`` also where each sync is (``file:line``). Lightning's own per-step work (loggers,
callbacks such as the non-finite guard) is not part of these figures.

Usage::

    python benchmarks/bench_syncs.py [--size 256] [--batch 2] [--persons 4] [--sites] [--json F]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import (
    TINY_OVERRIDES,
    bench_parser,
    build_smp,
    metas_for,
    oracle_outputs,
    person_maps,
    write_figures,
)
from smp_parsing.models.decode import GROUPINGS, decode_parsing
from smp_parsing.utils.sync_counter import SyncCounter


def count_syncs(
    *, size: int = 256, batch: int = 2, persons: int = 4, sites: bool = False
) -> dict[str, Any]:
    """Syncs per stage of one training step and of one image's decode.

    Args:
        size: square image side in pixels (a multiple of 32).
        batch: training images (the last one has no person).
        persons: persons per image.
        sites: also return ``file:line`` of every counted call.

    Returns:
        ``{stage: {"total": n, "by_kind": {...}, "sites": {...}}}`` for ``forward``,
        ``loss``, ``backward``, ``optimizer``, ``train_step`` and ``decode_<grouping>``,
        plus ``decode_persons`` (persons the decode found).
    """
    net = build_smp("r18", overrides=TINY_OVERRIDES).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    parsing = [person_maps(persons, size, size, seed=i) for i in range(batch - 1)]
    parsing.append(torch.zeros(0, size, size, dtype=torch.uint8))
    images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    report: dict[str, Any] = {}

    def record(stage: str, counter: SyncCounter) -> None:
        entry: dict[str, Any] = {"total": counter.total, "by_kind": dict(counter.counts)}
        if sites:
            entry["sites"] = {k: dict(v) for k, v in counter.sites.items()}
        report[stage] = entry

    with SyncCounter(record_sites=sites) as counter:
        outputs = net(images)
    record("forward", counter)
    with SyncCounter(record_sites=sites) as counter:
        losses = net.loss(outputs, parsing)
    record("loss", counter)
    with SyncCounter(record_sites=sites) as counter:
        losses["loss"].backward()
    record("backward", counter)
    with SyncCounter(record_sites=sites) as counter:
        optimizer.step()
        optimizer.zero_grad()
    record("optimizer", counter)
    stages = ("forward", "loss", "backward", "optimizer")
    report["train_step"] = {"total": sum(report[s]["total"] for s in stages)}

    net.eval()
    image = [person_maps(persons, size, size, seed=batch)]
    with torch.no_grad():
        oracle = oracle_outputs(image, net)
        for grouping in GROUPINGS:
            with SyncCounter(record_sites=sites) as counter:
                preds = decode_parsing(
                    oracle, metas_for(size, size), strides=net.strides, grouping=grouping
                )
            record(f"decode_{grouping}", counter)
            report[f"decode_{grouping}"]["persons"] = len(preds[0]["scores"])
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = bench_parser(__doc__)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--persons", type=int, default=4)
    parser.add_argument("--sites", action="store_true", help="also list where each sync is")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    report = count_syncs(size=args.size, batch=args.batch, persons=args.persons, sites=args.sites)
    print("| stage | syncs | by kind |\n|---|---|---|")
    for stage, entry in report.items():
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(entry.get("by_kind", {}).items()))
        print(f"| {stage} | {entry['total']} | {kinds} |")
        for kind, where in entry.get("sites", {}).items():
            print(f"|   | {kind} | {', '.join(f'{s} x{n}' for s, n in where.items())} |")
    write_figures(args.json, report)
    return report


if __name__ == "__main__":
    main()
