"""Count the host-device synchronisations of a code path, on any device (issue 13).

On a GPU, ``torch.cuda.set_sync_debug_mode("warn")`` reports the syncs the kernels make; on
the CPU nothing syncs, so the CPU tests and benchmarks count the *calls that would sync* on
an accelerator instead, with a :class:`~torch.overrides.TorchFunctionMode`:

- ``item``: a tensor read as a Python number (``.item()``, ``int(t)``, ``float(t)``,
  ``bool(t)``, a tensor used as a Python index or as an ``if`` condition, ``F.one_hot``'s
  range check);
- ``host``: a tensor copied to the host (``.tolist()``, ``.cpu()``, ``.numpy()``,
  ``.to("cpu")``);
- ``nonzero``: an output size known only from the data (``nonzero``, ``torch.where(cond)``,
  ``argwhere``, ``masked_select``, ``unique``, ``unique_consecutive``, ``bincount`` (its
  CUDA kernel reads the max), ``repeat_interleave`` without ``output_size``);
- ``bool_index``: boolean-mask indexing (``t[mask]``, ``t[mask] = v``: a ``nonzero``);
- ``constant``: a tensor built from Python data (``torch.tensor([..])``, ``as_tensor``,
  ``new_tensor``): a host-to-device copy when the tensor lives on an accelerator.

Each top-level call counts once (a counted function's own inner calls are not seen: the mode
is off while it runs). Usage::

    with SyncCounter() as syncs:
        net.loss(outputs, parsing)
    syncs.total, syncs.counts  # e.g. 12, Counter({"nonzero": 7, "item": 3, ...})
"""

from __future__ import annotations

import collections
import traceback
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

_ITEM = {
    torch.nn.functional.one_hot,  # checks the labels' range on the host
    Tensor.item,
    Tensor.__int__,
    Tensor.__float__,
    Tensor.__bool__,
    Tensor.__index__,
}
_HOST = {Tensor.tolist, Tensor.cpu, Tensor.numpy}
_DATA_SIZED = {
    torch.nonzero,
    Tensor.nonzero,
    torch.argwhere,
    Tensor.argwhere,
    torch.masked_select,
    Tensor.masked_select,
    torch.unique,
    Tensor.unique,
    torch.unique_consecutive,
    Tensor.unique_consecutive,
    torch.bincount,
    Tensor.bincount,
}
_CONSTANT = {torch.tensor, torch.as_tensor, Tensor.new_tensor}


def _has_bool_index(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, Tensor) and i.dtype == torch.bool for i in items)


def _classify(func: Callable, args: tuple, kwargs: dict) -> str | None:
    """The sync category of one call, or None when it does not sync."""
    if func in _ITEM:
        return "item"
    if func in _HOST:
        return "host"
    if func is Tensor.to:  # device-generic .to(device) moves nothing on the CPU
        device = kwargs.get("device", args[1] if len(args) > 1 else None)
        to_host = isinstance(device, str | torch.device) and torch.device(device).type == "cpu"
        return "host" if to_host and args[0].device.type != "cpu" else None
    if func in _DATA_SIZED:
        return "nonzero"
    if func in (torch.where, Tensor.where) and len(args) + len(kwargs) == 1:
        return "nonzero"
    if func in (torch.repeat_interleave, Tensor.repeat_interleave):
        repeats = args[1] if len(args) > 1 else kwargs.get("repeats")
        if isinstance(repeats, Tensor) and kwargs.get("output_size") is None:
            return "nonzero"
        return None
    if func in (Tensor.__getitem__, Tensor.__setitem__):
        return "bool_index" if _has_bool_index(args[1]) else None
    if func in _CONSTANT:
        data = args[1] if func is Tensor.new_tensor else (args[0] if args else kwargs.get("data"))
        return None if isinstance(data, Tensor) else "constant"
    return None


class SyncCounter(TorchFunctionMode):
    """Counts the calls that synchronise host and device (see the module docstring).

    Args:
        record_sites: also keep, per category, the ``file:line`` of each call (the first
            frame outside torch), to find where the syncs come from.

    Attributes:
        counts: ``{category: calls}``.
        sites: ``{category: Counter({"file:line": calls})}`` when ``record_sites``.
    """

    def __init__(self, record_sites: bool = False) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()
        self.sites: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self.record_sites = record_sites

    @property
    def total(self) -> int:
        """All counted calls."""
        return sum(self.counts.values())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        category = _classify(func, args, kwargs)
        if category is not None:
            self.counts[category] += 1
            if self.record_sites:
                self.sites[category][_call_site()] += 1
        return func(*args, **kwargs)


def _call_site() -> str:
    """``file:line`` of the innermost frame outside torch and this module."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "/torch/" not in frame.filename and not frame.filename.endswith("sync_counter.py"):
            return f"{frame.filename.rsplit('/src/', 1)[-1]}:{frame.lineno}"
    return "?"


__all__ = ["SyncCounter"]
