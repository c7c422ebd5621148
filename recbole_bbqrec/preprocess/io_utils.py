"""Line reading shared by the preprocessing readers (atomic writes: ``atomic_io``).

Lines are decoded strictly as UTF-8: a line with undecodable bytes is a malformed line (file
and line number reported, counted against ``max_bad_fraction``), never silently patched with
U+FFFD (which used to change item and user IDs without a word).

Every output of the pipeline goes through :func:`atomic_path`: the bytes are written to a
temporary file in the *same* folder (so ``os.replace`` is a rename on one file system, which
is atomic on POSIX and Windows) and only renamed onto the target once fully written and
flushed.  An exception or a kill in the middle leaves the old target (or nothing) in place,
never a truncated file.
"""

from __future__ import annotations

import ast
import gzip
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


from recbole_bbqrec.preprocess.errors import MalformedInputError


def open_binary(path: str | os.PathLike):
    """Open a plain or gzip-compressed file (McAuley ships both) for reading bytes."""
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def read_lines(path: str | os.PathLike, tally: "LineTally") -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of every non-empty line decoded as UTF-8; a line that does not
    decode is tallied as malformed (with its number) and skipped."""
    with open_binary(path) as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                tally.bad_line(number, f"undecodable bytes at column {err.start + 1}: "
                                       f"{raw[max(0, err.start - 20):err.start + 20]!r}")
                continue
            if line.strip():
                yield number, line


def parse_record(line: str) -> dict | None:
    """Parse one metadata/review line: strict JSON first, then a Python literal.

    McAuley's original 2014 dumps are Python ``repr`` dicts (single quotes), the re-issue is
    JSON. ``ast.literal_eval`` only builds literals, so a hostile line cannot run code.
    Returns ``None`` for anything that is not a dict.
    """
    try:
        obj = json.loads(line)
    except ValueError:
        try:
            obj = ast.literal_eval(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            return None
    return obj if isinstance(obj, dict) else None


@dataclass
class LineTally:
    """Counts malformed lines of one input file and enforces ``max_bad_fraction``."""

    path: Path
    max_bad_fraction: float
    total: int = 0
    bad: int = 0
    first_bad_line: int | None = None
    first_bad_text: str = ""
    bad_line_numbers: list[int] = field(default_factory=list)  # the first MAX_LISTED
    duplicate_records: int = 0  # metadata only: records of an item after its first
    notes: list[str] = field(default_factory=list)

    MAX_LISTED = 20

    def ok(self) -> None:
        self.total += 1

    def bad_line(self, line_number: int, text: str) -> None:
        self.total += 1
        self.bad += 1
        if len(self.bad_line_numbers) < self.MAX_LISTED:
            self.bad_line_numbers.append(line_number)
        if self.first_bad_line is None:
            self.first_bad_line = line_number
            self.first_bad_text = text.strip()[:120]

    def check(self) -> None:
        """Raise when too many lines were malformed (or nothing usable was read)."""
        if self.total == 0 or self.total == self.bad:
            raise MalformedInputError(
                f"{self.path}: no usable records ({self.bad} malformed of {self.total} non-empty "
                f"lines{self._first_bad()}). Is this the right file?"
            )
        fraction = self.bad / self.total
        if fraction > self.max_bad_fraction:
            raise MalformedInputError(
                f"{self.path}: {self.bad} of {self.total} lines are malformed "
                f"({fraction:.2%} > max_bad_fraction {self.max_bad_fraction:.2%}){self._first_bad()}. "
                "Repair the file, or pass a larger --max_bad_fraction to skip them."
            )
        if self.bad:
            logging.getLogger(__name__).warning(
                "%s; skipped (within max_bad_fraction %.2f%%)", self.summary(),
                100 * self.max_bad_fraction)

    def summary(self) -> str:
        """``'<file>: 3 of 120 lines malformed (lines 4, 9, 17)'`` for the log and the stats."""
        more = ", ..." if self.bad > len(self.bad_line_numbers) else ""
        lines = ", ".join(str(n) for n in self.bad_line_numbers)
        return f"{self.path}: {self.bad} of {self.total} lines malformed (lines {lines}{more})"

    def _first_bad(self) -> str:
        if self.first_bad_line is None:
            return ""
        return f"; first bad line {self.first_bad_line}: {self.first_bad_text!r}"
