"""Hostile files for the reader tests: PNG headers that lie about their size, FIFOs, a deadline."""

from __future__ import annotations

import signal
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def png_header_only(width: int, height: int, color_type: int = 2) -> bytes:
    """A PNG of a few dozen bytes whose IHDR claims ``width x height`` 8-bit pixels.

    ``color_type`` 2 is RGB, 0 grayscale. There is no pixel data: only a reader that trusts the
    header (and allocates the decoded image) is hurt by it.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail (instead of hanging the suite) when the block runs longer than ``seconds``."""

    def expired(signum, frame):
        raise TimeoutError(f"still blocked after {seconds} s (a FIFO opened for reading?)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def replace_with_fifo(path: Path) -> Path:
    """Replace ``path`` by a FIFO of the same name (reading it would block with no writer)."""
    import os

    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path
