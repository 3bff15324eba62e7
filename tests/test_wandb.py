"""W&B: offline without credentials, always finished, and real offline runs read back.

The offline run files (``<run>/wandb/offline-run-*/``) are what ``wandb sync`` uploads: the
``run-<id>.wandb`` record log (history, summary, config, run records) and ``files/media`` (images,
mask PNGs, table JSON). The dashboard tests read both back.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import LOW_THRESHOLDS, compose_config, tiny_train_overrides
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


def wait_for_run_file(path: Path, timeout: float = 30.0) -> list:
    """All records of a finished offline run, once W&B's service has written them out.

    ``wandb.finish`` returns before the service process has flushed its last blocks; until then
    the file may hold only a prefix (or nothing) of the records. Wait for the ``exit`` record.
    """
    deadline = time.monotonic() + timeout
    while True:
        records = list(read_wandb_records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"{path}: no exit record after {timeout} s")
        time.sleep(0.2)


def test_offline_wandb_run_holds_the_logged_keys_and_images(trained_run) -> None:
    runs = list((trained_run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, runs
    history_keys, kinds, exit_codes, tags = set(), set(), [], []
    for record in wait_for_run_file(runs[0]):
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
    assert "val/predictions/0/path" in history_keys  # the image-logging callback's panels
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


# --------------------------------------------------------------------------------------------
# The dashboard: a 2-epoch tiny run with the W&B logger (panels callback, interactive images)
# --------------------------------------------------------------------------------------------
def _set_path(tree: dict, path: list[str], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


class OfflineRun:
    """What an offline W&B run holds, rebuilt from its record log like the server would.

    Attributes:
        dir: the ``offline-run-*`` directory.
        run_id: the run's id.
        resumed: the run was started with ``resume`` set.
        group, job_type, project: its W&B group, job type and project.
        history: one dict per ``log`` call (flattened keys, JSON-decoded values).
        summary: the final summary (nested keys joined with ``/``).
        config: the final config (``{key: value}``, values decoded).
        metric_defs: the ``define_metric`` records by metric name.
    """

    def __init__(self, run_file: Path) -> None:
        self.dir = run_file.parent
        self.history: list[dict[str, Any]] = []
        self.summary: dict[str, Any] = {}
        self.config: dict[str, Any] = {}
        self.metric_defs: dict[str, Any] = {}
        for record in wait_for_run_file(run_file):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                self.run_id, self.resumed = record.run.run_id, bool(record.run.resume)
                self.group, self.job_type = record.run.run_group, record.run.job_type
                self.project = record.run.project
                self._update_config(record.run.config.update)
            elif kind == "history":
                self.history.append(
                    {i.key or "/".join(i.nested_key): json.loads(i.value_json)
                     for i in record.history.item}
                )  # fmt: skip
            elif kind == "summary":
                for item in record.summary.update:
                    key = item.key or "/".join(item.nested_key)
                    self.summary[key] = json.loads(item.value_json)
            elif kind == "config":
                self._update_config(record.config.update)
            elif kind == "metric" and record.metric.name:
                self.metric_defs[record.metric.name] = record.metric

    def _update_config(self, updates) -> None:
        for item in updates:
            _set_path(self.config, [item.key] if item.key else list(item.nested_key),
                      json.loads(item.value_json))  # fmt: skip

    def values(self, key: str) -> list[Any]:
        """Every logged value of ``key``, in order."""
        return [row[key] for row in self.history if key in row]

    def table(self, key: str, index: int = -1) -> dict[str, Any]:
        """The ``index``-th logged ``wandb.Table`` of ``key`` (``columns``, ``data``)."""
        path = self.values(f"{key}/path")[index]
        return json.loads((self.dir / "files" / path).read_text())


def offline_runs(run_dir: Path) -> list[OfflineRun]:
    """The offline W&B runs of a run directory, oldest first."""
    files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    return [OfflineRun(f) for f in files]


PANELS_OVERRIDES = [
    "logger=wandb",
    "tags=[dashboard]",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=1",
    "callbacks.lr_monitor=null",
    # an untrained network scores nothing above the paper's thresholds: persons for the masks
    *(o.replace("+model_overrides.", "model.") for o in LOW_THRESHOLDS),
]


def train_panels_run(synthetic_root: Path, run_dir: Path, *extra: str) -> None:
    from smp_parsing.train import train

    overrides = tiny_train_overrides(synthetic_root, *PANELS_OVERRIDES, *extra)
    train(compose_config("train", overrides, run_dir))


@pytest.fixture(scope="module")
def panels_dir(synthetic_root, tmp_path_factory) -> Path:
    """Run directory of two epochs (two validations) of the tiny run, logged to offline W&B."""
    run_dir = tmp_path_factory.mktemp("wandb_panels")
    train_panels_run(synthetic_root, run_dir)
    return run_dir


@pytest.fixture(scope="module")
def panels_run(panels_dir) -> OfflineRun:
    """The offline W&B run of ``panels_dir``'s training (the first one: a test resumes it)."""
    return offline_runs(panels_dir)[0]


def test_prediction_images_carry_labelled_mask_layers_and_person_boxes(panels_run) -> None:
    from PIL import Image

    from smp_parsing.metadata import MHP_V2_CLASSES

    run = panels_run
    names = {str(i): name for i, name in enumerate(MHP_V2_CLASSES)}
    mask_labels = run.config["_wandb"]["mask/class_labels"]
    for i in range(2):  # num_images=4, but the tiny validation set has two images
        key = f"val/predictions/{i}"
        for layer in ("prediction", "ground_truth"):
            assert mask_labels[f"{key}_wandb_delimeter_{layer}"]["value"] == names, layer
        for layer in ("persons", "gt_persons"):
            person_names = mask_labels[f"{key}_wandb_delimeter_{layer}"]["value"]
            assert person_names["0"] == "no person" and person_names["1"] == "person 1"
        # every_n_epochs=1: both validations, the same image each time (epochs compare)
        captions = run.values(f"{key}/caption")
        assert len(captions) == 2 and captions[0] == captions[1]
        files = run.dir / "files"
        masks = {
            layer: np.asarray(Image.open(files / run.values(f"{key}/masks/{layer}/path")[-1]))
            for layer in ("prediction", "persons", "ground_truth", "gt_persons")
        }
        picture = Image.open(files / run.values(f"{key}/path")[-1])
        assert all(m.shape == (picture.height, picture.width) for m in masks.values())
        gt, gt_ids = masks["ground_truth"], masks["gt_persons"]
        assert gt.any() and set(np.unique(gt)) <= set(range(len(MHP_V2_CLASSES)))
        assert set(np.unique(masks["prediction"])) <= set(range(len(MHP_V2_CLASSES)))
        # persons stay apart: the id layer is non-zero exactly where the GT has a part
        assert ((gt_ids > 0) == (gt > 0)).all() and len(np.unique(gt_ids)) >= 2
        assert ((masks["persons"] > 0) == (masks["prediction"] > 0)).all()
        boxes = json.loads((files / run.values(f"{key}/boxes/persons/path")[-1]).read_text())
        predicted = set(np.unique(masks["persons"])) - {0}
        assert predicted and {b["class_id"] for b in boxes["box_data"]} == predicted
        assert all(0.0 <= b["scores"]["score"] <= 1.0 for b in boxes["box_data"])
        assert len(run.values(f"val/center_heatmap/{i}/path")) == 2


def test_class_iou_and_threshold_tables_match_the_logged_scalars(panels_run) -> None:
    from smp_parsing.metadata import MHP_V2_CLASSES

    run = panels_run
    for index in range(2):
        classes = run.table("val/class_iou", index)
        assert classes["columns"] == ["class_id", "class", "IoU"]
        assert [row[1] for row in classes["data"]] == list(MHP_V2_CLASSES)  # one row per class
        ious = [row[2] for row in classes["data"] if row[2] is not None]
        # the mIoU logged at this validation is the mean of the table's IoUs
        assert np.mean(ious) == pytest.approx(run.values("val/mIoU")[index], abs=1e-6)

        curves = run.table("val/thresholds", index)
        assert curves["columns"] == ["iou_threshold", "APp", "PCP"]
        assert [row[0] for row in curves["data"]] == pytest.approx([k / 10 for k in range(1, 10)])
        app = [row[1] for row in curves["data"]]
        assert np.mean(app) == pytest.approx(run.values("val/APpvol")[index], abs=1e-6)
        assert app[4] == pytest.approx(run.values("val/APp50")[index], abs=1e-6)
        assert curves["data"][4][2] == pytest.approx(run.values("val/PCP50")[index], abs=1e-6)

    charts = run.config["_wandb"]["visualize"]
    assert charts["val/class_iou_bar"]["panel_config"]["panelDefId"] == "wandb/bar/v0"
    for key, y in (("val/APp_curve", "APp"), ("val/PCP_curve", "PCP")):
        config = charts[key]["panel_config"]
        assert config["panelDefId"] == "wandb/line/v0"
        assert config["fieldSettings"] == {"x": "iou_threshold", "y": y, "stroke": None}


def test_summary_keeps_the_best_values_and_the_run_config_the_sweep_keys(panels_run) -> None:
    run = panels_run
    for name in ("APp50", "APpvol", "PCP50", "mIoU"):
        logged = run.values(f"val/{name}")
        assert len(logged) == 2
        assert run.summary[f"val/{name}"] == {"max": max(logged)}, name
        definition = run.metric_defs[f"val/{name}"]
        assert definition.summary.max and definition.step_metric == "trainer/global_step"
    config = run.config
    assert {k: config[k] for k in ("backbone", "grid", "epsilon", "rfr", "mir", "stage")} == {
        "backbone": "r18", "grid": 1.0, "epsilon": 0.2, "rfr": True, "mir": False,
        "stage": "main",  # the job's stage plan (`stage=`), from the resolved config
    }  # fmt: skip
    assert config["dataset"] == "synthetic"
    assert config["model"]["net"]["backbone"]["depth"] == 18  # the whole resolved config
    assert run.summary["params"] == config["model/params/total"] > 0
    assert run.summary["fps"] == pytest.approx(run.values("val/fps")[-1]) and run.summary["fps"] > 0


def test_a_resumed_run_continues_the_same_wandb_run(panels_dir, synthetic_root, panels_run):
    """Resuming from the run's last checkpoint logs into the run's W&B run, where it stopped."""
    first = panels_run
    assert (panels_dir / "wandb_id_main.txt").read_text().strip() == first.run_id
    ckpt = panels_dir / "checkpoints" / "last.ckpt"
    train_panels_run(synthetic_root, panels_dir, "trainer.max_epochs=3", f"ckpt_path={ckpt}")
    runs = offline_runs(panels_dir)
    assert len(runs) == 2  # one offline directory per process; `wandb sync` merges them by id
    second = runs[1]
    assert second.run_id == first.run_id and second.resumed
    # the third validation, after the first run's two, on the same step axis
    assert len(second.values("val/APpvol")) == 1
    assert min(second.values("trainer/global_step")) >= max(first.values("trainer/global_step"))
    assert second.config["stage"] == "main" and second.config["backbone"] == "r18"


# --------------------------------------------------------------------------------------------
# The pieces, without a training run
# --------------------------------------------------------------------------------------------
def test_sweep_keys_name_the_axes_of_the_paper_tables() -> None:
    from smp_parsing.utils.callbacks.wandb_panels import sweep_keys

    net = {"backbone": {"depth": 101, "dcn_stages": [False, True, True, True]},
           "grid_scale": 2.0, "epsilon": 0.1, "rfr": False, "mir": True}  # fmt: skip
    assert sweep_keys({"net": net, "stage": "mir"}, "mhp") == {
        "backbone": "r101_dcn", "grid": 2.0, "epsilon": 0.1, "rfr": False, "mir": True,
        "dataset": "mhp",
    }  # fmt: skip
    net["backbone"]["dcn_stages"] = [False] * 4
    assert sweep_keys({"net": net})["backbone"] == "r101"
    assert sweep_keys(None) == {}


def test_panel_rows_from_the_metric_output() -> None:
    from smp_parsing.utils.callbacks.wandb_panels import class_iou_rows, threshold_rows

    values = {"APp50": 0.5, "APp@0.1": 0.9, "APp@0.5": 0.5, "PCP@0.1": 0.8, "PCP@0.5": 0.4}
    assert threshold_rows(values) == [[0.1, 0.9, 0.8], [0.5, 0.5, 0.4]]
    rows = class_iou_rows([0.5, float("nan"), 0.25], {0: "background", 1: "hat"})
    assert rows == [[0, "background", 0.5], [1, "hat", None], [2, "class 2", 0.25]]


def test_mask_layers_and_boxes_of_overlapping_persons() -> None:
    from smp_parsing.utils.callbacks.image_logger import parsing_layers, person_boxes

    maps = np.zeros((3, 4, 6), np.uint8)
    maps[0, 0:3, 0:3] = 5
    maps[1, 1:4, 2:6] = 7  # overlaps person 0 at rows 1-2, column 2
    scores = np.array([0.9, 0.4, 0.3])  # person 2 is empty
    classes, persons = parsing_layers(maps, scores)
    assert classes[1, 2] == 5 and persons[1, 2] == 1  # the better-scored person is on top
    assert classes[3, 5] == 7 and persons[3, 5] == 2 and persons[0, 5] == 0
    _, gt_persons = parsing_layers(maps)  # GT: the later person is on top
    assert gt_persons[1, 2] == 2
    boxes = person_boxes(maps, scores)
    assert [b["class_id"] for b in boxes] == [1, 2]
    assert boxes[1]["position"] == {"minX": 2, "minY": 1, "maxX": 6, "maxY": 4}
    assert boxes[0]["scores"] == {"score": pytest.approx(0.9)}


def test_log_tables_run_writes_a_table_into_the_group(tmp_path) -> None:
    wandb_env.log_tables_run(
        {"sweep/table": (["job", "APp50"], [["0", 41.0], ["1", 42.5]])},
        tmp_path, group="2026-01-01_00-00-00", job_type="report",
    )  # fmt: skip
    (run,) = offline_runs(tmp_path)
    assert (run.group, run.job_type) == ("2026-01-01_00-00-00", "report")
    table = run.table("sweep/table")
    assert table["columns"] == ["job", "APp50"] and table["data"] == [["0", 41.0], ["1", 42.5]]


def test_evaluate_logs_the_same_panels_as_an_eval_job(panels_dir, synthetic_root, tmp_path):
    """``evaluate logger=wandb`` on the run's checkpoint: the validation panels, job type eval."""
    from conftest import tiny_data_overrides
    from smp_parsing.evaluate import evaluate

    overrides = [
        f"ckpt_path={panels_dir}/checkpoints/last.ckpt",
        *tiny_data_overrides(synthetic_root),
        *LOW_THRESHOLDS,
        "extras.print_config=false",
        "logger=wandb",
        "split=test",
    ]
    metric_dict, _ = evaluate(compose_config("eval", overrides, tmp_path))
    (run,) = offline_runs(tmp_path)
    assert run.job_type == "eval"
    classes = run.table("test/class_iou")
    assert len(classes["data"]) == 59
    ious = [row[2] for row in classes["data"] if row[2] is not None]
    assert np.mean(ious) == pytest.approx(metric_dict["test/mIoU"], abs=1e-6)
    curves = run.table("test/thresholds")
    app = [row[1] for row in curves["data"]]
    assert len(app) == 9 and np.mean(app) == pytest.approx(metric_dict["test/APpvol"], abs=1e-6)
    assert run.config["_wandb"]["visualize"]["test/APp_curve"]
    labels = run.config["_wandb"]["mask/class_labels"]
    assert labels["test/predictions/0_wandb_delimeter_ground_truth"]["value"]["3"] == "face"
    assert run.values("test/center_heatmap/0/path")
    assert run.config["backbone"] == "r18" and run.summary["fps"] > 0


def test_report_logs_its_table_into_the_sweep_group(tmp_path) -> None:
    """``report --wandb``: the Table-3-shaped rows as a wandb.Table, in the sweep's group."""
    import yaml

    from smp_parsing import report

    sweep = tmp_path / "2026-11-29_12-00-00_123-abcdef"
    for num, (rfr, metrics) in enumerate([("True", {"APp50": 0.41, "APpvol": 0.4, "PCP50": 0.39,
                                                    "fps": 7.5}), ("False", None)]):  # fmt: skip
        job = sweep / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"model.net.rfr={rfr}"]))
        (job / ".hydra" / "config.yaml").write_text(
            yaml.safe_dump({"logger": {"wandb": {"project": "parsing-ablation"}}})
        )
        if metrics is not None:  # job 1 failed: no metrics.json
            (job / "metrics.json").write_text(json.dumps({"test": metrics}))
    assert report.main([str(sweep), "--out", str(tmp_path / "out"), "--wandb"]) == 0
    (run,) = offline_runs(tmp_path / "out")
    assert (run.group, run.job_type) == (sweep.name, "report")
    table = run.table("report/test")
    assert table["columns"] == ["job", "RFR", "APp50", "APpvol", "PCP50", "FPS", "status"]
    assert table["data"][0] == ["0", "True", pytest.approx(41.0), pytest.approx(40.0),
                                pytest.approx(39.0), 7.5, "ok"]  # fmt: skip
    assert table["data"][1][:2] == ["1", "False"] and table["data"][1][2:6] == [None] * 4
    assert run.project == "parsing-ablation"  # the jobs' project, read from their config


def test_a_wandb_logger_points_every_process_at_its_save_dir(tmp_path, monkeypatch) -> None:
    """``WANDB_DIR`` follows the logger's ``save_dir``: processes spawned by DDP inherit it."""
    from omegaconf import OmegaConf

    from smp_parsing.utils.instantiators import instantiate_loggers

    monkeypatch.delenv("WANDB_DIR", raising=False)
    cfg = OmegaConf.create({"wandb": {"_target_": "lightning.pytorch.loggers.wandb.WandbLogger",
                                      "save_dir": str(tmp_path / "run"), "offline": True}})  # fmt: skip
    (logger,) = instantiate_loggers(cfg)
    assert logger.save_dir == str(tmp_path / "run")
    import os

    assert os.environ["WANDB_DIR"] == str(tmp_path / "run")


@pytest.mark.slow
def test_ddp_spawn_ranks_log_their_media_into_the_run_directory(synthetic_root, tmp_path,
                                                               monkeypatch) -> None:  # fmt: skip
    """Under ``trainer=ddp_sim`` (ddp_spawn) rank 0 attaches to the run its parent created: its
    images and tables land in ``<run>/wandb``, not in ``./wandb`` of the working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    run_dir = tmp_path / "run"
    train_panels_run(synthetic_root, run_dir, "trainer=ddp_sim", "trainer.max_epochs=1")
    assert not (tmp_path / "wandb").exists()
    (run,) = offline_runs(run_dir)
    assert list((run.dir / "files" / "media").rglob("*.png"))
