"""``preprocess_dataset``: raw files -> 5-core RecBole atomic files + per-item feature matrices."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from recbole_bbqrec.layout import dataset_dir, dataset_suffixes
from recbole_bbqrec.preprocess.amazon2014 import read_meta, read_ratings_csv, read_reviews
from recbole_bbqrec.preprocess.errors import LowCoverageError
from recbole_bbqrec.preprocess.image_features import AMAZON_IMAGE_DIM, read_image_features
from recbole_bbqrec.preprocess.kcore import kcore_filter
from recbole_bbqrec.preprocess.locate import RawSource, locate_source
from recbole_bbqrec.preprocess.movielens import ML100K, read_ml100k
from recbole_bbqrec.preprocess.provenance import (make_provenance, remove_stale_temp_files,
                                                  writer_lock)
from recbole_bbqrec.preprocess.records import ItemMeta
from recbole_bbqrec.preprocess.sequence_form import read_sequences
from recbole_bbqrec.preprocess.text_encoders import embed_texts_cached, make_text_encoder
from recbole_bbqrec.preprocess.writer import KNOWN_MODALITIES, write_dataset

_log = logging.getLogger(__name__)


def _read_interactions(source: RawSource, max_bad_fraction: float):
    """(interactions, ml-100k metadata or None, line tallies)."""
    if source.kind == ML100K:
        frame, meta, _ = read_ml100k(source.interactions.parent)
        return frame, meta, []
    reader = {"reviews": read_reviews, "ratings": read_ratings_csv, "sequence": read_sequences}[source.kind]
    frame, tally = reader(source.interactions, max_bad_fraction)
    return frame, None, [tally]


def _embed_modality(encoder, texts: list[str], cache_dir: Path, show_progress: bool):
    """Embed the non-empty texts (each distinct text once); rows of empty ones stay zero."""
    mask = np.array([bool(t) for t in texts], dtype=bool)  # [n_items]
    distinct = sorted({t for t in texts if t})
    embedded, _ = embed_texts_cached(encoder, distinct, cache_dir, show_progress)  # [n_distinct, dim]
    row_of = {text: row for row, text in enumerate(distinct)}
    matrix = np.zeros((len(texts), embedded.shape[1]), dtype=np.float32)  # [n_items, dim]
    present = np.flatnonzero(mask)
    matrix[present] = embedded[[row_of[texts[i]] for i in present]]
    return matrix, mask


def preprocess_dataset(
    name: str,
    out_dir: str = "dataset",
    raw_dir: str | None = None,
    text_model: str | None = None,
    show_progress: bool = True,
    max_bad_fraction: float = 0.01,
    image_dim: int | None = None,
    kcore: int = 5,
    min_meta_coverage: float = 0.8,
) -> dict:
    """Build ``<out_dir>/<name>/`` (see :mod:`.layout`) and return its stats.

    ``text_model``: None for the packaged MiniLM, a local sentence-transformers folder, or
    ``"hash:<dim>"`` for the hashing encoder. ``image_dim``: floats per record of
    ``image_features_<Cat>.b`` (Amazon's are 4096). ``kcore``: minimum interactions per user
    and per item, iterated to a fixed point (<= 1 disables it). ``min_meta_coverage``: the
    smallest share of the kept items that must have a metadata record (a meta file cut in half
    would otherwise cost half the catalogue its features with one warning); below it the run
    stops with the numbers, above it the count goes to the stats and the log.
    """
    folder = dataset_dir(out_dir, name)
    with writer_lock(folder, name):  # a second writer of this folder waits for the first
        remove_stale_temp_files(folder, name, dataset_suffixes(KNOWN_MODALITIES))
        return _preprocess_locked(name, out_dir, raw_dir, text_model, show_progress,
                                  max_bad_fraction, image_dim, kcore, min_meta_coverage)


def _preprocess_locked(name: str, out_dir: str, raw_dir: str | None, text_model: str | None,
                       show_progress: bool, max_bad_fraction: float, image_dim: int | None,
                       kcore: int, min_meta_coverage: float) -> dict:
    started = time.perf_counter()
    source = locate_source(name, out_dir, raw_dir)
    provenance = make_provenance(source, text_model, kcore, max_bad_fraction, min_meta_coverage)
    _log.info("%s: reading %s (%s)", name, source.describe(), source.kind)
    encoder = make_text_encoder(text_model)  # fail on a bad model path before the slow part

    frame, ml_meta, tallies = _read_interactions(source, max_bad_fraction)
    raw_rows = len(frame)
    frame = frame.drop_duplicates(["user", "item", "timestamp"])
    duplicates = raw_rows - len(frame)
    frame, passes = kcore_filter(frame, kcore)
    if frame.empty:
        raise ValueError(
            f"{source.interactions}: no interactions survive {kcore}-core filtering "
            f"({raw_rows} read); the file is too small or pass a smaller kcore"
        )
    frame = frame.sort_values(["user", "timestamp", "order"], kind="stable")
    item_tokens = sorted(frame["item"].unique().tolist())
    item_index = {token: row for row, token in enumerate(item_tokens)}
    _log.info("%s: %d -> %d interactions after %d-core (%d passes)", name, raw_rows, len(frame), kcore, passes)

    if ml_meta is not None:
        meta = {t: ml_meta[t] for t in item_tokens if t in ml_meta}
    else:
        meta, meta_tally = read_meta(source.meta, set(item_tokens), max_bad_fraction)
        tallies.append(meta_tally)
    missing_meta = [t for t in item_tokens if t not in meta]
    meta_coverage = 1.0 - len(missing_meta) / len(item_tokens)
    if meta_coverage < min_meta_coverage:
        raise LowCoverageError(
            f"{source.meta or source.describe()}: only {len(item_tokens) - len(missing_meta)} of "
            f"{len(item_tokens)} items ({meta_coverage:.1%}) have metadata, below "
            f"min_meta_coverage {min_meta_coverage:.0%} (e.g. no record for "
            f"{missing_meta[:3]}). Is the meta file complete? Pass a smaller "
            f"--min_meta_coverage to go on without their features.")
    if missing_meta:
        _log.warning("%s: %d of %d items have no metadata (text masked out), e.g. %s",
                     name, len(missing_meta), len(item_tokens), missing_meta[:5])
    metas = [meta.get(t, ItemMeta()) for t in item_tokens]

    cache_dir = dataset_dir(out_dir, name) / ".cache"
    modalities: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    modalities["text"] = _embed_modality(encoder, [m.text() for m in metas], cache_dir, show_progress)
    has_categories = any(m.categories for m in metas)
    if source.category_modality and has_categories:
        modalities["category"] = _embed_modality(
            encoder, [m.category_text() for m in metas], cache_dir, show_progress
        )
    image_info = None
    if source.image is not None:
        _log.info("%s: reading image features %s", name, source.image)
        matrix, mask, image_info = read_image_features(
            source.image, item_index, dim=image_dim or AMAZON_IMAGE_DIM
        )
        modalities["image"] = (matrix, mask)
    elif image_dim is not None:
        _log.warning("%s: --image_dim given but no image_features_%s.b next to the raw files", name, name)

    stats = {
        "dataset": name,
        "source": source.describe(),
        "source_format": source.kind,
        "users": int(frame["user"].nunique()),
        "items": len(item_tokens),
        "interactions": int(len(frame)),
        "coverage": {m: round(float(mask.mean()), 6) for m, (_, mask) in modalities.items()},
        "feature_dims": {m: int(matrix.shape[1]) for m, (matrix, _) in modalities.items()},
        "dropped_malformed_lines": int(sum(t.bad for t in tallies)),
        "malformed_lines_by_file": {str(t.path): t.bad for t in tallies if t.bad},
        "malformed_line_numbers": {str(t.path): t.bad_line_numbers for t in tallies if t.bad},
        "duplicate_meta_records": int(sum(t.duplicate_records for t in tallies)),
        "metadata_coverage": round(meta_coverage, 6),
        "dropped_duplicate_interactions": int(duplicates),
        "raw_interactions": int(raw_rows),
        "kcore": kcore,
        "kcore_passes": passes,
        "items_without_metadata": len(missing_meta),
        "text_model": text_model if text_model is not None else str(getattr(encoder, "path", "")),
        "image_non_finite_items": image_info["non_finite_items"] if image_info else 0,
        "provenance": provenance,
    }
    item_categories = [m.category_tokens() for m in metas] if has_categories else None
    stats["seconds"] = round(time.perf_counter() - started, 2)  # all but the final writes
    write_dataset(out_dir, name, frame, item_tokens, item_categories, modalities, stats)
    _log.info("%s: wrote %s in %.1fs", name, dataset_dir(out_dir, name), stats["seconds"])
    return stats
