"""Write a preprocessed dataset atomically, and check that a written one is complete.

The file names are ``recbole_bbqrec.layout``'s (``<Name>.inter``, ``.item``,
``.item_ids.txt``, ``.<modality>.npy`` + ``.<modality>.mask.npy``, ``.stats.json`` last).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from recbole_bbqrec.atomic_io import atomic_save_npy, atomic_write_json, atomic_write_lines
from recbole_bbqrec.layout import (INTER, ITEM, ITEM_IDS, STATS, dataset_dir, feature_suffix,
                                   mask_suffix, output_file)

KNOWN_MODALITIES = ("text", "category", "image")


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
    output_file(out_dir, name, STATS).unlink(missing_ok=True)
    for modality in KNOWN_MODALITIES:
        if modality not in modalities:  # left over from an earlier run with other inputs
            output_file(out_dir, name, feature_suffix(modality)).unlink(missing_ok=True)
            output_file(out_dir, name, mask_suffix(modality)).unlink(missing_ok=True)

    for modality, (matrix, mask) in modalities.items():
        assert matrix.shape[0] == mask.shape[0] == len(item_tokens)
        atomic_save_npy(output_file(out_dir, name, feature_suffix(modality)), matrix.astype(np.float32))
        atomic_save_npy(output_file(out_dir, name, mask_suffix(modality)), mask.astype(bool))
    atomic_write_lines(output_file(out_dir, name, ITEM_IDS), item_tokens)

    if item_categories is not None:
        item_lines = ["item_id:token\tcategories:token_seq"] + [
            f"{token}\t{' '.join(cats)}" for token, cats in zip(item_tokens, item_categories)
        ]
    else:
        item_lines = ["item_id:token"] + list(item_tokens)
    atomic_write_lines(output_file(out_dir, name, ITEM), item_lines)

    rows = interactions["user"] + "\t" + interactions["item"] + "\t" + _timestamps_as_text(interactions["timestamp"])
    atomic_write_lines(
        output_file(out_dir, name, INTER),
        ["user_id:token\titem_id:token\ttimestamp:float"] + rows.tolist(),
    )
    atomic_write_json(output_file(out_dir, name, STATS), stats)


def dataset_ready(name: str, out_dir: str | Path = "dataset") -> bool:
    """True when a finished run's files are all there and agree with its stats file."""
    stats_path = output_file(out_dir, name, STATS)
    try:
        stats = json.loads(stats_path.read_text(encoding="utf-8"))
        n_items = int(stats["items"])
        ids = output_file(out_dir, name, ITEM_IDS).read_text(encoding="utf-8").splitlines()
        if len(ids) != n_items:
            return False
        for suffix in (INTER, ITEM):
            if not output_file(out_dir, name, suffix).is_file():
                return False
        dims = stats.get("feature_dims") or {}
        for modality in stats["coverage"]:
            matrix = np.load(output_file(out_dir, name, feature_suffix(modality)), mmap_mode="r")
            mask = np.load(output_file(out_dir, name, mask_suffix(modality)), mmap_mode="r")
            if matrix.ndim != 2 or matrix.shape[0] != n_items or mask.shape != (n_items,):
                return False
            if modality in dims and matrix.shape[1] != int(dims[modality]):
                return False  # another run's matrix (e.g. another text model's width)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True
