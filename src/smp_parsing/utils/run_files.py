"""Files a run leaves behind for the next step of a pipeline (evaluate, predict, report).

``metrics.json`` in the run directory is the hand-over point: it names the best and last
checkpoints and holds the final metrics, so a script can chain ``train -> evaluate -> predict``
and :mod:`smp_parsing.report` can collect a sweep without parsing logs.
"""

from __future__ import annotations

import json
import math
import os
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
