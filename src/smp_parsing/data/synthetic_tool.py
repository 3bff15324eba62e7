"""Synthetic data on first use: the generators as a preparation step of the generic data module.

The synthetic sets are real data sets on disk (MHP v2 or CIHP layout, read by the real readers):
what makes them synthetic is only that ``prepare_data`` writes them when they are missing or were
made with another recipe. :class:`GeneratedTree` is that step, handed to
:class:`~smp_parsing.data.datamodule.ParsingDataModule` as its ``prepare`` hook, and
:class:`GeneratedDataModule` is the Hydra target of ``conf/data/synthetic.yaml`` and
``conf/data/synthetic_cihp.yaml``: it takes the generator and its counts (``data.generator``,
``data.num_train`` ...) and passes the rest to the generic data module, which knows nothing about
them. (The ``synthetic`` label space is registered by :mod:`smp_parsing.data.synthetic`.)
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from smp_parsing.data.datamodule import ParsingDataModule
from smp_parsing.data.errors import DataRootError
from smp_parsing.data.synthetic import SyntheticMHPGenerator

log = logging.getLogger(__name__)

# What generated a synthetic tree, stamped into it: a different recipe regenerates the tree.
SYNTHETIC_STAMP = "synthetic.json"


class GeneratedTree:
    """Prepare hook: write a generator's tree into the data folder when missing or stale.

    The recipe (the generator's knobs, the counts and the seed) is stamped into the tree
    (``synthetic.json``): the same recipe reuses the tree, another one regenerates it, and a
    folder without the stamp that is not empty is refused (it is not ours to overwrite).

    Args:
        generator: A :class:`~smp_parsing.data.synthetic.SyntheticMHPGenerator` (or a subclass:
            :class:`~smp_parsing.data.synthetic_cihp.SyntheticCIHPGenerator`).
        generation: The counts and the seed of ``generator.generate`` (``num_train``,
            ``num_val``, ``seed``; see :class:`GeneratedDataModule`).
        workers: Processes used to generate.
    """

    def __init__(
        self, generator: SyntheticMHPGenerator, generation: dict[str, int], workers: int = 1
    ) -> None:
        self.generator = generator
        self.generation = dict(generation)
        self.workers = workers

    def recipe(self) -> dict[str, Any]:
        """What the tree depends on, as stamped on disk (tuples as lists)."""
        recipe = {"generator": dict(vars(self.generator)), **self.generation}
        return json.loads(json.dumps(recipe))

    def __call__(self, data_dir: str | Path) -> None:
        """Generate ``data_dir`` unless it holds a complete tree of the same recipe.

        Raises:
            DataRootError: ``data_dir`` holds files the generator did not write.
        """
        data_dir = Path(data_dir)
        stamp = data_dir / SYNTHETIC_STAMP
        recipe = self.recipe()
        if (
            self.generator.is_complete(data_dir)
            and stamp.is_file()
            and json.loads(stamp.read_text()) == recipe
        ):
            log.info("synthetic data set found in %s", data_dir)
            return
        if stamp.is_file():
            # Our own earlier output with another recipe: stale person files would mix in, so
            # clear what the generator writes (every entry but the stamp; hidden partials stay).
            log.info("synthetic recipe changed, regenerating %s", data_dir)
            for entry in data_dir.iterdir():
                if entry.is_dir() and entry.name != SYNTHETIC_STAMP:
                    shutil.rmtree(entry, ignore_errors=True)
        elif data_dir.exists() and any(data_dir.iterdir()):
            raise DataRootError(
                f"{data_dir} is not empty and was not written by the synthetic generator "
                f"(no {SYNTHETIC_STAMP}); refusing to write into it. Point data.data_dir elsewhere."
            )
        log.info(
            "generating the synthetic set (%s) in %s (%s)",
            type(self.generator).__name__,
            data_dir,
            self.generation,
        )
        # The stamp goes in with the tree (one rename): an interrupted generation leaves no folder
        # that the next run would refuse, it simply generates again.
        self.generator.generate(
            data_dir,
            workers=self.workers,
            extra_files={SYNTHETIC_STAMP: json.dumps(recipe, indent=1)},
            **self.generation,
        )


class GeneratedDataModule(ParsingDataModule):
    """The generic data module with a :class:`GeneratedTree` as its ``prepare`` hook (Hydra
    target of the synthetic configs; a class, as a checkpoint's stored data config must name).

    Args:
        generator: What draws the images (``data.generator``).
        num_train: Train images to generate (``data.num_train``).
        num_val: Val images to generate.
        seed: Generator seed.
        generate_workers: Processes used to generate.
        **datamodule: The :class:`~smp_parsing.data.datamodule.ParsingDataModule` arguments.
    """

    def __init__(
        self,
        generator: SyntheticMHPGenerator,
        num_train: int = 1000,
        num_val: int = 200,
        seed: int = 0,
        generate_workers: int = 1,
        **datamodule: Any,
    ) -> None:
        generation = {"num_train": num_train, "num_val": num_val, "seed": seed}
        tree = GeneratedTree(generator, generation, generate_workers)
        super().__init__(prepare=tree, **datamodule)
