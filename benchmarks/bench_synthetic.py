"""Speed of the synthetic MHP v2 generator and of the data loader on top of it.

1. Generation: ``--images`` train images at ``--size`` px written to a temporary folder in this
   process (one core), wall and CPU time.
2. Loader throughput: images/s through ``MHPv2Dataset`` + the synthetic train transforms of
   ``conf/data/synthetic.yaml`` + ``collate_parsing`` with one DataLoader worker.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_synthetic.py [--images 1000] [--size 384] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from smp_parsing.data.collate import collate_parsing
from smp_parsing.data.mhp import MHPv2Dataset
from smp_parsing.data.synthetic import SyntheticMHPGenerator
from smp_parsing.utils.compose import compose_config


def synthetic_train_transforms():
    """The train transforms exactly as ``conf/data/synthetic.yaml`` builds them."""
    cfg = compose_config(None, ["+data=synthetic", "+paths.data_dir=/unused"])
    return instantiate(cfg.data.train_transforms)


def main() -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "synthetic"
        generator = SyntheticMHPGenerator(size=args.size)
        wall, cpu = time.perf_counter(), time.process_time()
        generator.generate(root, num_train=args.images, num_val=0, seed=0)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"generation: {args.images} images at {args.size} px in {wall:.1f} s wall, {cpu:.1f} s CPU "
              f"({1000 * cpu / args.images:.1f} ms CPU / image, one process)")  # fmt: skip

        dataset = MHPv2Dataset(
            root, split="train", transforms=synthetic_train_transforms(), load_pose=False
        )
        loader = DataLoader(
            dataset, batch_size=args.batch_size, num_workers=1, collate_fn=collate_parsing
        )
        iterator = iter(loader)
        next(iterator)  # worker start-up is not throughput
        start, count = time.perf_counter(), 0
        for batch in iterator:
            count += batch["images"].shape[0]
        loader_seconds = time.perf_counter() - start
        throughput = count / loader_seconds
        print(
            f"loader: {throughput:.1f} images/s (dataset + train transforms + collate, 1 worker, batch {args.batch_size})"
        )

    figures = {
        "images": args.images,
        "size": args.size,
        "generation_wall_s": wall,
        "generation_cpu_s": cpu,
        "loader_images_per_s": throughput,
        "load_average_1min": os.getloadavg()[0],
    }
    print(
        f"(1-minute load average of the machine during the run: {figures['load_average_1min']:.2f})"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
