"""Opening image and label files that may be hostile: header checks before any pixel is decoded.

Data folders come from elsewhere, so a reader must not trust a file to be what its name says:

- a FIFO, a device or a folder named ``x.jpg`` would block the reader forever or stream without
  end: only regular files are opened (the open itself does not block, see :func:`open_regular`);
- a PNG of 150 bytes can claim 10000 x 10000 pixels and decode into 100 MB (a "decompression
  bomb"): PIL's ``Image.open`` reads the header only, so the size is checked against a pixel
  limit (``data.max_image_pixels``) before :meth:`PIL.Image.Image.load` allocates anything;
- PIL's own bomb errors and warnings and its "too large" errors of compressed chunks are turned
  into the project's :class:`~smp_parsing.data.errors.BadSampleError`, so that
  ``on_bad_sample=skip`` leaves such a sample out instead of crashing the run.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from smp_parsing.data.errors import BadSampleError

# 50 megapixels: 7000 x 7000, far above any MHP / COCO / CIHP image (under 8 MP), and 150 MB of
# RGB once decoded, which a worker can afford; raise it with data.max_image_pixels.
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000

# What PIL raises for a file that is not a (complete, sane) image.
PIL_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | Path) -> int:
    """Open ``path`` for reading if it is a regular file (symbolic links followed).

    ``O_NONBLOCK`` makes opening a FIFO return at once (a plain open waits for a writer, for
    ever); the file type is then checked on the open descriptor, so the file cannot be swapped
    between a check and the open. The flag has no effect on reads of a regular file.

    Returns:
        An open file descriptor (the caller closes it, e.g. through ``os.fdopen``).

    Raises:
        BadSampleError: when the file is missing, unreadable or not a regular file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise BadSampleError(path, f"cannot open ({exc.strerror or exc})") from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise BadSampleError(path, f"is {_file_kind(mode)}, not a regular file: refused")
    return fd


@contextmanager
def open_image(
    path: str | Path, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, what: str = "image"
) -> Iterator[Image.Image]:
    """Open an image lazily (header only) after checking its type and its pixel count.

    Args:
        path: The file.
        max_pixels: Largest ``width * height`` accepted, checked on the header.
        what: Word used in the error messages (``image``, ``annotation``).

    Yields:
        The :class:`PIL.Image.Image`, not decoded yet: decode inside the ``with`` block and
        catch :data:`PIL_ERRORS` around it (see :func:`decode`).

    Raises:
        BadSampleError: not a regular file, not an image, or more than ``max_pixels`` pixels.
    """
    fh = os.fdopen(open_regular(path), "rb")
    try:
        with warnings.catch_warnings():
            # Our limit is the one that counts: PIL's warning above its own (89 MP) default is
            # noise when data.max_image_pixels was raised on purpose; its error (2x) remains.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                image = Image.open(fh)
            except PIL_ERRORS as exc:
                raise BadSampleError(path, f"cannot read {what} ({exc})") from exc
        width, height = image.size
        if width * height > max_pixels:
            image.close()
            raise BadSampleError(
                path,
                f"{what} header claims {width}x{height} (WxH) = {width * height} pixels, over the "
                f"limit of {max_pixels} (data.max_image_pixels); not decoded",
            )
        with image:
            yield image
    finally:
        fh.close()


def decode(path: str | Path, image: Image.Image, mode: str | None = None, what: str = "image"):
    """Decode an image opened by :func:`open_image` (optionally converted to ``mode``).

    Returns:
        The decoded :class:`PIL.Image.Image`.

    Raises:
        BadSampleError: when the pixel data is truncated or corrupt.
    """
    try:
        image.load()
        return image.convert(mode) if mode is not None and image.mode != mode else image
    except PIL_ERRORS as exc:
        raise BadSampleError(path, f"cannot read {what} ({exc})") from exc


def read_image_size(
    path: str | Path, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, what: str = "image"
) -> tuple[int, int]:
    """``(height, width)`` of an image from its header (no pixel decoded).

    Raises:
        BadSampleError: as :func:`open_image`.
    """
    with open_image(path, max_pixels, what) as image:
        return image.height, image.width
