"""Input-pipeline throughput against the training step rate (issue 7.4).

Writes a small synthetic MHP v2 set (:class:`~smp_parsing.data.synthetic.SyntheticMHPGenerator`),
reads it with the real reader (:class:`~smp_parsing.data.mhp.MHPv2Dataset`), the train
transforms of ``conf/data/transforms/train.yaml`` (resize fixed to the benchmark size,
class-swapping flip, normalise, pad) and :func:`~smp_parsing.data.collate.collate_parsing`,
through a ``DataLoader`` with ``workers`` worker processes. Images per second are counted
from the first batch on (worker start-up excluded), over ``epochs`` passes. The runner
divides this by the training rate of :mod:`benchmarks.bench_training`: a ratio above 1
means one loader worker keeps up with the training step.

Usage::

    python -m benchmarks.bench_pipeline [--images 32] [--size 512] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from benchmarks.common import CONF_DIR, set_threads


def train_transforms(size: int, dataset: str = "synthetic") -> Any:
    """The configured train pipeline with the resize pinned to short side ``size``."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONF_DIR / "data" / "transforms" / "train.yaml")
    cfg.dataset = dataset
    if "resize" in cfg and cfg.resize is not None:
        cfg.resize.short_sides = [size]
        cfg.resize.max_long_side = size
    if "flip" in cfg and cfg.flip is not None:
        cfg.flip.dataset = dataset
    return instantiate(cfg)


def run(
    *,
    images: int = 32,
    size: int = 512,
    batch: int = 2,
    workers: int = 1,
    epochs: int = 2,
    root: Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Generate (or reuse) the synthetic set and time the loader.

    Args:
        images: training images generated and read per epoch.
        size: long side of the generated images and short side of the train resize.
        batch: loader batch size.
        workers: ``DataLoader`` worker processes (issue 7.4: 1).
        epochs: passes over the set (the first batch of the first pass is not timed).
        root: where the set goes; a temporary folder when ``None``.
        seed: generator seed.

    Returns:
        ``images_per_s``, ``generate_s`` and the settings.
    """
    from smp_parsing.data.collate import collate_parsing
    from smp_parsing.data.mhp import MHPv2Dataset
    from smp_parsing.data.synthetic import SyntheticMHPGenerator

    with tempfile.TemporaryDirectory(prefix="smp_bench_pipeline_") as tmp:
        data_root = Path(root) if root is not None else Path(tmp) / "synthetic_mhp"
        start = time.perf_counter()
        generator = SyntheticMHPGenerator(size=size, write_pose=False)
        generator.generate(data_root, images, 1, seed=seed, workers=1)
        generate_s = time.perf_counter() - start
        dataset = MHPv2Dataset(
            data_root, split="train", transforms=train_transforms(size), load_pose=False
        )
        loader = DataLoader(
            dataset,
            batch_size=batch,
            shuffle=True,
            num_workers=workers,
            collate_fn=collate_parsing,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(seed),
        )
        counted = 0
        start = None
        shapes = set()
        for _ in range(epochs):
            for data in loader:
                if start is None:  # worker start-up and first batch excluded
                    start = time.perf_counter()
                    continue
                counted += data["images"].shape[0]
                shapes.add(tuple(data["images"].shape[-2:]))
        elapsed = time.perf_counter() - start if start is not None else float("nan")
    return {
        "images": images,
        "size": size,
        "batch": batch,
        "workers": workers,
        "epochs": epochs,
        "timed_images": counted,
        "images_per_s": counted / elapsed if counted else float("nan"),
        "ms_per_image": 1e3 * elapsed / counted if counted else float("nan"),
        "generate_s": generate_s,
        "batch_shapes": sorted(shapes),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    result = run(images=args.images, size=args.size, batch=args.batch, workers=args.workers,
                 epochs=args.epochs)  # fmt: skip
    print(json.dumps(result, indent=1))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
