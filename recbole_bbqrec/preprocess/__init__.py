"""Data pipeline: raw Amazon 2014 / sequence-form / ml-100k -> RecBole atomic files + item features.

Run ``python -m recbole_bbqrec.preprocess --dataset Beauty [--raw_dir DIR] [--out_dir dataset]``.
"""

from recbole_bbqrec.preprocess.errors import FeatureWidthError, MalformedInputError, RawDataNotFoundError
from recbole_bbqrec.preprocess.writer import dataset_ready
from recbole_bbqrec.preprocess.pipeline import preprocess_dataset

__all__ = [
    "preprocess_dataset",
    "dataset_ready",
    "RawDataNotFoundError",
    "MalformedInputError",
    "FeatureWidthError",
]
