"""Exceptions of the preprocessing pipeline; each message says what to do about it."""

from __future__ import annotations


class RawDataNotFoundError(FileNotFoundError):
    """The raw files of a dataset are nowhere to be found; the message lists every path tried."""


class MalformedInputError(ValueError):
    """An input file has more malformed lines than ``max_bad_fraction`` allows."""


class FeatureWidthError(ValueError):
    """A feature file's record width does not match the expected one (both widths are named)."""


class LowCoverageError(MalformedInputError):
    """Too few items have metadata (a cut or wrong meta file); the numbers are in the message."""
