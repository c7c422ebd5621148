"""ml-100k, read from the copy RecBole ships inside its wheel (no download, no raw_dir).

``recbole/dataset_example/ml-100k/`` has ``ml-100k.inter`` (``user_id:token item_id:token
rating:float timestamp:float``) and ``ml-100k.item`` (``item_id:token movie_title:token_seq
release_year:token class:token_seq``). The text modality is title (year) plus genres.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from recbole_bbqrec.preprocess.errors import RawDataNotFoundError
from recbole_bbqrec.preprocess.records import ItemMeta

ML100K = "ml-100k"


def ml100k_dir() -> Path:
    import recbole

    return Path(recbole.__file__).resolve().parent / "dataset_example" / ML100K


def _column(frame: pd.DataFrame, field: str, path: Path) -> pd.Series:
    """The column whose header is ``field:<type>``; error naming the headers otherwise."""
    for header in frame.columns:
        if header.split(":")[0] == field:
            return frame[header]
    raise ValueError(f"{path}: no column '{field}:...' in header {list(frame.columns)}")


def read_ml100k(directory: Path | None = None) -> tuple[pd.DataFrame, dict[str, ItemMeta], Path]:
    """(interactions with user,item,timestamp,order; item metadata; the directory read)."""
    directory = directory or ml100k_dir()
    inter_path = directory / f"{ML100K}.inter"
    item_path = directory / f"{ML100K}.item"
    missing = [str(p) for p in (inter_path, item_path) if not p.is_file()]
    if missing:
        raise RawDataNotFoundError(
            f"ml-100k files not found: {', '.join(missing)}. They ship with recbole==1.2.1 "
            "under recbole/dataset_example/ml-100k/; reinstall recbole."
        )
    inter = pd.read_csv(inter_path, sep="\t", dtype=str, keep_default_na=False)
    frame = pd.DataFrame(
        {
            "user": _column(inter, "user_id", inter_path).to_numpy(),
            "item": _column(inter, "item_id", inter_path).to_numpy(),
            "timestamp": _column(inter, "timestamp", inter_path).astype("float64").to_numpy(),
        }
    )
    frame["order"] = range(len(frame))

    items = pd.read_csv(item_path, sep="\t", dtype=str, keep_default_na=False)
    ids = _column(items, "item_id", item_path)
    titles = _column(items, "movie_title", item_path)
    years = _column(items, "release_year", item_path)
    genres = _column(items, "class", item_path)
    meta: dict[str, ItemMeta] = {}
    for item_id, title, year, genre in zip(ids, titles, years, genres):
        full_title = f"{title.strip()} ({year.strip()})" if year.strip() else title.strip()
        meta[item_id] = ItemMeta(title=full_title, categories=[[g] for g in genre.split()])
    return frame, meta, directory
