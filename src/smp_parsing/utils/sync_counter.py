"""Count the host-device synchronisations of a code path, on any device (issues 13 and 15).

On a GPU, ``torch.cuda.set_sync_debug_mode("warn")`` reports the syncs the kernels make; on the
CPU nothing syncs, so the CPU tests and benchmarks count the *operations that would sync* on CUDA
instead, and a GPU run counts the same ones beside the debug mode's figure
(``benchmarks/gpu_check.py``). :class:`SyncCounter` watches two levels at once:

- the **dispatch level** (a :class:`~torch.utils._python_dispatch.TorchDispatchMode`), which sees
  every aten operator, below autograd (the backward's operators too) and inside torch's Python
  functions, whether or not the code is in ``inference_mode`` (where composite operators such as
  ``nonzero_numpy`` or ``item`` arrive undecomposed). Counted, by kind:

  - ``item``: a tensor read as a Python number (``.item()``, ``int(t)``, ``float(t)``,
    ``bool(t)``, a tensor as an ``if`` condition or a Python index, ``torch.equal``);
  - ``nonzero``: an output whose size is known only from the data (``nonzero``, one-argument
    ``torch.where``, ``argwhere``, ``masked_select``, ``unique`` and ``unique_consecutive``,
    ``bincount`` and ``histc`` without a range (their CUDA kernels read the range),
    ``repeat_interleave`` without ``output_size``);
  - ``bool_index``: boolean-mask indexing (``t[mask]``, ``t[mask] = values``: a ``nonzero``
    inside the kernel, invisible as an operator). ``t[mask] = 3`` is not counted: a Python
    number written through one mask becomes a ``masked_fill_`` (no sync);
  - ``host_to_device``: a copy from pageable host memory to the device (``x.to("cuda")``), and
    on any device the **Python numbers written into a tensor** (``t[i] = 3``,
    ``t[index] = 3``): torch makes a CPU scalar of the number and copies it, a synchronous
    host-to-device copy on CUDA that no operator name shows.

- the **Python level** (a :class:`~torch.overrides.TorchFunctionMode`) for what never reaches
  the dispatcher on the CPU, or reaches it differently than on CUDA:

  - ``host``: a tensor copied to the host (``.tolist()``, ``.cpu()``, ``.to("cpu")``, or
    ``.to(device)`` of a device tensor to the CPU). ``.numpy()`` is not counted: on a device
    it needs one of these first;
  - ``host_to_device``: a tensor built from Python data for a device (``torch.tensor(data,
    device=...)``, ``torch.as_tensor(data, device=...)``, ``t.new_tensor(data)``);
  - ``F.one_hot`` counts what CUDA does (one ``item`` for ``num_classes=-1``, the class count
    read from the data; none otherwise), not its CPU range checks (two ``item``).

A call decided at the Python level is not counted again at the dispatch level. Measured on one
H200 (``torch.cuda.set_sync_debug_mode("warn")``, ``make gpu-check``, before this counter
existed): one SMP-R50* training step = 5 CUDA syncs, one image's decode = 14. On the CPU this
counter gave 14 for that decode, and 12 once two of its host-to-device copies were removed; the
training step counts 7, 2 more than CUDA's 5, because the class-range check of
``models/targets/instances.py`` reads the range on the CPU (``torch._assert_async`` on an
accelerator). The counter itself has not run on a GPU yet.

Usage::

    with SyncCounter() as syncs:
        net.loss(outputs, parsing)
    syncs.total, syncs.counts  # e.g. 7, Counter({"nonzero": 4, "item": 3})
    syncs.ops  # by operator: Counter({"aten.nonzero": 4, "aten._local_scalar_dense": 3})
"""

from __future__ import annotations

import collections
import contextlib
import traceback
from typing import Any

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

# ------------------------------------------------------------------ dispatch level
# aten operator packets -> kind, counted whatever their arguments.
_DISPATCH_KINDS: dict[str, str] = {
    "aten._local_scalar_dense": "item",
    "aten.item": "item",  # inference mode: composite, not decomposed
    "aten.is_nonzero": "item",  # bool(t) in inference mode
    "aten.equal": "item",
    "aten.allclose": "item",  # isclose(...).all() read on the host
    "aten.nonzero": "nonzero",
    "aten.nonzero_numpy": "nonzero",  # nonzero(as_tuple=True) in inference mode
    "aten.argwhere": "nonzero",
    "aten.masked_select": "nonzero",
    "aten._unique": "nonzero",
    "aten._unique2": "nonzero",
    "aten.unique_dim": "nonzero",
    "aten.unique_consecutive": "nonzero",
    "aten.unique_dim_consecutive": "nonzero",
    "aten.bincount": "nonzero",  # CUDA reads the max for the output size
}
_INDEX_OPS = ("aten.index", "aten.index_put", "aten.index_put_", "aten._index_put_impl_")


def _is_mask(index: Any) -> bool:
    return isinstance(index, Tensor) and index.dtype in (torch.bool, torch.uint8)


def _pageable_host(t: Any) -> bool:
    return isinstance(t, Tensor) and t.device.type == "cpu" and not t.is_pinned()


class _DispatchLayer(TorchDispatchMode):
    """The operators of :data:`_DISPATCH_KINDS` and the argument-dependent cases."""

    def __init__(self, counter: SyncCounter) -> None:
        super().__init__()
        self.counter = counter
        # The CPU scalar torch made of the last Python number (``aten.lift_fresh``), to tell a
        # number written into a tensor from a copy of a tensor.
        self.lifted: Tensor | None = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func._overloadpacket._qualified_op_name.replace("::", ".")
        counter = self.counter
        if not counter.muted:
            kind = self._kind(packet, func._overloadname, args, kwargs)
            if kind is not None:
                counter.add(kind, packet)
        out = func(*args, **kwargs)
        if packet == "aten.lift_fresh" and isinstance(out, Tensor):
            if out.device.type != "cpu" and not counter.muted:
                counter.add("host_to_device", packet)  # torch.tensor(..., device=): hidden copy
            self.lifted = out
        return out

    def _kind(self, packet: str, overload: str, args: tuple, kwargs: dict) -> str | None:
        kind = _DISPATCH_KINDS.get(packet)
        if kind is not None:
            return kind
        if packet == "aten.where" and overload == "default":  # where(cond) = nonzero
            return "nonzero"
        if packet == "aten.repeat_interleave":  # output size = sum of the repeats
            repeats = args[1] if len(args) > 1 else (args[0] if args else None)
            has_tensor = isinstance(repeats, Tensor) or overload == "Tensor"
            return "nonzero" if has_tensor and kwargs.get("output_size") is None else None
        if packet == "aten.histc":  # min = max = 0: the range is read from the data
            lo = args[2] if len(args) > 2 else kwargs.get("min", 0)
            hi = args[3] if len(args) > 3 else kwargs.get("max", 0)
            return "nonzero" if lo == hi == 0 else None
        if packet in _INDEX_OPS:
            return self._index_kind(packet, args)
        if packet == "aten.copy_":
            dst, src = args[0], args[1]
            if src is self.lifted and src is not None:
                return "host_to_device"  # t[i] = 3: the number's CPU scalar copied in
            non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
            if _pageable_host(src) and dst.device.type != "cpu" and not non_blocking:
                return "host_to_device"
            return None
        if packet == "aten._to_copy":
            device = kwargs.get("device")
            to_device = device is not None and torch.device(device).type != "cpu"
            if to_device and _pageable_host(args[0]) and not kwargs.get("non_blocking", False):
                return "host_to_device"
        return None

    def _index_kind(self, packet: str, args: tuple) -> str | None:
        indices = args[1] if len(args) > 1 else ()
        indices = [i for i in indices if i is not None] if isinstance(indices, list | tuple) else []
        masks = [i for i in indices if _is_mask(i)]
        if packet == "aten.index":
            return "bool_index" if masks else None
        value = args[2] if len(args) > 2 else None
        # A Python number written in (its lifted CPU scalar; on a device, any CPU scalar): torch
        # copies it to the device, unless one mask makes it a masked_fill_ (read on the host).
        on_device = isinstance(args[0], Tensor) and args[0].device.type != "cpu"
        from_host = isinstance(value, Tensor) and (
            value is self.lifted or (on_device and value.device.type == "cpu")
        )
        if from_host and value.numel() == 1 and len(indices) == len(masks) == 1:
            return None
        if masks:
            return "bool_index"
        return "host_to_device" if from_host and value.dim() == 0 else None


# ------------------------------------------------------------------ Python level
_HOST = {Tensor.tolist, Tensor.cpu}
_CONSTRUCTORS = {torch.tensor, torch.as_tensor, Tensor.new_tensor}


def _function_kind(func: Any, args: tuple, kwargs: dict) -> str | None:
    """The sync kind of one Python-level call (see the module docstring), or ``None``."""
    if func in _HOST:
        return "host"
    if func is Tensor.to:
        device = kwargs.get("device", args[1] if len(args) > 1 else None)
        if isinstance(device, Tensor):
            device = device.device
        if isinstance(device, str) and device == "cpu":
            return "host"  # written as a host copy
        to_host = isinstance(device, str | torch.device) and torch.device(device).type == "cpu"
        return "host" if to_host and args[0].device.type != "cpu" else None
    if func is torch.nn.functional.one_hot:
        num_classes = args[1] if len(args) > 1 else kwargs.get("num_classes", -1)
        return "item" if num_classes < 0 else None  # CUDA reads the max only then
    if func in _CONSTRUCTORS:
        data = args[1] if func is Tensor.new_tensor else (args[0] if args else kwargs.get("data"))
        if isinstance(data, Tensor):
            return None
        named = "device" in kwargs or (func is torch.as_tensor and len(args) > 2)
        return "host_to_device" if func is Tensor.new_tensor or named else None
    return None


class _FunctionLayer(TorchFunctionMode):
    """Host copies, constants built for a device and ``F.one_hot`` (see the module docstring)."""

    def __init__(self, counter: SyncCounter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = _function_kind(func, args, kwargs)
        if kind is not None:
            self.counter.add(kind, getattr(func, "__qualname__", str(func)))
        if func is torch.nn.functional.one_hot or func in _CONSTRUCTORS:
            # decided here: their inner operators (CPU range checks, the lifted data) not again
            with self.counter.mute():
                return func(*args, **kwargs)
        return func(*args, **kwargs)


# ------------------------------------------------------------------ the counter
class SyncCounter:
    """Counts the operations that synchronise host and device (see the module docstring).

    A context manager; counts only inside its block, on the current thread (and the autograd
    engine's, for the backward).

    Args:
        record_sites: also keep, per kind, the ``file:line`` of each counted call (the first
            frame outside torch), to find where the syncs come from.

    Attributes:
        counts: ``{kind: calls}`` (``item``, ``host``, ``nonzero``, ``bool_index``,
            ``host_to_device``).
        ops: ``{operator or function: calls}``.
        sites: ``{kind: Counter({"file:line": calls})}`` when ``record_sites``.
    """

    def __init__(self, record_sites: bool = False) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.ops: collections.Counter[str] = collections.Counter()
        self.sites: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self.record_sites = record_sites
        self.muted = 0
        self._stack: contextlib.ExitStack | None = None

    @property
    def total(self) -> int:
        """All counted calls."""
        return sum(self.counts.values())

    def add(self, kind: str, op: str) -> None:
        """Count one sync of ``kind`` made by ``op``."""
        self.counts[kind] += 1
        self.ops[op] += 1
        if self.record_sites:
            self.sites[kind][_call_site()] += 1

    @contextlib.contextmanager
    def mute(self):
        """Nothing counted at the dispatch level inside (a call decided at the Python level)."""
        self.muted += 1
        try:
            yield
        finally:
            self.muted -= 1

    def __enter__(self) -> SyncCounter:
        stack = contextlib.ExitStack()
        stack.enter_context(_FunctionLayer(self))
        stack.enter_context(_DispatchLayer(self))
        self._stack = stack
        return self

    def __exit__(self, *exc_info) -> None:
        assert self._stack is not None
        self._stack.__exit__(*exc_info)
        self._stack = None


def _call_site() -> str:
    """``file:line`` of the innermost frame outside torch and this module."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "/torch/" not in frame.filename and not frame.filename.endswith("sync_counter.py"):
            return f"{frame.filename.rsplit('/src/', 1)[-1]}:{frame.lineno}"
    return "?"


__all__ = ["SyncCounter"]
