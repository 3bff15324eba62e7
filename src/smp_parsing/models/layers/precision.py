"""Full-precision regions under autocast (targets, losses, matrix NMS, decode).

Under ``bf16-mixed`` / ``16-mixed`` training, autocast re-casts every ``matmul`` / ``bmm`` to
16 bits, including the ones inside the losses (the dynamic-kernel mask logits of the Dice
term), matrix NMS (the IoU product) and the decode (the part masks). The paper trains in
fp32; these regions keep its numerics whatever the precision of the network: autocast is
switched off on every device type where it is on, and the functions cast their inputs to
float32 themselves (``Tensor.float()`` is free on a float32 tensor).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

import torch

# Device types autocast supports and this project may run on.
_DEVICE_TYPES = ("cpu", "cuda", "xpu", "mps", "hpu")

P = ParamSpec("P")
R = TypeVar("R")


@contextlib.contextmanager
def autocast_off() -> Iterator[None]:
    """Run the block with autocast disabled on every device type where it is enabled.

    Nothing is entered when autocast is off (the common inference and fp32 case).
    """
    with contextlib.ExitStack() as stack:
        for device_type in _DEVICE_TYPES:
            if torch.is_autocast_enabled(device_type):
                stack.enter_context(torch.autocast(device_type, enabled=False))
        yield


def full_precision(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator: ``fn`` runs inside :func:`autocast_off` (its float inputs it casts itself)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with autocast_off():
            return fn(*args, **kwargs)

    return wrapper


__all__ = ["autocast_off", "full_precision"]
