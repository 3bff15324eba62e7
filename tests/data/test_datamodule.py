"""ParsingDataModule built from conf/data/*.yaml with Hydra, on tiny data sets."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from smp_parsing.data.errors import DataRootError
from smp_parsing.utils.compose import compose_config

from .builders import random_image, write_densepose_json, write_mhp_tree

TINY_SYNTHETIC = [
    "data.num_train=3",
    "data.num_val=2",
    "data.generator.size=64",
    "data.batch_size=2",
    "data.eval_batch_size=2",
    "data.train_transforms.resize.short_sides=[48,64]",
    "data.train_transforms.resize.max_long_side=96",
    "data.test_transforms.resize.short_sides=[64]",
    "data.test_transforms.resize.max_long_side=96",
]


def data_config(name: str, data_dir: Path, overrides: list[str] = ()):
    """Compose only the data group (plus paths.data_dir), as the training config would."""
    return compose_config(None, [f"+data={name}", f"+paths.data_dir={data_dir}", *overrides])


@pytest.mark.parametrize(
    ("name", "num_classes"), [("synthetic", 59), ("mhp", 59), ("densepose", 15)]
)
def test_configs_carry_the_keys_the_model_reads(tmp_path, name, num_classes):
    cfg = data_config(name, tmp_path)
    assert cfg.data.num_classes == num_classes and cfg.data.dataset_name == name
    assert str(cfg.data.data_dir).startswith(str(tmp_path))
    assert cfg.data.train_transforms.flip.dataset == name


def test_synthetic_generated_once_and_loaders(tmp_path):
    cfg = data_config("synthetic", tmp_path, TINY_SYNTHETIC)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    root = Path(cfg.data.data_dir)
    listing = sorted(p.name for p in (root / "train/images").iterdir())
    assert listing == ["1.jpg", "2.jpg", "3.jpg"]
    stamp_time = (root / "synthetic.json").stat().st_mtime_ns
    instantiate(cfg.data).prepare_data()  # same recipe: nothing rewritten
    assert (root / "synthetic.json").stat().st_mtime_ns == stamp_time

    datamodule.setup("fit")
    # 3 landscape images, batches of 2 of one aspect group: a batch of 2 and one of 1, in an
    # order shuffled by the sampler (taking the first batch made this test flaky)
    batches = list(datamodule.train_dataloader())
    assert sorted(len(b["image_ids"]) for b in batches) == [1, 2]
    batch = max(batches, key=lambda b: len(b["image_ids"]))
    images, parsing = batch["images"], batch["parsing"]
    assert images.shape[:2] == (2, 3) and images.dtype == torch.float32
    assert images.shape[2] % 32 == 0 and images.shape[3] % 32 == 0
    assert all(p.dtype == torch.uint8 and p.shape[1:] == images.shape[2:] for p in parsing)
    val = next(iter(datamodule.val_dataloader()))
    for maps, meta in zip(val["parsing"], val["metas"]):
        assert tuple(maps.shape[1:]) == meta["ori_size"] and meta["flipped"] is False
        assert meta["dataset"] == "synthetic"


def test_synthetic_recipe_change_regenerates_and_limits(tmp_path):
    cfg = data_config("synthetic", tmp_path, TINY_SYNTHETIC)
    instantiate(cfg.data).prepare_data()
    cfg = data_config(
        "synthetic",
        tmp_path,
        [*TINY_SYNTHETIC, "data.num_train=2", "data.generator.max_persons=1", "data.limit_val=1"],
    )
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    root = Path(cfg.data.data_dir)
    assert sorted(p.name for p in (root / "train/images").iterdir()) == ["1.jpg", "2.jpg"]
    assert all(
        name.split("_")[1] == "01"
        for name in (p.name for p in (root / "train/parsing_annos").iterdir())
    )
    datamodule.setup("validate")
    assert len(datamodule.datasets["val"]) == 1


def test_synthetic_refuses_foreign_folder(tmp_path):
    cfg = data_config("synthetic", tmp_path, TINY_SYNTHETIC)
    root = Path(cfg.data.data_dir)
    root.mkdir(parents=True)
    (root / "precious.txt").write_text("not ours")
    with pytest.raises(DataRootError, match="refusing"):
        instantiate(cfg.data).prepare_data()


def test_missing_real_roots_explain_layout(tmp_path):
    for name, expected in (("mhp", "parsing_annos"), ("densepose", "dp_masks")):
        datamodule = instantiate(data_config(name, tmp_path).data)
        with pytest.raises(DataRootError, match="synthetic") as info:
            datamodule.prepare_data()
        assert expected in str(info.value)


def test_mhp_and_densepose_trees_load(tmp_path):
    parsing = np.zeros((2, 40, 48), np.uint8)
    parsing[0, 5:20, 5:15], parsing[1, 10:30, 20:40] = 5, 24
    for split in ("train", "val"):
        write_mhp_tree(
            tmp_path / "LV-MHP-v2",
            [{"image_id": "1", "image": random_image(40, 48), "parsing": parsing}],
            split,
        )
    cfg = data_config(
        "mhp",
        tmp_path,
        ["data.num_workers=0", "data.persistent_workers=false", "data.pin_memory=false"],
    )
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    batch = next(iter(datamodule.val_dataloader()))
    assert torch.equal(batch["parsing"][0], torch.from_numpy(parsing))

    frame = np.zeros((256, 256), np.uint8)
    frame[:, :128] = 1
    sample = {
        "id": 1,
        "file_name": "1.jpg",
        "image": random_image(40, 48),
        "persons": [{"bbox": [2, 3, 20, 30], "parts_256": frame}],
    }
    for ann, folder in (("train", "train2014"), ("minival", "val2014")):
        write_densepose_json(
            tmp_path / f"densepose_coco/annotations/densepose_coco_2014_{ann}.json",
            tmp_path / "densepose_coco" / folder,
            [sample],
        )
    cfg = data_config(
        "densepose",
        tmp_path,
        ["data.num_workers=0", "data.persistent_workers=false", "data.pin_memory=false"],
    )
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["images"].shape[0] == 1 and batch["parsing"][0].max() == 1
    # the train sampler's aspect groups: sizes from the json, no image decoded
    assert datamodule.datasets["train"].read_image_sizes().tolist() == [[40, 48]]
    assert datamodule.datasets["train"].aspect_groups().tolist() == [0]  # landscape


def test_num_classes_mismatch_is_a_config_error(tmp_path):
    with pytest.raises(Exception, match="num_classes=15"):  # hydra wraps the ValueError
        instantiate(data_config("synthetic", tmp_path, ["data.num_classes=15"]).data)


def test_synthetic_yaml_states_the_generator_defaults(tmp_path):
    """conf/data/synthetic.yaml lists every knob; its values are the class defaults (no drift)."""
    from smp_parsing.data.synthetic import SyntheticMHPGenerator

    from_yaml = instantiate(data_config("synthetic", tmp_path).data.generator)
    assert vars(from_yaml) == vars(SyntheticMHPGenerator())
    from smp_parsing.data.synthetic_cihp import SyntheticCIHPGenerator

    from_yaml = instantiate(data_config("synthetic_cihp", tmp_path).data.generator)
    assert vars(from_yaml) == vars(SyntheticCIHPGenerator(layout="coco", write_pose=False))


def test_skip_policy_leaves_bad_samples_out_of_batches(tmp_path):
    parsing = np.zeros((1, 32, 32), np.uint8)
    parsing[0, 4:20, 4:20] = 12
    samples = [
        {"image_id": str(i), "image": random_image(32, 32, i), "parsing": parsing} for i in range(3)
    ]
    for split in ("train", "val"):
        write_mhp_tree(tmp_path / "LV-MHP-v2", samples, split)
    (tmp_path / "LV-MHP-v2/val/images/1.jpg").write_bytes(b"\xff\xd8 truncated")
    overrides = [
        "data.num_workers=0",
        "data.persistent_workers=false",
        "data.pin_memory=false",
        "data.eval_batch_size=3",
    ]
    strict = instantiate(data_config("mhp", tmp_path, overrides).data)
    with pytest.raises(Exception, match=r"1\.jpg: cannot read image"):
        next(iter(strict.val_dataloader()))
    lenient = instantiate(
        data_config("mhp", tmp_path, [*overrides, "data.on_bad_sample=skip"]).data
    )
    batch = next(iter(lenient.val_dataloader()))
    assert batch["image_ids"] == ["0", "2"] and batch["images"].shape[0] == 2
    assert lenient.datasets["val"].tracker.num_skipped == 1


def keyed_module(tmp_path, *overrides: str):
    """The tiny synthetic set (resize jitter 48/64, flip p=0.5) with augmentation seed 7."""
    cfg = data_config(
        "synthetic",
        tmp_path,
        [*TINY_SYNTHETIC, "data.num_train=6", "+data.train_transforms.seed=7", *overrides],
    )
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def epoch_samples(loader, epoch: int) -> dict[str, tuple]:
    """image id -> (image, parsing, meta) of one pass over ``loader`` keyed as ``epoch``."""
    loader.sampler.set_epoch(epoch)  # what Lightning's fit loop does at each epoch start
    out = {}
    for batch in loader:
        for image_id, image, parsing, meta in zip(
            batch["image_ids"], batch["images"], batch["parsing"], batch["metas"]
        ):
            out[image_id] = (image, parsing, meta)
    return out


def assert_same_samples(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for image_id, (image, parsing, meta) in a.items():
        assert meta == b[image_id][2], image_id
        # batches are padded to their largest image: compare the padded sample size
        h, w = meta["pad_size"]
        assert torch.equal(image[:, :h, :w], b[image_id][0][:, :h, :w]), image_id
        assert torch.equal(parsing[:, :h, :w], b[image_id][1][:, :h, :w]), image_id


def test_train_augmentation_is_reproduced_by_seed_epoch_and_index(tmp_path):
    first = keyed_module(tmp_path)
    second = keyed_module(tmp_path)
    a = epoch_samples(first.train_dataloader(), 1)
    b = epoch_samples(second.train_dataloader(), 1)
    assert_same_samples(a, b)

    def signature(samples):
        return [(m["img_size"], m["flipped"]) for _, (_, _, m) in sorted(samples.items())]

    loader = first.train_dataloader()
    epochs = [signature(epoch_samples(loader, epoch)) for epoch in range(4)]
    assert epochs[1] == signature(a)
    assert len({tuple(s) for s in epochs}) > 1  # the epochs draw different augmentations
    assert {flipped for s in epochs for _, flipped in s} == {True, False}


def test_train_augmentation_is_the_same_with_and_without_workers(tmp_path):
    reference = keyed_module(tmp_path).train_dataloader()
    expected = {epoch: epoch_samples(reference, epoch) for epoch in (0, 1)}
    workers = keyed_module(
        tmp_path, "data.num_workers=1", "data.persistent_workers=true"
    ).train_dataloader()
    assert workers.persistent_workers
    # one persistent worker process serves both epochs: the epoch reaches it through the keys
    for epoch in (0, 1):
        assert_same_samples(epoch_samples(workers, epoch), expected[epoch])


def test_train_sampler_starts_at_the_trainer_epoch(tmp_path):
    from types import SimpleNamespace

    from torch.utils.data import DistributedSampler

    datamodule = keyed_module(tmp_path)
    datamodule.trainer = SimpleNamespace(current_epoch=2, distributed_sampler_kwargs=None)
    batches = list(datamodule.train_dataloader().sampler)
    assert {epoch for batch in batches for _, epoch in batch} == {2}
    shards = []
    for rank in range(2):
        datamodule.trainer = SimpleNamespace(
            current_epoch=3, distributed_sampler_kwargs={"num_replicas": 2, "rank": rank}
        )
        sampler = datamodule.train_dataloader().sampler
        assert isinstance(sampler, DistributedSampler)  # Lightning keeps it under DDP
        shards.append([key for batch in sampler for key in batch])
    assert {epoch for shard in shards for _, epoch in shard} == {3}
    assert sorted(index for shard in shards for index, _ in shard) == list(range(6))


def orientation(meta) -> str:
    height, width = meta["ori_size"]
    return "landscape" if width > height else "portrait"


def test_train_batches_hold_one_orientation(tmp_path):
    datamodule = keyed_module(tmp_path, "data.num_train=12", "data.batch_size=3")
    dataset = datamodule.datasets["train"]
    # the groups come from the headers; they agree with the decoded images
    sizes = [dataset.load_sample(i)["image"].shape[:2] for i in range(len(dataset))]
    groups = dataset.aspect_groups()
    assert groups.tolist() == [int(w <= h) for h, w in sizes]
    assert 0 < groups.sum() < len(groups)  # both orientations present: the test means something
    for epoch in range(3):
        loader = datamodule.train_dataloader()
        loader.sampler.set_epoch(epoch)
        batches = list(loader)
        assert sorted(i for b in batches for i in b["image_ids"]) == sorted(dataset.image_ids)
        assert all(len({orientation(m) for m in b["metas"]}) == 1 for b in batches)
    off = keyed_module(tmp_path, "data.num_train=12", "data.batch_size=3",
                       "data.group_by_aspect_ratio=false")  # fmt: skip
    mixed = [len({orientation(m) for m in b["metas"]}) for b in off.train_dataloader()]
    assert max(mixed) == 2  # without grouping some batch mixes them (seed 7)


def test_train_batches_are_the_same_with_workers(tmp_path):
    def ids(*overrides):
        loader = keyed_module(tmp_path, "data.num_train=12", "data.batch_size=3",
                              *overrides).train_dataloader()  # fmt: skip
        loader.sampler.set_epoch(1)
        return [batch["image_ids"] for batch in loader]

    assert ids() == ids("data.num_workers=2")


def test_eval_loaders_split_the_set_over_ranks_without_repeats(tmp_path):
    from types import SimpleNamespace

    datamodule = keyed_module(tmp_path, "data.num_val=7", "data.eval_batch_size=2")
    datamodule.setup("validate")
    assert datamodule.val_dataloader().sampler.__class__.__name__ == "SequentialSampler"
    seen = []
    for rank in range(3):
        datamodule.trainer = SimpleNamespace(
            current_epoch=0, distributed_sampler_kwargs={"num_replicas": 3, "rank": rank}
        )
        seen += [i for b in datamodule.val_dataloader() for i in b["image_ids"]]
    assert sorted(seen) == sorted(datamodule.datasets["val"].image_ids) and len(seen) == 7


class BatchRecorder(pl.LightningModule):
    """Records the image ids of every train batch; raises at ``crash_at`` = (epoch, batch)."""

    def __init__(self, crash_at: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.crash_at = crash_at
        self.seen: list[tuple[int, tuple[str, ...]]] = []

    def training_step(self, batch, batch_idx):
        if (self.current_epoch, batch_idx) == self.crash_at:
            raise RuntimeError("simulated crash")
        self.seen.append((self.current_epoch, tuple(batch["image_ids"])))
        return (self.weight * batch["images"].mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_resume_mid_epoch_continues_the_same_batches(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    def fit(run: str, module: BatchRecorder, ckpt_path=None) -> list:
        trainer = pl.Trainer(
            accelerator="cpu", max_epochs=2, logger=False, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path / run,
            callbacks=[ModelCheckpoint(tmp_path / run, every_n_train_steps=1, save_last=True)],
        )  # fmt: skip
        datamodule = keyed_module(tmp_path, "data.num_train=12", "data.batch_size=3")
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        return module.seen

    straight = fit("straight", BatchRecorder())
    assert len(straight) >= 8 and straight[0][1] != straight[len(straight) // 2][1]
    crashed = BatchRecorder(crash_at=(1, 2))
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit("crashed", crashed)
    resumed = fit("resumed", BatchRecorder(), ckpt_path=tmp_path / "crashed" / "last.ckpt")
    assert resumed[0][0] == 1  # the interrupted epoch, from its third batch
    assert crashed.seen + resumed == straight


def test_interrupted_synthetic_generation_is_redone_by_the_next_run(tmp_path, monkeypatch):
    from smp_parsing.data.synthetic import SyntheticMHPGenerator

    cfg = data_config("synthetic", tmp_path, TINY_SYNTHETIC)
    write_sample = SyntheticMHPGenerator.write_sample
    calls = []

    def interrupted(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt("job killed mid-generation")
        return write_sample(self, *args, **kwargs)

    monkeypatch.setattr(SyntheticMHPGenerator, "write_sample", interrupted)
    with pytest.raises(KeyboardInterrupt):
        instantiate(cfg.data).prepare_data()
    monkeypatch.undo()
    instantiate(cfg.data).prepare_data()  # was: "not written by the synthetic generator; refusing"
    root = Path(cfg.data.data_dir)
    assert sorted(p.name for p in (root / "train/images").iterdir()) == ["1.jpg", "2.jpg", "3.jpg"]
    assert (root / "synthetic.json").is_file()


def test_synthetic_cihp_generated_on_first_use_in_either_layout(tmp_path):
    tiny = [
        "data.num_train=2",
        "data.num_val=1",
        "data.generator.size=64",
        "data.generator.max_persons=2",
        "data.train_transforms.resize.short_sides=[64]",
        "data.test_transforms.resize.short_sides=[64]",
    ]
    cfg = data_config("synthetic_cihp", tmp_path, tiny)
    assert cfg.data.dataset_name == "cihp" and cfg.data.num_classes == 20
    assert cfg.data.val_dataset.layout == "coco"
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    root = Path(cfg.data.data_dir)
    assert sorted(p.name for p in (root / "train_img").iterdir()) == ["0000001.jpg", "0000002.jpg"]
    stamp_time = (root / "synthetic.json").stat().st_mtime_ns
    instantiate(cfg.data).prepare_data()  # same recipe: nothing rewritten
    assert (root / "synthetic.json").stat().st_mtime_ns == stamp_time
    datamodule.setup("fit")
    batch = next(iter(datamodule.val_dataloader()))
    assert batch["metas"][0]["dataset"] == "cihp" and int(batch["parsing"][0].max()) < 20

    official = instantiate(
        data_config("synthetic_cihp", tmp_path, [*tiny, "data.generator.layout=official"]).data
    )
    official.prepare_data()  # another recipe: the coco tree is replaced by the official one
    assert (root / "Training/train_id.txt").read_text().split() == ["0000001", "0000002"]
    assert not (root / "train_img").exists() and not (root / "annotations").exists()
    official.setup("validate")
    assert len(official.datasets["val"]) == 1


def test_synthetic_checkpoint_config_from_before_the_prepare_hook_still_builds(tmp_path):
    """A synthetic run stored ParsingDataModule + the generator's arguments (before issue 15)."""
    from omegaconf import OmegaConf

    from smp_parsing.data.synthetic_tool import GeneratedDataModule, GeneratedTree
    from smp_parsing.utils.checkpoint import INFERENCE_KEY, stored_data_config

    data = OmegaConf.to_container(
        data_config("synthetic", tmp_path, TINY_SYNTHETIC).data, resolve=True
    )
    data["_target_"] = "smp_parsing.data.datamodule.ParsingDataModule"
    ckpt = {"state_dict": {}, INFERENCE_KEY: {"data_config": data}}
    datamodule = instantiate(stored_data_config(ckpt, "old.ckpt"))
    assert isinstance(datamodule, GeneratedDataModule)
    assert isinstance(datamodule.prepare_hook, GeneratedTree)
    assert datamodule.prepare_hook.generation == {"num_train": 3, "num_val": 2, "seed": 0}
