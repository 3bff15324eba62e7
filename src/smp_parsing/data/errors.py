"""Errors and the bad-sample policy shared by the data set readers.

A bad input must never turn into a silently wrong sample: by default the reader raises an error that
names the file and the problem; with ``on_bad_sample="skip"`` it logs a warning, counts the sample
and leaves it out (the reader returns ``None`` and :func:`smp_parsing.data.collate.collate_parsing`
drops it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

BadSamplePolicy = Literal["error", "skip"]
BAD_SAMPLE_POLICIES: tuple[str, ...] = ("error", "skip")


class BadSampleError(ValueError):
    """A sample whose files cannot be used as they are.

    Attributes:
        path: The offending file.
        problem: What is wrong with it, in words.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class DataRootError(FileNotFoundError):
    """A data set root that is missing or does not have the expected layout."""


def check_policy(on_bad_sample: str) -> BadSamplePolicy:
    """Validate an ``on_bad_sample`` value.

    Raises:
        ValueError: when the value is neither ``"error"`` nor ``"skip"``.
    """
    if on_bad_sample not in BAD_SAMPLE_POLICIES:
        raise ValueError(
            f"on_bad_sample must be one of {BAD_SAMPLE_POLICIES}, got {on_bad_sample!r}"
        )
    return on_bad_sample  # type: ignore[return-value]


class BadSampleTracker:
    """Applies the bad-sample policy and counts what was left out.

    Each DataLoader worker holds its own copy, so the counts are per process; every skipped sample
    is also logged as a warning with its file name, which is what makes the skip visible.

    Args:
        policy: ``"error"`` raises, ``"skip"`` warns and counts.
        logger: Where warnings go.
    """

    def __init__(self, policy: str, logger: logging.Logger) -> None:
        self.policy = check_policy(policy)
        self.logger = logger
        self.problems: list[BadSampleError] = []

    @property
    def num_skipped(self) -> int:
        """Number of samples (or files) left out so far."""
        return len(self.problems)

    def report(self, error: BadSampleError) -> None:
        """Raise ``error`` under the ``error`` policy, else warn, count and remember it."""
        if self.policy == "error":
            raise error
        self.problems.append(error)
        self.logger.warning("skipping bad sample (%d so far): %s", self.num_skipped, error)
