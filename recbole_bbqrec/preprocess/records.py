"""Per-item metadata and how it becomes the text of each modality.

Amazon 2014 metadata (both McAuley's dump and the re-issue) has ``title``, ``description``,
``brand`` and ``categories`` (a list of category *paths*, each a list from root to leaf).
The BBQRec text modality is the item's title and description; brand and categories are
appended where present because the redistributed benchmark copies carry little else.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

_WHITESPACE = re.compile(r"\s+")


def clean_text(value: object) -> str:
    """Unescape HTML entities (``&amp;`` is common in Amazon titles) and squeeze whitespace."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):  # the 2018 re-issue stores descriptions as lists
        value = " ".join(str(v) for v in value if v is not None)
    return _WHITESPACE.sub(" ", html.unescape(str(value))).strip()


def clean_token(value: str) -> str:
    """Make a raw id safe as a RecBole token: no tabs/newlines (the field separator)."""
    return _WHITESPACE.sub("_", value.strip())


def parse_categories(record: dict) -> list[list[str]]:
    """Category paths from a metadata record, whichever of the known shapes it uses."""
    raw = record.get("categories", record.get("category"))
    if not raw or not isinstance(raw, (list, tuple)):
        return []
    if all(isinstance(x, str) for x in raw):  # one flat path (2018 format)
        raw = [raw]
    paths = []
    for path in raw:
        if not isinstance(path, (list, tuple)):
            continue
        cleaned = [clean_text(node) for node in path if clean_text(node)]
        if cleaned and cleaned not in paths:
            paths.append(cleaned)
    return paths


@dataclass
class ItemMeta:
    title: str = ""
    description: str = ""
    brand: str = ""
    categories: list[list[str]] = field(default_factory=list)

    @classmethod
    def from_record(cls, record: dict) -> "ItemMeta":
        return cls(
            title=clean_text(record.get("title")),
            description=clean_text(record.get("description")),
            brand=clean_text(record.get("brand")),
            categories=parse_categories(record),
        )

    def category_text(self) -> str:
        """``Beauty > Makeup > Nails; Beauty > Tools``: the category modality's text."""
        return "; ".join(" > ".join(path) for path in self.categories)

    def text(self) -> str:
        """The text modality: title, brand, categories, then description.

        The description goes last so that a model's max sequence length truncates it rather
        than the short, dense fields.
        """
        parts = [self.title]
        if self.brand:
            parts.append(f"Brand: {self.brand}")
        if self.categories:
            parts.append(f"Categories: {self.category_text()}")
        parts.append(self.description)
        return ". ".join(p.rstrip(". ") for p in parts if p.strip(". "))

    def category_tokens(self) -> list[str]:
        """Leaf category names as RecBole tokens (spaces -> '_', quotes dropped), deduplicated."""
        tokens: list[str] = []
        for path in self.categories:
            token = clean_token(path[-1]).replace('"', "")
            if token and token not in tokens:
                tokens.append(token)
        return tokens
