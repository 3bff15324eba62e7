"""The data sets the project knows: each reader module registers its label space and reader here.

A data set is a plug-in. Its reader module defines the class names and left/right flip pairs next
to the reader and registers them with :func:`register_dataset`; ``conf/data/<name>.yaml`` sets
``dataset_name: <name>``. Everything that needs a label space (the transforms' flip class swap,
the data module, the visualiser, the checkpoint metadata) asks :func:`get_dataset_spec` (or
:func:`smp_parsing.metadata.get_dataset_meta`), and the data module asks the spec's
``check_root`` whether a split's files are there, so no generic code branches on names.

The built-in readers register when their module is imported; :func:`get_dataset_spec` imports
them on the first unknown name, so a light user (the metric CLI, the visualiser) pays only for
what it looks up. A data set defined elsewhere registers when its module is imported, which Hydra
does when it resolves the reader's ``_target_``.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from smp_parsing.data.errors import DataRootError
from smp_parsing.metadata import DatasetMeta

# Modules whose import registers the built-in data sets (loaded on the first unknown name).
BUILTIN_MODULES: tuple[str, ...] = (
    "smp_parsing.data.mhp",
    "smp_parsing.data.densepose",
    "smp_parsing.data.cihp",
    "smp_parsing.data.synthetic",
)

# required_paths(split, **reader keywords) -> the paths a split needs on disk
RequiredPaths = Callable[..., list[Path]]


@dataclass(frozen=True)
class DatasetSpec:
    """One registered data set.

    Attributes:
        name: The config name (``data.dataset_name``).
        classes: Class names, index = class id, 0 = background.
        flip_pairs: Pairs of class ids swapped by a horizontal flip.
        reader: The :class:`~smp_parsing.data.base.ParsingDataset` subclass that reads it.
        required_paths: ``required_paths(split, **reader_keywords)`` -> what a split needs on
            disk (the reader's classmethod); ``None``: nothing to check.
        layout_help: The expected layout on disk, shown with what is missing.
    """

    name: str
    classes: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    reader: type | None = None
    required_paths: RequiredPaths | None = None
    layout_help: str = ""

    @functools.cached_property
    def meta(self) -> DatasetMeta:
        """The label space as a :class:`~smp_parsing.metadata.DatasetMeta` (one object per spec)."""
        return DatasetMeta(self.name, self.classes, self.flip_pairs)

    def missing(self, split: str, /, **reader_keywords: Any) -> list[Path]:
        """What ``split`` needs on disk and lacks, for a reader built with ``reader_keywords``."""
        if self.required_paths is None:
            return []
        return [p for p in self.required_paths(split, **reader_keywords) if not Path(p).exists()]

    def check_root(self, split: str, /, **reader_keywords: Any) -> None:
        """Cheap existence checks of what a split's reader would open (nothing is read).

        Args:
            split: The split being prepared (``train``, ``val``, ``test``); a ``split`` among
                ``reader_keywords`` (the config's) takes precedence.
            **reader_keywords: The reader's arguments from the config (``root``, ``ann_file``...).

        Raises:
            DataRootError: naming every missing path and the layout the reader expects.
        """
        missing = self.missing(reader_keywords.pop("split", split), **reader_keywords)
        if missing:
            raise DataRootError(
                f"{self.name} {split} data not found: missing {', '.join(map(str, missing))}\n"
                f"{self.layout_help}"
            )


_REGISTRY: dict[str, DatasetSpec] = {}
_builtins_loaded = False


def register(spec: DatasetSpec, replace: bool = False) -> DatasetSpec:
    """Add ``spec`` to the registry.

    Raises:
        ValueError: when another spec already has that name (and ``replace`` is off): two data
            sets must not share a name silently.
    """
    known = _REGISTRY.get(spec.name)
    if known is not None and known != spec and not replace:
        raise ValueError(f"data set {spec.name!r} is already registered ({known.reader})")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a data set (tests that register a toy one clean up with this)."""
    _REGISTRY.pop(name, None)


T = TypeVar("T", bound=type)


def register_dataset(
    name: str,
    classes: Sequence[str],
    flip_pairs: Sequence[Sequence[int]] = (),
    replace: bool = False,
) -> Callable[[T], T]:
    """Class decorator: register a reader under ``name`` with its label space.

    The reader's ``required_paths(split, **keywords)`` classmethod and ``layout_help`` (see
    :class:`~smp_parsing.data.base.ParsingDataset`) become the spec's: its
    :meth:`DatasetSpec.check_root` names what is missing and the layout expected.
    """

    def decorate(reader: T) -> T:
        register(
            DatasetSpec(
                name,
                tuple(classes),
                tuple((int(a), int(b)) for a, b in flip_pairs),
                reader,
                getattr(reader, "required_paths", None),
                getattr(reader, "layout_help", ""),
            ),
            replace=replace,
        )
        return reader

    return decorate


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
        _builtins_loaded = True


def get_dataset_spec(name: str) -> DatasetSpec:
    """The registered data set ``name``.

    Raises:
        KeyError: with the known names, when ``name`` is unknown.
    """
    if name not in _REGISTRY:
        _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown data set {name!r}; known: {sorted(_REGISTRY)}") from None


def dataset_names() -> list[str]:
    """Names of every registered data set (built-ins included), sorted."""
    _load_builtins()
    return sorted(_REGISTRY)
