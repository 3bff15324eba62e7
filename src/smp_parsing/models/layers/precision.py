"""Full-precision regions under autocast (targets, losses, matrix NMS, decode).

Under ``bf16-mixed`` / ``16-mixed`` training, autocast re-casts every ``matmul`` / ``bmm`` to
16 bits, including the ones inside the losses (the dynamic-kernel mask logits of the Dice
term), matrix NMS (the IoU product) and the decode (the part masks). The paper trains in
fp32; these regions keep its numerics whatever the precision of the network: autocast is
switched off on every device type where it is on, and the functions cast their inputs to
float32 themselves (``Tensor.float()`` is free on a float32 tensor).

A network part that runs inside such a region (MIR's RoI classifier, which classifies the
masks of its targets inside its loss) goes back to the network's precision with
:func:`autocast_restored`.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

import torch

# Device types autocast supports and this project may run on.
_DEVICE_TYPES = ("cpu", "cuda", "xpu", "mps", "hpu")

P = ParamSpec("P")
R = TypeVar("R")

# Per thread, one entry per open autocast_off: the (device type, dtype) it switched off.
_switched_off = threading.local()


def _stack() -> list[list[tuple[str, torch.dtype]]]:
    if not hasattr(_switched_off, "stack"):
        _switched_off.stack = []
    return _switched_off.stack


@contextlib.contextmanager
def autocast_off() -> Iterator[None]:
    """Run the block with autocast disabled on every device type where it is enabled.

    Nothing is entered when autocast is off (the common inference and fp32 case).
    """
    switched = [
        (device_type, torch.get_autocast_dtype(device_type))
        for device_type in _DEVICE_TYPES
        if torch.is_autocast_enabled(device_type)
    ]
    _stack().append(switched)
    try:
        with contextlib.ExitStack() as stack:
            for device_type, _ in switched:
                stack.enter_context(torch.autocast(device_type, enabled=False))
            yield
    finally:
        _stack().pop()


@contextlib.contextmanager
def autocast_restored() -> Iterator[None]:
    """Inside :func:`autocast_off`: the autocast it switched off, back on (same dtypes).

    For a network part computed inside a full-precision region, so that it runs in the
    precision it runs in everywhere else. Nothing is entered outside an :func:`autocast_off`
    or when autocast was off.
    """
    switched = _stack()[-1] if _stack() else []
    with contextlib.ExitStack() as stack:
        for device_type, dtype in switched:
            stack.enter_context(torch.autocast(device_type, dtype=dtype))
        yield


def full_precision(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator: ``fn`` runs inside :func:`autocast_off` (its float inputs it casts itself)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with autocast_off():
            return fn(*args, **kwargs)

    return wrapper


__all__ = ["autocast_off", "autocast_restored", "full_precision"]
