"""Load the per-item feature matrices written by ``python -m recbole_bbqrec.preprocess``.

Files (named in ``recbole_bbqrec.layout``): ``<Name>.item_ids.txt`` (row order),
``<Name>.<modality>.npy`` float32 [n_items, dim], ``<Name>.<modality>.mask.npy`` bool
[n_items]. :func:`align_to_recbole` reorders the rows to RecBole's internal item ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recbole_bbqrec.layout import ITEM_IDS, dataset_file, feature_suffix, mask_suffix

PAD_TOKEN = "[PAD]"


@dataclass
class ItemFeatures:
    item_tokens: list[str]  # raw item ids, row order of matrix and mask
    matrix: np.ndarray  # float32 [n_items, dim]
    mask: np.ndarray  # bool [n_items]; False = the item lacks this modality (zero row)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])


def _dataset_folder(data_dir: Path, name: str, modality: str) -> Path:
    """Accept both ``dataset`` (the out_dir) and ``dataset/<Name>`` (RecBole's data_path)."""
    matrix = dataset_file(data_dir, name, feature_suffix(modality))
    if matrix.is_file() or not (data_dir / name).is_dir():
        return data_dir
    return data_dir / name


def _describe_rows(rows: np.ndarray, tokens: list[str], limit: int = 5) -> str:
    shown = ", ".join(f"row {r} ({tokens[r]})" for r in rows[:limit].tolist())
    return shown + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def load_item_features(
    data_dir: str, name: str, modality: str, expected_dim: int | None = None
) -> ItemFeatures:
    """Read and validate one modality's matrix; every error names the file and the fix."""
    folder = _dataset_folder(Path(data_dir), name, modality)
    ids_path = dataset_file(folder, name, ITEM_IDS)
    matrix_path = dataset_file(folder, name, feature_suffix(modality))
    mask_path = dataset_file(folder, name, mask_suffix(modality))
    out_dir = folder.parent if folder.name == name else folder
    for path in (ids_path, matrix_path, mask_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found (modality '{modality}' of dataset '{name}'). Run "
                f"`python -m recbole_bbqrec.preprocess --dataset {name} --out_dir {out_dir}` "
                "first; a modality is only written when the raw data has it."
            )
    tokens = ids_path.read_text(encoding="utf-8").splitlines()
    matrix = np.load(matrix_path, allow_pickle=False)
    mask = np.load(mask_path, allow_pickle=False)

    if matrix.ndim != 2:
        raise ValueError(f"{matrix_path}: expected a 2-d [n_items, dim] matrix, got shape {matrix.shape}")
    if matrix.shape[0] != len(tokens):
        raise ValueError(
            f"{matrix_path}: {matrix.shape[0]} rows but {ids_path} lists {len(tokens)} items; "
            f"the files come from different runs: rerun the preprocessing for '{name}'"
        )
    if mask.shape != (len(tokens),) or mask.dtype != np.bool_:
        raise ValueError(
            f"{mask_path}: expected a bool mask of shape ({len(tokens)},), got {mask.dtype} {mask.shape}"
        )
    if expected_dim is not None and matrix.shape[1] != expected_dim:
        raise ValueError(
            f"{matrix_path}: features are {matrix.shape[1]}-d but {expected_dim}-d were expected; "
            "check the model config's feature dimension or the text model used for preprocessing"
        )
    bad_rows = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if bad_rows.size:
        raise ValueError(
            f"{matrix_path}: {bad_rows.size} rows contain NaN/Inf: {_describe_rows(bad_rows, tokens)}"
        )
    return ItemFeatures(tokens, np.ascontiguousarray(matrix, dtype=np.float32), mask)


def align_to_recbole(features: ItemFeatures, id_tokens) -> tuple[np.ndarray, np.ndarray]:
    """Rows reordered to RecBole's item ids (``dataset.field2id_token['item_id']``).

    Returns (matrix float32 [n_recbole_items, dim], mask bool [n_recbole_items]); the
    '[PAD]' id (index 0) gets a zero row and mask False. An item RecBole knows that the
    features lack is an error: the features were built for other data.
    """
    row_of = {token: row for row, token in enumerate(features.item_tokens)}
    tokens = [str(t) for t in np.asarray(id_tokens, dtype=object).tolist()]
    rows = np.array([row_of.get(t, -1) for t in tokens], dtype=np.int64)  # [n_recbole_items]
    is_pad = np.array([t == PAD_TOKEN for t in tokens], dtype=bool)
    missing = np.flatnonzero((rows < 0) & ~is_pad)
    if missing.size:
        shown = ", ".join(tokens[i] for i in missing[:5].tolist())
        raise ValueError(
            f"{missing.size} of {len(tokens)} RecBole items have no feature row (e.g. {shown}); "
            "the features were built from different data: rerun the preprocessing for this dataset"
        )
    matrix = np.zeros((len(tokens), features.dim), dtype=np.float32)  # [n_recbole_items, dim]
    mask = np.zeros(len(tokens), dtype=bool)
    keep = rows >= 0
    matrix[keep] = features.matrix[rows[keep]]
    mask[keep] = features.mask[rows[keep]]
    return matrix, mask
