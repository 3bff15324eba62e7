"""Checkpoints are data, never code; and a checkpoint knows how to be used.

Reading (``evaluate``, ``predict``, the notebook):

- :func:`read_checkpoint` loads with ``torch.load(weights_only=True)`` whatever the torch version:
  tensors and plain containers only, so a pickle payload (an object whose ``__reduce__`` runs a
  command) is refused before anything runs. Training writes only such data (see
  ``utils/rng_state.py``, :class:`~smp_parsing.lit_module.SMPLitModule` hyper-parameters).
- The configs stored in a checkpoint are built by Hydra ``instantiate``, which calls whatever a
  ``_target_`` names. :func:`checked_config` accepts a stored config only when every ``_target_``
  is a public class defined in an allowed package (:data:`ALLOWED_TARGET_PACKAGES`) and no value
  holds an interpolation (``${...}`` would reach resolvers such as ``oc.env``); otherwise a
  :class:`CheckpointRefusedError` names the file and the key.

Writing (``smp_parsing.train``): next to the resolved ``model`` config (``smp_model_config``), each
checkpoint carries ``smp_inference`` (:func:`inference_metadata`), a plain dict with what inference
needs: the data set name, class names and count, flip pairs, the test transform (resize, mean/std,
pad divisor) and the resolved ``data`` config of the run, so that ``evaluate ckpt_path=X`` scores
the data the run was validated on (the synthetic preset included) and ``predict`` applies the
trained test transform, without ``experiment=``. The data directory is stored relative to
``paths.data_dir`` when it lies inside it (``data/synthetic_mhp_easy`` follows the repository to
another machine), absolute otherwise. The stored config is resolved, so the paths derived from
``data.data_dir`` (``val_dataset.root``, DensePose's ``ann_file`` / ``image_root``) are absolute
strings too: on use, every value inside the stored data directory moves with it
(:func:`rebase_data_paths`) to the relocated directory or to a ``data.data_dir=`` override; an
explicit override of such a path still wins.
"""

from __future__ import annotations

import inspect
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from smp_parsing.metadata import get_dataset_meta

log = logging.getLogger(__name__)

# Checkpoint keys written by SMPLitModule.on_save_checkpoint.
MODEL_CONFIG_KEY = "smp_model_config"
INFERENCE_KEY = "smp_inference"
# Version of the smp_inference layout (bumped when a key changes meaning).
INFERENCE_FORMAT = 1

# Keys of a backbone config that request ImageNet weights; cleared before a rebuild.
PRETRAINED_KEYS = ("pretrained", "weights", "weights_path", "checkpoint")

# Packages whose classes a stored config may build: the project, the optimisers, and the
# albumentations transforms of the data pipeline (conf/data/transforms). A target must be a class
# (not a function: a function target is a call with arguments of the file's choosing) whose
# defining module is inside one of them, so `torch.optim.os.system`-style attribute chains that
# start in an allowed package but end elsewhere are refused too.
ALLOWED_TARGET_PACKAGES = ("smp_parsing", "torch.optim", "albumentations")


class CheckpointRefusedError(ValueError):
    """A checkpoint holds code, or a config that would build something outside the allowlist."""


# ------------------------------------------------------------------------------------ reading
def read_checkpoint(ckpt_path: str | Path) -> dict[str, Any]:
    """Load a checkpoint on the CPU as data only (``weights_only=True``).

    Raises:
        FileNotFoundError: no such file.
        CheckpointRefusedError: the file references a Python object that is not plain data
            (a pickle payload, or a checkpoint written with objects in it); nothing is executed.
        ValueError: the file is not a readable torch file, or not a Lightning checkpoint.
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch names the refused global ("... unsupported GLOBAL posix.system ...")
        found = re.search(r"GLOBAL\s+([\w.]+)", str(err))
        if found:
            raise CheckpointRefusedError(
                f"{path}: refused: it references the Python object {found.group(1)}, which is not "
                "plain data (checkpoints are read with torch.load(weights_only=True): tensors, "
                "numbers, strings and containers only). Nothing was executed; only use "
                "checkpoints written by smp_parsing.train."
            ) from None
        raise ValueError(
            f"{path}: not a readable checkpoint ({type(err).__name__}: {err})"
        ) from err
    except Exception as err:  # truncated file, not a torch file, ...
        raise ValueError(
            f"{path}: not a readable checkpoint ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{path}: no 'state_dict' entry; is this a Lightning checkpoint?")
    return ckpt


def _check_target(target: Any, where: str) -> None:
    """Refuse a ``_target_`` that is not a public class of an allowed package."""
    allowed = ", ".join(f"{p}.*" for p in ALLOWED_TARGET_PACKAGES)
    if not isinstance(target, str):
        raise CheckpointRefusedError(f"{where}: must be a string, got {target!r}")
    parts = target.split(".")
    if not any(target.startswith(f"{p}.") for p in ALLOWED_TARGET_PACKAGES) or any(
        not part.isidentifier() or part.startswith("_") for part in parts
    ):
        raise CheckpointRefusedError(
            f"{where}: {target!r} is not allowed (only public classes of {allowed})"
        )
    try:
        obj = hydra.utils.get_object(target)  # imports inside the allowed packages only
    except Exception as err:
        raise CheckpointRefusedError(f"{where}: {target!r} cannot be located ({err})") from None
    module = getattr(obj, "__module__", "") or ""
    if not inspect.isclass(obj) or not any(
        module == p or module.startswith(f"{p}.") for p in ALLOWED_TARGET_PACKAGES
    ):
        kind = "class" if inspect.isclass(obj) else type(obj).__name__
        raise CheckpointRefusedError(
            f"{where}: {target!r} is the {kind} {module}.{getattr(obj, '__qualname__', '?')}, "
            f"not a class of {allowed}"
        )


def _check_node(node: Any, where: str, key: str) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if not isinstance(k, str):
                raise CheckpointRefusedError(
                    f"{where}: key {k!r} of {key or 'the root'} is not a string"
                )
            sub = f"{key}.{k}" if key else k
            if k == "_target_":
                _check_target(v, f"{where}: {sub}")
            else:
                _check_node(v, where, sub)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            _check_node(v, where, f"{key}[{i}]")
    elif isinstance(node, str):
        if "${" in node:
            raise CheckpointRefusedError(
                f"{where}: {key}={node!r} is an interpolation; a stored config must hold plain "
                "values only"
            )
    elif node is not None and not isinstance(node, (bool, int, float)):
        raise CheckpointRefusedError(
            f"{where}: {key} holds a {type(node).__name__}, not a plain config value"
        )


# Classes whose module moved (issue 15: models/heads/): a checkpoint written before names the
# old path in its stored config; the target is renamed before it is checked and built.
MOVED_TARGETS = {
    f"smp_parsing.models.{module}.{cls}": f"smp_parsing.models.heads.{module}.{cls}"
    for module, cls in (
        ("mask_feature", "MaskFeatureBranch"),
        ("part_head", "PartHead"),
        ("center_head", "CenterHead"),
        ("offset_head", "OffsetHead"),
        ("rfr", "RefinedFeatureRetain"),
        ("mir", "MIRHead"),
    )
}


def _moved(node: Any) -> Any:
    """``node`` with every ``_target_`` of :data:`MOVED_TARGETS` renamed (a new container)."""
    if isinstance(node, dict):
        return {
            k: MOVED_TARGETS.get(v, v) if k == "_target_" and isinstance(v, str) else _moved(v)
            for k, v in node.items()
        }
    if isinstance(node, (list, tuple)):
        return [_moved(v) for v in node]
    return node


def checked_config(stored: Any, ckpt_path: str | Path, name: str) -> DictConfig:
    """A config read from a checkpoint, as a ``DictConfig``, once it is known to be harmless.

    Args:
        stored: the plain dict found in the checkpoint.
        ckpt_path: the checkpoint, named in errors.
        name: where the config sits in the checkpoint (``smp_model_config``, ...), named in errors.

    Raises:
        CheckpointRefusedError: naming the file and the offending key: a ``_target_`` that is not
            a class of :data:`ALLOWED_TARGET_PACKAGES`, an interpolation, a non-plain value.
    """
    where = f"{ckpt_path} ({name})"
    if not isinstance(stored, dict):
        raise CheckpointRefusedError(f"{where}: expected a dict, got {type(stored).__name__}")
    stored = _moved(stored)
    _check_node(stored, where, "")
    return OmegaConf.create(stored)


# ------------------------------------------------------------------------------------ writing
def _relative_to(path: str | None, root: str | None) -> str | None:
    if not path or not root:
        return None
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return None


def inference_metadata(cfg: DictConfig) -> dict[str, Any]:
    """What inference needs from a training run (stored as ``checkpoint["smp_inference"]``).

    Args:
        cfg: the run config (``data`` and ``paths`` nodes), as composed for ``smp_parsing.train``.

    Returns:
        Plain dict: ``format``, ``dataset_name``, ``num_classes``, ``class_names``, ``flip_pairs``,
        ``test_transforms`` (``short_sides``, ``max_long_side``, ``mean``, ``std``,
        ``max_pixel_value``, ``pad_divisor``), ``data_config`` (the resolved ``data`` node) and
        ``data_dir_relative`` (``data.data_dir`` relative to ``paths.data_dir``, or ``None``).
    """
    data = OmegaConf.to_container(cfg.data, resolve=True)
    meta = get_dataset_meta(data["dataset_name"])
    test = data.get("test_transforms") or {}
    resize = test.get("resize") or {}
    normalize = test.get("normalize") or {}
    try:
        data_root = OmegaConf.select(cfg, "paths.data_dir")
    except Exception:  # e.g. ${hydra:...} outside a Hydra job
        data_root = None
    return {
        "format": INFERENCE_FORMAT,
        "dataset_name": data["dataset_name"],
        "num_classes": meta.num_classes,
        "class_names": list(meta.classes),
        "flip_pairs": [list(pair) for pair in meta.flip_pairs],
        "test_transforms": {
            "short_sides": resize.get("short_sides"),
            "max_long_side": resize.get("max_long_side"),
            "mean": normalize.get("mean"),
            "std": normalize.get("std"),
            "max_pixel_value": normalize.get("max_pixel_value"),
            "pad_divisor": test.get("pad_divisor"),
        },
        "data_config": data,
        "data_dir_relative": _relative_to(data.get("data_dir"), data_root),
    }


# ------------------------------------------------------------------------------------ using
def _no_pretrained(model_cfg: DictConfig) -> DictConfig:
    backbone = OmegaConf.select(model_cfg, "net.backbone")
    if isinstance(backbone, DictConfig):
        for key in PRETRAINED_KEYS:
            if key in backbone and backbone[key] not in (None, False):
                backbone[key] = False if isinstance(backbone[key], bool) else "none"
    return model_cfg


def load_lit_module(
    ckpt_path: str | Path,
    fallback_model_cfg: DictConfig | None = None,
    overrides: DictConfig | dict | None = None,
    checkpoint: dict[str, Any] | None = None,
):
    """Instantiate the LightningModule of a checkpoint and load its weights (strict).

    Args:
        ckpt_path: a checkpoint written by ``smp_parsing.train``.
        fallback_model_cfg: ``model`` config used when the checkpoint carries none.
        overrides: merged into the model config before building, for settings that do not
            change the weights, e.g. ``{"net": {"test_cfg": {"ctr_score_thr": 0.05}}}``.
        checkpoint: the already read checkpoint (:func:`read_checkpoint`), to read it once.

    Returns:
        The module in eval mode, on the CPU.

    Raises:
        CheckpointRefusedError: the file holds code or its config builds outside the allowlist.
        ValueError: the checkpoint has no config and no fallback is given, or its weights do not
            fit the network (names the file).
    """
    ckpt = read_checkpoint(ckpt_path) if checkpoint is None else checkpoint
    stored = ckpt.get(MODEL_CONFIG_KEY)
    if stored is not None:
        model_cfg = checked_config(stored, ckpt_path, MODEL_CONFIG_KEY)
    elif fallback_model_cfg is not None:
        log.warning("%s carries no model config: building the network from the command line.",
                    ckpt_path)  # fmt: skip
        model_cfg = fallback_model_cfg.copy()
    else:
        raise ValueError(f"{ckpt_path}: carries no model config and no fallback was given")
    if overrides:
        model_cfg = OmegaConf.merge(model_cfg, overrides)
    model = hydra.utils.instantiate(_no_pretrained(model_cfg))
    model.model_config = OmegaConf.to_container(model_cfg, resolve=True)
    model.inference_config = ckpt.get(INFERENCE_KEY)
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as err:
        raise ValueError(f"{ckpt_path}: weights do not fit the network built: {err}") from err
    return model.eval()


# Synthetic runs before issue 15 stored the generic data module with the generator's arguments.
LEGACY_DATAMODULE = "smp_parsing.data.datamodule.ParsingDataModule"
GENERATED_DATAMODULE = "smp_parsing.data.synthetic_tool.GeneratedDataModule"


def _path_under(value: str, root: str) -> str | None:
    """``value`` relative to ``root`` (``""`` when equal), ``None`` when outside it."""
    value, root = os.path.normpath(value), os.path.normpath(root)
    if value == root:
        return ""
    prefix = root.rstrip(os.sep) + os.sep
    return value[len(prefix) :] if value.startswith(prefix) else None


def _rebased(node: Any, old: str, new: str, key: str, moved: list[str]) -> Any:
    if isinstance(node, dict):
        return {
            k: _rebased(v, old, new, f"{key}.{k}" if key else k, moved) for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rebased(v, old, new, f"{key}[{i}]", moved) for i, v in enumerate(node)]
    if isinstance(node, str) and node:
        rest = _path_under(node, old)
        if rest is not None:
            moved.append(key)
            return str(Path(new) / rest) if rest else new
    return node


def rebase_data_paths(data_cfg: DictConfig, new_dir: str) -> DictConfig:
    """The data config with ``data_dir`` set to ``new_dir`` and every path inside it moved along.

    A checkpoint stores the resolved config: ``val_dataset.root: ${data.data_dir}`` was written as
    the run's absolute directory, and would otherwise keep reading the run's files whatever
    ``data_dir`` says. Any string value equal to the stored ``data_dir`` or below it is rewritten
    (the stored config has no interpolation left that would say which values were derived).

    Args:
        data_cfg: a stored (interpolation-free) data config with a ``data_dir``.
        new_dir: the data directory to use.

    Returns:
        A new config; the moved keys are logged.
    """
    old = data_cfg.get("data_dir")
    if not isinstance(old, str) or not old or str(new_dir) == old:
        return data_cfg
    moved: list[str] = []
    container = _rebased(OmegaConf.to_container(data_cfg), old, str(new_dir), "", moved)
    log.info("Data paths moved from %s to %s: %s", old, new_dir, ", ".join(moved))
    return OmegaConf.create(container)


def stored_data_config(
    ckpt: dict[str, Any], ckpt_path: str | Path, data_root: str | Path | None = None
) -> DictConfig | None:
    """The run's ``data`` config from a checkpoint, checked, with its data directory placed.

    Args:
        ckpt: the checkpoint (:func:`read_checkpoint`).
        ckpt_path: its file, named in errors and logs.
        data_root: today's ``paths.data_dir``: a data directory stored relative to the run's
            ``paths.data_dir`` is placed under it. ``None`` keeps the run's absolute path.

    Returns:
        The config, or ``None`` for a checkpoint written before ``smp_inference`` existed.
    """
    info = ckpt.get(INFERENCE_KEY)
    if not isinstance(info, dict) or "data_config" not in info:
        return None
    data_cfg = checked_config(info["data_config"], ckpt_path, f"{INFERENCE_KEY}.data_config")
    if data_cfg.get("_target_") == LEGACY_DATAMODULE and "generator" in data_cfg:
        data_cfg._target_ = GENERATED_DATAMODULE  # a synthetic run from before the prepare hook
    relative = info.get("data_dir_relative")
    if relative is not None and (
        not isinstance(relative, str)
        or Path(relative).is_absolute()
        or ".." in Path(relative).parts
    ):
        raise CheckpointRefusedError(
            f"{ckpt_path} ({INFERENCE_KEY}): data_dir_relative={relative!r} is not a relative "
            "path inside the data folder"
        )
    if relative and data_root is not None:
        data_cfg = rebase_data_paths(data_cfg, str(Path(data_root) / relative))
    return data_cfg


def _command_line_overrides() -> list[str]:
    """The job's command-line overrides (``[]`` outside a Hydra job)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return [str(o) for o in HydraConfig.get().overrides.task]


# An override of one of these keys chooses another data set: the command line's data config is
# used as a whole.
DATASET_CHOICE_KEYS = ("data", "experiment")


def inference_data_config(
    ckpt: dict[str, Any],
    ckpt_path: str | Path,
    cfg: DictConfig,
    overrides: list[str] | None = None,
) -> DictConfig:
    """The ``data`` config ``evaluate`` and ``predict`` use: by default the checkpoint's.

    - Checkpoint with ``smp_inference``, no data override: the run's data config (its data set,
      synthetic preset, test transform, limits), the data directory placed under today's
      ``paths.data_dir`` when it was inside the run's.
    - ``data.<key>=...`` overrides: applied on top of it, each one logged. ``data.data_dir=Y``
      first, moving the paths derived from the run's directory (dataset roots, annotation files)
      under ``Y``; an explicit ``data.val_dataset.root=...`` still wins.
    - ``data=<name>`` or ``experiment=<name>``: the command line's data config, logged.
    - A checkpoint without ``smp_inference`` (older runs): the command line's, with a warning.

    Args:
        ckpt: the checkpoint (:func:`read_checkpoint`).
        ckpt_path: its file.
        cfg: the composed job config (``data``, ``paths``).
        overrides: the command-line overrides; default: the Hydra job's.

    Raises:
        CheckpointRefusedError: the stored data config builds outside the allowlist.
        ValueError: the data set's class count differs from the network's.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = _command_line_overrides() if overrides is None else overrides
    parsed = OverridesParser.create().parse_overrides(overrides)
    choice = [
        str(o.input_line)
        for o in parsed
        if (o.key_or_group.split("/")[0] in DATASET_CHOICE_KEYS and "." not in o.key_or_group)
        or (o.package or "").split(".")[0] == "data"
    ]
    data_root = OmegaConf.select(cfg, "paths.data_dir", default=None)
    stored = stored_data_config(ckpt, ckpt_path, data_root)
    if stored is None:
        log.warning(
            "%s carries no %s (written by an older version): using the data config of the "
            "command line (%s); pass the run's experiment=/data= to evaluate what it trained on.",
            ckpt_path, INFERENCE_KEY, cfg.data.get("dataset_name"),
        )  # fmt: skip
        data_cfg = cfg.data
    elif choice:
        log.info("Data: %s from the command line (%s) instead of the checkpoint's %s",
                 cfg.data.get("dataset_name"), " ".join(choice), stored.get("dataset_name"))  # fmt: skip
        data_cfg = cfg.data
    else:
        data_cfg = stored
        log.info("Data: the checkpoint's %s config (data_dir=%s)", stored.dataset_name,
                 stored.data_dir)  # fmt: skip
        # data_dir first: the paths that follow it must not undo an explicit override of one of them
        for o in sorted(parsed, key=lambda o: o.key_or_group != "data.data_dir"):
            key = o.key_or_group
            if not key.startswith("data.") or o.package:
                continue
            sub = key[len("data.") :]
            old = OmegaConf.select(data_cfg, sub, default=None)
            if o.is_delete():
                parent, _, leaf = sub.rpartition(".")
                node = OmegaConf.select(data_cfg, parent) if parent else data_cfg
                if isinstance(node, DictConfig) and leaf in node:
                    del node[leaf]
                log.info("Data override %s (the checkpoint has %s=%s)", o.input_line, key, old)
                continue
            value = OmegaConf.select(cfg, key)
            if isinstance(value, (DictConfig, ListConfig)):
                value = OmegaConf.to_container(value, resolve=True)
            if sub == "data_dir" and isinstance(value, str):
                data_cfg = rebase_data_paths(data_cfg, value)
            else:
                OmegaConf.update(data_cfg, sub, value, merge=False, force_add=True)
            log.info("Data override %s=%s (the checkpoint has %s)", key, value, old)
    check_num_classes(ckpt, ckpt_path, data_cfg)
    return data_cfg


def check_num_classes(ckpt: dict[str, Any], ckpt_path: str | Path, data_cfg: DictConfig) -> None:
    """A network of C classes cannot score a data set of C' != C classes: say so clearly.

    Raises:
        ValueError: naming the file, both class counts and data sets.
    """
    model_cfg = ckpt.get(MODEL_CONFIG_KEY)
    net_cfg = model_cfg.get("net") if isinstance(model_cfg, dict) else None
    info = ckpt.get(INFERENCE_KEY)
    info = info if isinstance(info, dict) else {}
    trained = (net_cfg if isinstance(net_cfg, dict) else {}).get(
        "num_classes", info.get("num_classes")
    )
    wanted = data_cfg.get("num_classes")
    if trained is not None and wanted is not None and int(trained) != int(wanted):
        trained_on = info.get("dataset_name", "its training data")
        raise ValueError(
            f"{ckpt_path}: the network predicts {trained} classes ({trained_on}), the data set "
            f"{data_cfg.get('dataset_name')!r} has {wanted}: use a checkpoint trained on it, or "
            "drop the data=/experiment= override to use the checkpoint's data set"
        )
