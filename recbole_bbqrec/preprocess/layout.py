"""The on-disk layout the pipeline writes, and the check that it is complete.

Under ``<out_dir>/<Name>/``:

* ``<Name>.inter``  RecBole atomic file ``user_id:token item_id:token timestamp:float``,
  sorted by user then time;
* ``<Name>.item``   ``item_id:token`` [+ ``categories:token_seq``, leaf category names];
* ``<Name>.item_ids.txt``  one raw item token a line: the row order of every matrix below;
* ``<Name>.<modality>.npy`` float32 [n_items, dim] and ``<Name>.<modality>.mask.npy`` bool
  [n_items] (False = the item lacks this modality; its row is zeros);
* ``<Name>.stats.json``  written last: its presence, with matching counts, marks the
  dataset as ready.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from recbole_bbqrec.atomic_io import atomic_save_npy, atomic_write_json, atomic_write_lines

KNOWN_MODALITIES = ("text", "category", "image")


def dataset_dir(out_dir: str | Path, name: str) -> Path:
    return Path(out_dir) / name


def output_file(out_dir: str | Path, name: str, suffix: str) -> Path:
    """``output_file("dataset", "Beauty", "text.npy")`` -> dataset/Beauty/Beauty.text.npy"""
    return dataset_dir(out_dir, name) / f"{name}.{suffix}"


def _timestamps_as_text(timestamps: pd.Series) -> pd.Series:
    values = timestamps.to_numpy(dtype=np.float64)
    if np.all(values == np.floor(values)) and np.all(np.abs(values) < 2**53):
        return pd.Series(values.astype(np.int64), index=timestamps.index).astype(str)
    return timestamps.map(repr)


def write_dataset(
    out_dir: str | Path,
    name: str,
    interactions: pd.DataFrame,
    item_tokens: list[str],
    item_categories: list[list[str]] | None,
    modalities: dict[str, tuple[np.ndarray, np.ndarray]],
    stats: dict,
) -> None:
    """Write every output atomically; the stats file goes last (and is removed first)."""
    folder = dataset_dir(out_dir, name)
    folder.mkdir(parents=True, exist_ok=True)
    # A rerun that dies half-way must not look ready with a stale stats file.
    output_file(out_dir, name, "stats.json").unlink(missing_ok=True)
    for modality in KNOWN_MODALITIES:
        if modality not in modalities:  # left over from an earlier run with other inputs
            output_file(out_dir, name, f"{modality}.npy").unlink(missing_ok=True)
            output_file(out_dir, name, f"{modality}.mask.npy").unlink(missing_ok=True)

    for modality, (matrix, mask) in modalities.items():
        assert matrix.shape[0] == mask.shape[0] == len(item_tokens)
        atomic_save_npy(output_file(out_dir, name, f"{modality}.npy"), matrix.astype(np.float32))
        atomic_save_npy(output_file(out_dir, name, f"{modality}.mask.npy"), mask.astype(bool))
    atomic_write_lines(output_file(out_dir, name, "item_ids.txt"), item_tokens)

    if item_categories is not None:
        item_lines = ["item_id:token\tcategories:token_seq"] + [
            f"{token}\t{' '.join(cats)}" for token, cats in zip(item_tokens, item_categories)
        ]
    else:
        item_lines = ["item_id:token"] + list(item_tokens)
    atomic_write_lines(output_file(out_dir, name, "item"), item_lines)

    rows = interactions["user"] + "\t" + interactions["item"] + "\t" + _timestamps_as_text(interactions["timestamp"])
    atomic_write_lines(
        output_file(out_dir, name, "inter"),
        ["user_id:token\titem_id:token\ttimestamp:float"] + rows.tolist(),
    )
    atomic_write_json(output_file(out_dir, name, "stats.json"), stats)


def dataset_ready(name: str, out_dir: str | Path = "dataset") -> bool:
    """True when a finished run's files are all there and agree with its stats file."""
    stats_path = output_file(out_dir, name, "stats.json")
    try:
        stats = json.loads(stats_path.read_text(encoding="utf-8"))
        n_items = int(stats["items"])
        ids = output_file(out_dir, name, "item_ids.txt").read_text(encoding="utf-8").splitlines()
        if len(ids) != n_items:
            return False
        for suffix in ("inter", "item"):
            if not output_file(out_dir, name, suffix).is_file():
                return False
        dims = stats.get("feature_dims") or {}
        for modality in stats["coverage"]:
            matrix = np.load(output_file(out_dir, name, f"{modality}.npy"), mmap_mode="r")
            mask = np.load(output_file(out_dir, name, f"{modality}.mask.npy"), mmap_mode="r")
            if matrix.ndim != 2 or matrix.shape[0] != n_items or mask.shape != (n_items,):
                return False
            if modality in dims and matrix.shape[1] != int(dims[modality]):
                return False  # another run's matrix (e.g. another text model's width)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True
