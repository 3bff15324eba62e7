"""Random-generator states stored in checkpoints, so that a resumed run draws what the
uninterrupted run would have drawn from the next epoch on. The train data order and augmentation
need no state: they are seeded from (seed, epoch) and (seed, epoch, index), see
``data/sampler.py``.

The CUDA states are per device; a checkpoint restored on a machine with another number of GPUs
restores the devices both have (:func:`restore_cuda_rng_state`).

States are kept as tensors and plain Python values only: checkpoints must stay loadable with
``torch.load(weights_only=True)``, which refuses NumPy arrays.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


def collect_rng_state() -> dict[str, Any]:
    """Snapshot of the Python, NumPy, torch CPU (and CUDA, when initialised) generators."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()  # noqa: NPY002 (the global NumPy state)
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`collect_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["gauss"]))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    restore_cuda_rng_state(state.get("cuda"))


def restore_cuda_rng_state(states: list[torch.Tensor] | None) -> int:
    """Give the visible GPUs the saved generator states, device by device.

    The checkpoint may come from a machine with another number of GPUs (or none): the first
    ``min(saved, visible)`` devices get their saved state, the others keep theirs (seeded by
    ``seed_everything``), and a CPU machine ignores them. ``torch.cuda.set_rng_state_all`` would
    fail on a saved device that does not exist here.

    Returns:
        The number of devices restored.
    """
    if not states or not torch.cuda.is_available():
        return 0
    count = min(len(states), torch.cuda.device_count())
    for device in range(count):
        torch.cuda.set_rng_state(states[device], device)
    if count != len(states):
        log.info("Restored the CUDA RNG states of %d of %d saved GPUs (%d visible here).",
                 count, len(states), torch.cuda.device_count())  # fmt: skip
    return count
