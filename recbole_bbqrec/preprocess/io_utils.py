"""Tolerant line reading shared by the preprocessing readers (atomic writes: ``atomic_io``).

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
import os
from dataclasses import dataclass, field
from pathlib import Path


from recbole_bbqrec.preprocess.errors import MalformedInputError


def open_text(path: str | os.PathLike):
    """Open a plain or gzip-compressed text file (McAuley ships both) for line reading."""
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


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
    notes: list[str] = field(default_factory=list)

    def ok(self) -> None:
        self.total += 1

    def bad_line(self, line_number: int, text: str) -> None:
        self.total += 1
        self.bad += 1
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

    def _first_bad(self) -> str:
        if self.first_bad_line is None:
            return ""
        return f"; first bad line {self.first_bad_line}: {self.first_bad_text!r}"
