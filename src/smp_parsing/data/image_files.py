"""Reading image and label files, which may be hostile: header checks before any pixel is decoded.

Every reader reads its pixels here: :func:`read_image` (RGB images), :func:`read_label_png`
(one map of class ids: a one-channel PNG, or one channel of an RGB(A) PNG), :func:`read_image_size`
(the header only); ``predict`` reads its input images here too (:func:`read_image` with
``exif_transpose=True``), with the same checks.

EXIF orientation: a camera stores a photo's pixels as the sensor saw them and records in the
EXIF ``Orientation`` tag how to turn them upright. The data sets read the **stored** pixel grid
(their annotation PNGs index the stored pixels: MHP v2, CIHP and DensePose-COCO annotations were
drawn on it, and a label whose size differs from its image is already an error); ``predict``
turns a photo upright first, so a phone picture is parsed as a person sees it.

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

import numpy as np
from PIL import Image, ImageOps

from smp_parsing.data.errors import BadSampleError

# 50 megapixels: 7000 x 7000, far above any MHP / COCO / CIHP image (under 8 MP), and 150 MB of
# RGB once decoded, which a worker can afford; raise it with data.max_image_pixels.
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000

# Images a data set reader finds by suffix in an images folder: what the layouts hold (MHP v2,
# CIHP and COCO ship JPEG; the generated sets JPEG or PNG). Anything else in the folder is not
# part of the data set, and an id must not silently resolve to a second file with its stem.
DATASET_IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png")
# Images ``predict`` takes from a user's folder: the data sets' formats plus BMP (screenshots,
# old cameras), which PIL reads with the same header checks.
PREDICT_IMAGE_SUFFIXES: tuple[str, ...] = (*DATASET_IMAGE_SUFFIXES, ".bmp")

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


def read_image(
    path: str | Path, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, exif_transpose: bool = False
) -> np.ndarray:
    """Decode an image file as RGB, after checking its header.

    PIL is used rather than OpenCV because it raises on truncated files instead of returning a
    partly grey image with only a message on stderr.

    Args:
        path: The image file.
        max_pixels: Largest ``width * height`` decoded (``data.max_image_pixels``).
        exif_transpose: Turn the image upright by its EXIF ``Orientation`` tag (``predict``:
            a photo as a person sees it). ``False`` (the data sets): the stored pixel grid,
            which their annotations index (see the module docstring).

    Returns:
        ``H x W x 3`` uint8 RGB array (``H x W`` after the EXIF turn when ``exif_transpose``).

    Raises:
        BadSampleError: when the file is missing, not a regular file, truncated, not an image,
            larger than ``max_pixels`` or (``exif_transpose``) has an unreadable EXIF block.
    """
    with open_image(path, max_pixels) as image:
        decoded = decode(path, image)
        if exif_transpose:
            try:
                decoded = ImageOps.exif_transpose(decoded)  # a copy when there is nothing to do
            except PIL_ERRORS as exc:
                raise BadSampleError(path, f"cannot read image EXIF orientation ({exc})") from exc
        return np.asarray(decode(path, decoded, "RGB"))  # the conversion's errors named too


def read_label_png(
    path: str | Path,
    expected_size: tuple[int, int] | None = None,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    reference: str = "the image",
    what: str = "annotation",
    rgb_channel: int | None = 0,
) -> np.ndarray:
    """Read a label PNG and return its class ids, its size checked on the header first.

    Args:
        path: The PNG.
        expected_size: ``(H, W)`` the map must have, checked on the header before decoding
            (a label that claims another size is not decoded at all).
        max_pixels: Largest ``width * height`` decoded.
        reference: Names what ``expected_size`` comes from, in the error message.
        what: Names the file in the error messages (``annotation``, ``label file``).
        rgb_channel: The channel of an RGB(A) PNG that holds the ids (MHP v2: 0, the R channel;
            reading it as grey would give ``0.299 R + 0.587 G + 0.114 B``); ``None`` refuses
            RGB(A) files (CIHP: the colour renderings are not labels).

    Returns:
        ``H x W`` uint8: the stored values of a grey (``L``) PNG, the palette **indices** of a
        ``P`` PNG (never the palette colours), or channel ``rgb_channel`` of an RGB(A) PNG.

    Raises:
        BadSampleError: when the file cannot be decoded, has another size than
            ``expected_size``, more than ``max_pixels`` pixels, or a mode not accepted
            (RGB(A) with ``rgb_channel=None``, 16-bit, grey + alpha ...).
    """
    with open_image(path, max_pixels, what=what) as label:
        if expected_size is not None and (label.height, label.width) != tuple(expected_size):
            height, width = expected_size
            raise BadSampleError(
                path,
                f"{what.removesuffix(' file')} size {label.width}x{label.height} (WxH) differs "
                f"from {reference} size {width}x{height}",
            )
        if label.mode in ("L", "P"):
            # PIL keeps a P image as its indices: np.asarray never applies the palette.
            return np.asarray(decode(path, label, what=what))
        if label.mode in ("RGB", "RGBA"):
            if rgb_channel is None:
                raise BadSampleError(
                    path,
                    f"{what} is {label.mode}; the labels are one-channel index PNGs (8-bit grey "
                    "or palette), colour renderings are not labels",
                )
            return np.asarray(decode(path, label, what=what).getchannel(rgb_channel))
        raise BadSampleError(path, f"{what} has unsupported PNG mode {label.mode!r}")
