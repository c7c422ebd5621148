"""Reader for the sequence form of a dataset: ``<Name>.seq.txt`` + ``<Name>.meta.jsonl``.

``<Name>.seq.txt`` holds one user a line, ``userID item item ...`` in chronological order
with no timestamps: the position in the line is the order, so it is used as the timestamp.
``<Name>.meta.jsonl`` has the keys of Amazon's metadata (``asin``, ``title``,
``categories`` ...) and is read with the same parser as the raw metadata.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from recbole_bbqrec.preprocess.io_utils import LineTally, read_lines
from recbole_bbqrec.preprocess.records import clean_token


def expected_sequence_files(directory: Path, name: str) -> dict[str, Path]:
    return {"sequences": directory / f"{name}.seq.txt", "meta": directory / f"{name}.meta.jsonl"}


def read_sequences(path: Path, max_bad_fraction: float) -> tuple[pd.DataFrame, LineTally]:
    """(user, item, timestamp=position, order) rows; a line without any item is malformed.

    A user repeated on a later line continues their sequence (positions keep counting).
    """
    tally = LineTally(path, max_bad_fraction)
    users: list[str] = []
    items: list[str] = []
    times: list[float] = []
    next_position: dict[str, int] = {}
    for number, line in read_lines(path, tally):
        fields = line.split()
        if len(fields) < 2:
            tally.bad_line(number, line)
            continue
        tally.ok()
        user = clean_token(fields[0])
        start = next_position.get(user, 0)
        for offset, item in enumerate(fields[1:]):
            users.append(user)
            items.append(clean_token(item))
            times.append(float(start + offset))
        next_position[user] = start + len(fields) - 1
    tally.check()
    frame = pd.DataFrame(
        {"user": users, "item": items, "timestamp": pd.Series(times, dtype="float64")}
    )
    frame["order"] = range(len(frame))
    return frame, tally
