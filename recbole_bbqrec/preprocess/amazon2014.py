"""Readers for the Amazon 2014 review data as McAuley distributes it.

* reviews: ``reviews_<Cat>_5.json(.gz)``, one object a line with ``reviewerID``, ``asin``,
  ``unixReviewTime`` (JSON in the re-issue, a Python dict literal in the original dump);
* ratings: ``ratings_<Cat>.csv``, no header, ``user,item,rating,timestamp``;
* metadata: ``meta_<Cat>.json(.gz)``, one object a line with ``asin``, ``title``,
  ``description``, ``brand``, ``categories`` (Python literals or JSON);
* image features: ``image_features_<Cat>.b`` (see :mod:`.image_features`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from recbole_bbqrec.preprocess.io_utils import LineTally, parse_record, read_lines
from recbole_bbqrec.preprocess.records import ItemMeta, clean_token

_log = logging.getLogger(__name__)

# Short benchmark names -> McAuley's file-name category names.
CATEGORY_ALIASES: dict[str, list[str]] = {
    "Sports": ["Sports_and_Outdoors"],
    "Toys": ["Toys_and_Games"],
    "Clothing": ["Clothing_Shoes_and_Jewelry"],
    "Home": ["Home_and_Kitchen"],
    "Health": ["Health_and_Personal_Care"],
    "CDs": ["CDs_and_Vinyl"],
    "Phones": ["Cell_Phones_and_Accessories"],
    "Cell_Phones": ["Cell_Phones_and_Accessories"],
    "Games": ["Video_Games"],
    "Tools": ["Tools_and_Home_Improvement"],
    "Office": ["Office_Products"],
    "Pet": ["Pet_Supplies"],
    "Grocery": ["Grocery_and_Gourmet_Food"],
    "Instruments": ["Musical_Instruments"],
}


def category_names(name: str) -> list[str]:
    return [name] + [a for a in CATEGORY_ALIASES.get(name, []) if a != name]


def expected_raw_files(directory: Path, name: str) -> dict[str, list[Path]]:
    """Every file name the raw McAuley layout may use for ``name``, by role, in preference order."""
    roles: dict[str, list[Path]] = {"reviews": [], "ratings": [], "meta": [], "image": []}
    for cat in category_names(name):
        for stem in (f"reviews_{cat}_5", f"reviews_{cat}"):
            roles["reviews"] += [directory / f"{stem}.json.gz", directory / f"{stem}.json"]
        roles["ratings"].append(directory / f"ratings_{cat}.csv")
        roles["meta"] += [directory / f"meta_{cat}.json.gz", directory / f"meta_{cat}.json"]
        roles["image"].append(directory / f"image_features_{cat}.b")
    return roles


def first_existing(paths: list[Path]) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


def _review_time(record: dict) -> float | None:
    value = record.get("unixReviewTime")
    if value is not None:
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    text = record.get("reviewTime")  # e.g. "01 30, 2014" when the unix time is missing
    if isinstance(text, str):
        try:
            day = datetime.strptime(text.strip(), "%m %d, %Y").replace(tzinfo=timezone.utc)
        except ValueError:
            return None
        return day.timestamp()
    return None


def _frame(users: list[str], items: list[str], times: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {"user": users, "item": items, "timestamp": pd.Series(times, dtype="float64")}
    ).assign(order=lambda f: range(len(f)))


def _read_interactions(path: Path, max_bad_fraction: float,
                       parse_line: Callable[[str], tuple[str, str, float] | None],
                       ) -> tuple[pd.DataFrame, LineTally]:
    """(user, item, timestamp, order) rows of a line-per-interaction file; a line that
    ``parse_line`` rejects (returns None) is tallied as malformed."""
    tally = LineTally(path, max_bad_fraction)
    users: list[str] = []
    items: list[str] = []
    times: list[float] = []
    for number, line in read_lines(path, tally):
        row = parse_line(line)
        if row is None:
            tally.bad_line(number, line)
            continue
        tally.ok()
        users.append(clean_token(row[0]))
        items.append(clean_token(row[1]))
        times.append(row[2])
    tally.check()
    return _frame(users, items, times), tally


def _review_row(line: str) -> tuple[str, str, float] | None:
    record = parse_record(line)
    user = record.get("reviewerID") if record else None
    item = record.get("asin") if record else None
    when = _review_time(record) if record else None
    if not (isinstance(user, str) and isinstance(item, str) and user.strip()
            and item.strip() and when is not None):
        return None
    return user, item, when


def _rating_row(line: str) -> tuple[str, str, float] | None:
    fields = line.rstrip("\r\n").split(",")
    try:
        if len(fields) != 4 or not fields[0].strip() or not fields[1].strip():
            return None
        float(fields[2])  # the rating must parse even though it is not kept
        return fields[0], fields[1], float(fields[3])
    except ValueError:
        return None


def read_reviews(path: Path, max_bad_fraction: float) -> tuple[pd.DataFrame, LineTally]:
    """(user, item, timestamp, order) rows of a reviews file; malformed lines are tallied."""
    return _read_interactions(path, max_bad_fraction, _review_row)


def read_ratings_csv(path: Path, max_bad_fraction: float) -> tuple[pd.DataFrame, LineTally]:
    """(user, item, timestamp, order) rows of a headerless ``user,item,rating,timestamp`` CSV."""
    return _read_interactions(path, max_bad_fraction, _rating_row)


_ASIN_FIELD = re.compile(r"""['"]asin['"]\s*:\s*['"]([^'"]+)['"]""")


def read_meta(
    path: Path, wanted: set[str], max_bad_fraction: float
) -> tuple[dict[str, ItemMeta], LineTally]:
    """Metadata of the items in ``wanted``; for a repeated asin the first record wins, with
    a warning giving the count (``tally.duplicate_records``, also in the stats).

    Lines whose ``asin`` field is visibly for an unwanted item are skipped without a full
    parse: the full-category dumps hold millions of items and ``ast.literal_eval`` is slow.
    They still count as lines; malformed ones among them go unnoticed, which is harmless.
    """
    tally = LineTally(path, max_bad_fraction)
    meta: dict[str, ItemMeta] = {}
    repeats: dict[str, int] = {}  # wanted asin -> records after its first
    for number, line in read_lines(path, tally):
        quick = _ASIN_FIELD.search(line[:300])
        if quick and clean_token(quick.group(1)) not in wanted:
            tally.ok()
            continue
        record = parse_record(line)
        asin = record.get("asin") if record else None
        if not isinstance(asin, str) or not asin.strip():
            tally.bad_line(number, line)
            continue
        tally.ok()
        asin = clean_token(asin)
        if asin not in wanted:
            continue
        if asin in meta:
            repeats[asin] = repeats.get(asin, 0) + 1
        else:
            meta[asin] = ItemMeta.from_record(record)
    tally.check()
    tally.duplicate_records = sum(repeats.values())
    if repeats:
        _log.warning("%s: %d item(s) have more than one metadata record (%d extra records, e.g. "
                     "%s); the first record of each is used, later ones are ignored.", path,
                     len(repeats), tally.duplicate_records, sorted(repeats)[:5])
    return meta, tally
