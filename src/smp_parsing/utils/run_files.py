"""Files a run leaves behind for the next step of a pipeline (evaluate, predict, report).

``metrics.json`` in the run directory is the hand-over point: it names the best and last
checkpoints and holds the final metrics, so a script can chain ``train -> evaluate -> predict``
and :mod:`smp_parsing.report` can collect a sweep without parsing logs.

One layout for every writer (``train``, ``evaluate``, ``evaluate_dirs``; :func:`metrics_summary`),
read by ``report``, the run summary and the quickstart::

    {"task": "train" | "eval" | "evaluate_dirs",
     "<split>": {"APp50": ..., ...},     # every split scored ("val", "test"), names unprefixed
     "split": "<split>",                 # the headline split: test when scored, else val
     "metrics": {"APp50": ..., ...},     # that split's values (what a reader shows first)
     ...}                                # the task's own facts (checkpoint paths, data, overrides)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

METRICS_FILE = "metrics.json"


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; a missing value is explicit
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def metrics_summary(task: str, splits: Mapping[str, Mapping[str, Any]], **info: Any) -> dict:
    """The ``metrics.json`` payload of a task (the layout above).

    Args:
        task: the writer (``"train"``, ``"eval"``, ``"evaluate_dirs"``).
        splits: ``{split: {name: value}}`` for every split scored (names without prefix).
        info: the task's other entries; they may not reuse the layout's keys.

    Raises:
        ValueError: an ``info`` key that is one of the layout's.
    """
    reserved = {"task", "split", "metrics", *splits}
    clash = sorted(reserved & set(info))
    if clash:
        raise ValueError(f"metrics.json: {clash} are keys of the layout, not task entries")
    headline = "test" if "test" in splits else next(iter(splits), None)
    payload: dict[str, Any] = {"task": task, **info}
    payload.update({split: dict(values) for split, values in splits.items()})
    payload["split"] = headline
    payload["metrics"] = dict(splits[headline]) if headline is not None else {}
    return payload


def split_metrics(payload: Mapping[str, Any], split: str) -> dict[str, float] | None:
    """``payload[split]`` (else the other evaluation split's) as floats; ``None`` when neither."""
    for name in (split, "val" if split == "test" else "test"):
        values = payload.get(name)
        if isinstance(values, Mapping) and values:
            return {k: float(v) for k, v in values.items() if v is not None}
    return None


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a sibling temp file + ``os.replace``.

    A reader (or a process killed mid-write) sees either the old file or the new one, never a
    torn one: ``os.replace`` within one directory is atomic on POSIX. The temp file is removed
    when the write fails (disk full, an error while encoding); only a kill can leave one behind,
    named ``.<name>.tmp-<pid>`` so that it is hidden and does not match any results file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as pretty JSON atomically (see :func:`write_text_atomic`)."""
    text = json.dumps(_to_jsonable(payload), indent=2, sort_keys=True) + "\n"
    return write_text_atomic(path, text)
