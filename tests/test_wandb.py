"""W&B: offline without credentials, always finished, and a real offline run with our keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from smp_parsing.utils import wandb_env


@pytest.fixture
def clean_env(monkeypatch, tmp_path: Path):
    for var in ("WANDB_MODE", "WANDB_API_KEY", "NETRC", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_offline_when_no_credentials(clean_env, monkeypatch) -> None:
    assert wandb_env.ensure_wandb_mode() == "offline"
    import os

    assert os.environ["WANDB_MODE"] == "offline"


def test_key_or_netrc_keeps_online(clean_env, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_env.ensure_wandb_mode() == "online"
    monkeypatch.delenv("WANDB_API_KEY")
    netrc = clean_env / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password secret\n")
    netrc.chmod(0o600)
    assert wandb_env.has_wandb_credentials()
    netrc.write_text("machine example.com\n  login user\n  password secret\n")
    assert not wandb_env.has_wandb_credentials()


def test_explicit_mode_is_respected(clean_env, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_env.ensure_wandb_mode() == "disabled"


def test_task_wrapper_finishes_wandb_on_failure(clean_env, monkeypatch) -> None:
    """A crashing task still closes its W&B run (marked failed) so the next sweep job is clean."""
    import wandb
    from omegaconf import OmegaConf

    from smp_parsing.utils.task_wrapper import task_wrapper

    monkeypatch.setenv("WANDB_MODE", "offline")

    @task_wrapper
    def crashing_task(cfg):
        wandb.init(project="t", dir=str(clean_env))
        assert wandb.run is not None
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        crashing_task(OmegaConf.create({"paths": {"output_dir": str(clean_env)}}))
    assert wandb.run is None


# --------------------------------------------------------------------------------------------
# A real (offline) run: the tiny training run of the `trained_run` fixture logs to every logger.
# --------------------------------------------------------------------------------------------
def read_wandb_records(path: Path):
    """Yield the protobuf ``Record``s of an offline ``run-<id>.wandb`` file.

    The file is a LevelDB-style log: a 7-byte header (``:W&B``, magic, version), then 32 KiB
    blocks of chunks, each ``crc32 (4) | length (2) | type (1) | payload``; type 1 is a whole
    record, 2/3/4 the first/middle/last piece of one split over blocks.
    """
    import struct

    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B run file"
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (kind == 0 and length == 0):  # block trailer / padding
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def test_offline_wandb_run_holds_the_logged_keys_and_images(trained_run) -> None:
    runs = list((trained_run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, runs
    history_keys, kinds, exit_codes, tags = set(), set(), [], []
    for record in read_wandb_records(runs[0]):
        kind = record.WhichOneof("record_type")
        kinds.add(kind)
        if kind == "history":
            history_keys |= {item.key or "/".join(item.nested_key) for item in record.history.item}
        elif kind == "exit":
            exit_codes.append(record.exit.exit_code)
        elif kind == "run":
            tags = list(record.run.tags)
    expected = {
        "train/loss_step", "train/loss_center_step", "train/loss_part_step",
        "train/loss_mask_step", "train/loss_offset_step", "train/loss_epoch", "val/APp50",
        "val/APpvol", "val/PCP50", "val/mIoU", "val/APpvol_best", "val/fps",
    }  # fmt: skip
    assert expected <= history_keys, expected - history_keys
    assert any(key.startswith("lr-") for key in history_keys)  # the LR monitor's key
    assert "val/predictions/count" in history_keys  # the image-logging callback's panel
    assert list((runs[0].parent / "files" / "media" / "images").rglob("*.png"))
    assert {"config", "summary"} <= kinds and tags == ["tiny"]
    assert exit_codes == [0]  # finished by the task wrapper


def test_tensorboard_gets_scalars_and_prediction_images(trained_run) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((trained_run / "tensorboard").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent), size_guidance={"images": 0})
    acc.Reload()
    assert {"train/loss_step", "val/APpvol"} <= set(acc.Tags()["scalars"])
    images = [t for t in acc.Tags()["images"] if t.startswith("val/predictions/")]
    assert len(images) == 2  # the two validation images of the first batch
    picture = acc.Images(images[0])[0]
    assert picture.width > picture.height  # overlay + legend + heatmap side by side
