"""The "add a data set" walk-through (DEVELOPERS.md), followed step by step on a toy data set.

1. A reader: a :class:`ParsingDataset` subclass that reads pixels through ``data/image_files``,
   says what a split needs on disk (``required_paths``) and which layout it expects
   (``layout_help``).
2. Its label space registered next to it: ``@register_dataset(name, classes, flip_pairs)``.
3. A ``conf/data/<name>.yaml`` (here written to a folder on Hydra's search path): the generic
   ``ParsingDataModule`` with the reader as ``_partial_`` data set factories.
4. ``python -m smp_parsing.train data=<name>``: the model's ``num_classes``, the flip class swap,
   the root check and the visualiser's class names come from the registration.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from smp_parsing.data.base import ParsingDataset
from smp_parsing.data.errors import BadSampleTracker, DataRootError
from smp_parsing.data.image_files import read_image, read_label_png
from smp_parsing.data.registry import get_dataset_spec, register_dataset
from smp_parsing.metadata import get_dataset_meta

log = logging.getLogger(__name__)

# Step 2: the label space, next to the reader. Left/right are the person's own sides.
TOY_CLASSES = ("background", "head", "left-arm", "right-arm", "body")
TOY_FLIP_PAIRS = ((2, 3),)

TOY_LAYOUT_HELP = """expected toy layout:
  <root>/<split>.txt              one image id per line
  <root>/<split>/<id>.png         the RGB image
  <root>/<split>/<id>_<k>.png     one grey PNG of class ids per person, k = 1..N"""


# Step 1: the reader.
@register_dataset("toy", TOY_CLASSES, TOY_FLIP_PAIRS)
class ToyDataset(ParsingDataset):
    """The toy layout above, one item per image (the data contract of DEVELOPERS.md)."""

    dataset_name = "toy"
    layout_help = TOY_LAYOUT_HELP

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transforms: Any = None,
        on_bad_sample: str = "error",
        limit: int | None = None,
    ) -> None:
        self.root, self.split, self.transforms = Path(root), split, transforms
        self.tracker = BadSampleTracker(on_bad_sample, log)
        self.ids = (self.root / f"{split}.txt").read_text().split()[:limit]

    @classmethod
    def required_paths(cls, split: str, root: str | Path = ".", **_: Any) -> list[Path]:
        return [Path(root) / f"{split}.txt", Path(root) / split]

    def __len__(self) -> int:
        return len(self.ids)

    def load_sample(self, index: int) -> dict[str, Any]:
        image_id, folder = self.ids[index], self.root / self.split
        image = read_image(folder / f"{image_id}.png")
        persons = sorted(folder.glob(f"{image_id}_*.png"))
        maps = [read_label_png(path, image.shape[:2]) for path in persons]
        parsing = np.stack(maps) if maps else np.zeros((0, *image.shape[:2]), np.uint8)
        return {"image": image, "parsing": parsing, "image_id": image_id}


# Step 3: conf/data/toy.yaml.
TOY_YAML = """
defaults:
  - transforms@train_transforms: train
  - transforms@test_transforms: test
  - _self_

_target_: smp_parsing.data.datamodule.ParsingDataModule
dataset_name: toy
num_classes: 5
data_dir: ${paths.data_dir}/toy
on_bad_sample: error

train_dataset:
  _target_: MODULE.ToyDataset
  _partial_: true
  root: ${data.data_dir}
  split: train
  on_bad_sample: ${data.on_bad_sample}
val_dataset:
  _target_: MODULE.ToyDataset
  _partial_: true
  root: ${data.data_dir}
  split: val
  on_bad_sample: ${data.on_bad_sample}
test_dataset: null

batch_size: 2
eval_batch_size: 1
num_workers: 0
pin_memory: false
persistent_workers: false
"""


def write_toy_tree(root: Path, split: str, count: int) -> None:
    """``count`` 64 x 80 images with two persons each (head, arms, body rectangles)."""
    folder = root / split
    folder.mkdir(parents=True)
    rng = np.random.default_rng(len(split))
    for index in range(count):
        image = rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"{index}.png")
        for k, x in enumerate((8, 44), start=1):
            person = np.zeros((64, 80), np.uint8)
            person[20:56, x + 6 : x + 22] = 4
            person[8:20, x + 8 : x + 20] = 1
            person[22:44, x + 22 : x + 28] = 2  # the person's left arm: on the image right
            person[22:44, x : x + 6] = 3
            Image.fromarray(person).save(folder / f"{index}_{k}.png")
    (root / f"{split}.txt").write_text("".join(f"{i}\n" for i in range(count)))


@pytest.fixture
def toy_conf(tmp_path) -> Path:
    conf = tmp_path / "conf"
    (conf / "data").mkdir(parents=True)
    (conf / "data" / "toy.yaml").write_text(TOY_YAML.replace("MODULE", __name__))
    return conf


def test_toy_dataset_registered_and_trained_two_steps(tmp_path, toy_conf):
    from conftest import (
        TINY_DATA_COMMON,
        TINY_NET_OVERRIDES,
        TINY_TRAINER_OVERRIDES,
        compose_config,
    )
    from smp_parsing.train import train

    assert get_dataset_meta("toy").num_classes == 5
    assert get_dataset_meta("toy").flip_lut().tolist() == [0, 1, 3, 2, 4]
    assert get_dataset_spec("toy").reader is ToyDataset
    root = tmp_path / "toy"
    overrides = [
        f"hydra.searchpath=[file://{toy_conf}]",
        "data=toy",
        f"data.data_dir={root}",
        "backbone=r18",
        *TINY_NET_OVERRIDES,
        *TINY_DATA_COMMON,
        *TINY_TRAINER_OVERRIDES,
    ]
    cfg = compose_config("train", overrides, tmp_path / "run")
    assert cfg.model.net.num_classes == 5  # through ${data.num_classes}

    # The registry's root check: nothing written yet, the error names the files and the layout.
    with pytest.raises(DataRootError, match=r"toy train data not found: missing .*train\.txt"):
        instantiate(cfg.data).prepare_data()
    write_toy_tree(root, "train", 4)
    write_toy_tree(root, "val", 2)

    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    sample = datamodule.datasets["train"][0]
    assert sample["parsing"].shape[0] == 2 and sample["meta"]["dataset"] == "toy"
    # the flip swaps the toy's arms: the left arm (2) stays on the person's left side
    flip = instantiate(cfg.data.train_transforms.flip, p=1.0)
    flipped = flip.apply_to_mask(datamodule.datasets["train"].load_sample(0)["parsing"][0])
    assert flipped[30, 80 - 1 - 30] == 3 and flipped[30, 80 - 1 - 10] == 2

    metric_dict, objects = train(cfg)
    assert objects["trainer"].global_step == 2
    assert objects["model"].net.num_classes == 5
    assert torch.isfinite(torch.as_tensor(metric_dict["train/loss"]))
    assert "val/APp50" in metric_dict and "val/mIoU" in metric_dict
