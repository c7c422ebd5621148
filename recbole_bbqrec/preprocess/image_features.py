"""Reader for Amazon's visual features, ``image_features_<Cat>.b``.

The file is a plain sequence of records: a 10-byte ASCII ASIN followed by ``dim``
little-endian float32 values (``dim`` = 4096, the CNN features of McAuley et al.). The
files run to gigabytes, so they are memory-mapped and walked in chunks, keeping only the
rows of items in the dataset.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from recbole_bbqrec.preprocess.errors import FeatureWidthError
from recbole_bbqrec.atomic_io import atomic_path

AMAZON_IMAGE_DIM = 4096
ASIN_BYTES = 10
_log = logging.getLogger(__name__)


def record_bytes(dim: int) -> int:
    return ASIN_BYTES + 4 * dim


def _looks_like_asin(raw: bytes) -> bool:
    return len(raw) == ASIN_BYTES and raw.isascii() and raw.decode("ascii").isalnum()


def infer_dim(path: Path, max_dim: int = 65536) -> int | None:
    """The float count per record that makes the file a whole number of ASIN-led records."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(record_bytes(max_dim) + ASIN_BYTES)
    if not _looks_like_asin(head[:ASIN_BYTES]):
        return None
    for width in range(ASIN_BYTES + 4, min(size, record_bytes(max_dim)) + 1, 4):
        if size % width:
            continue
        if width == size or _looks_like_asin(head[width:width + ASIN_BYTES]):
            return (width - ASIN_BYTES) // 4
    return None


def _width_error(path: Path, dim: int, problem: str) -> FeatureWidthError:
    actual = infer_dim(path)
    found = (
        f"the file looks like {actual} floats per record ({record_bytes(actual)} bytes)"
        if actual is not None
        else "no record width fits the file"
    )
    return FeatureWidthError(
        f"{path}: {problem}; expected {dim} floats per record ({record_bytes(dim)} bytes = "
        f"{ASIN_BYTES}-byte ASIN + {dim} x float32) but {found}. Pass --image_dim "
        f"{actual if actual is not None else 'N'} if that width is intended, or replace the file."
    )


def read_image_features(
    path: Path,
    item_index: dict[str, int],
    dim: int = AMAZON_IMAGE_DIM,
    chunk_records: int = 1024,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Rows for the items in ``item_index`` (token -> row).

    Returns (matrix float32 [n_items, dim], mask bool [n_items], info) where rows of items
    absent from the file, or whose features are not finite, are zero and masked False.
    """
    size = path.stat().st_size
    width = record_bytes(dim)
    if size == 0:
        raise FeatureWidthError(f"{path}: the image feature file is empty")
    if size % width:
        raise _width_error(path, dim, f"file size {size} is not a multiple of the record width")
    record = np.dtype([("asin", f"S{ASIN_BYTES}"), ("features", "<f4", (dim,))])
    assert record.itemsize == width  # structured dtypes are packed unless align=True
    records = np.memmap(path, dtype=record, mode="r")

    matrix = np.zeros((len(item_index), dim), dtype=np.float32)  # [n_items, dim]
    mask = np.zeros(len(item_index), dtype=bool)
    non_finite: list[str] = []
    for start in range(0, len(records), chunk_records):
        chunk = records[start:start + chunk_records]
        asins = chunk["asin"]
        # Wrong widths that happen to divide the file size still misplace the ASINs.
        valid = (np.char.str_len(asins) == ASIN_BYTES) & np.char.isalnum(asins)
        if not valid.all():
            bad = start + int(np.argmin(valid))
            raise _width_error(
                path, dim, f"record {bad} (byte offset {bad * width}) does not start with an ASIN"
            )
        for offset, raw in enumerate(asins.tolist()):
            row = item_index.get(raw.decode("ascii"))
            if row is None or mask[row]:
                continue  # not in the dataset, or a repeated ASIN (first wins)
            values = np.asarray(chunk["features"][offset], dtype=np.float32)
            if not np.isfinite(values).all():
                non_finite.append(raw.decode("ascii"))
                continue
            matrix[row] = values
            mask[row] = True
    if non_finite:
        _log.warning("%s: %d items have non-finite image features (masked out), e.g. %s",
                     path, len(non_finite), non_finite[:5])
    info = {"records": int(len(records)), "non_finite_items": len(non_finite)}
    return matrix, mask, info


def write_image_features(path: Path, asins: list[str], features: np.ndarray) -> None:
    """Write records in Amazon's format (used by tests and to make small fixtures)."""
    features = np.asarray(features, dtype="<f4")
    record = np.dtype([("asin", f"S{ASIN_BYTES}"), ("features", "<f4", (features.shape[1],))])
    out = np.empty(len(asins), dtype=record)
    out["asin"] = [a.encode("ascii") for a in asins]
    out["features"] = features
    with atomic_path(path) as tmp:
        out.tofile(tmp)
