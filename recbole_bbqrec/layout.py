"""Every file the package keeps in a dataset folder, named in this one place.

Under ``<out_dir>/<Name>/`` (RecBole's ``data_path``):

* ``<Name>.inter``, ``<Name>.item``: RecBole atomic files (preprocessing);
* ``<Name>.item_ids.txt``: one raw item token a line, the row order of every matrix below;
* ``<Name>.<modality>.npy`` float32 [n_items, dim] and ``<Name>.<modality>.mask.npy`` bool
  [n_items] (False = the item lacks this modality; its row is zeros);
* ``<Name>.stats.json``: written last by preprocessing; with matching counts it marks the
  folder as ready;
* stage 1, keyed by the hash of whatever produced it: ``<Name>.<hash>.sid`` (codes),
  ``.zq.npy`` (quantized vectors), ``.codebooks.npy`` (the quantizer's codebooks),
  ``.stage1.json`` (summary), ``.stage1.pth`` (tokenizer checkpoint), and the writer lock
  ``.<Name>.<hash>.stage1.lock``.

Writers and readers (``preprocess/writer.py``, ``data/``, ``tokenizers/stage1.py``,
``experiments/ablation.py``) all ask here, so a name can change without a reader left behind.
"""

from __future__ import annotations

import os
from pathlib import Path

INTER, ITEM, ITEM_IDS, STATS = "inter", "item", "item_ids.txt", "stats.json"


def feature_suffix(modality: str) -> str:
    return f"{modality}.npy"


def mask_suffix(modality: str) -> str:
    return f"{modality}.mask.npy"


def dataset_suffixes(modalities) -> list[str]:
    """The suffixes a preprocessed dataset consists of (``<Name>.<suffix>``)."""
    suffixes = [INTER, ITEM, ITEM_IDS, STATS]
    for modality in modalities:
        suffixes += [feature_suffix(modality), mask_suffix(modality)]
    return suffixes


def dataset_dir(out_dir: str | os.PathLike, name: str) -> Path:
    return Path(out_dir) / name


def dataset_file(folder: str | os.PathLike, name: str, suffix: str) -> Path:
    """``dataset_file("dataset/Beauty", "Beauty", "text.npy")`` -> dataset/Beauty/Beauty.text.npy"""
    return Path(folder) / f"{name}.{suffix}"


def output_file(out_dir: str | os.PathLike, name: str, suffix: str) -> Path:
    """``output_file("dataset", "Beauty", "text.npy")`` -> dataset/Beauty/Beauty.text.npy"""
    return dataset_file(dataset_dir(out_dir, name), name, suffix)


def modalities_on_disk(folder: str | os.PathLike, name: str) -> list[str]:
    """Modalities with a feature matrix ``<Name>.<modality>.npy`` in ``folder``, sorted."""
    prefix, found = name + ".", []
    for entry in sorted(os.listdir(folder)):
        parts = entry[len(prefix):].split(".") if entry.startswith(prefix) else []
        if len(parts) == 2 and parts[1] == "npy":
            found.append(parts[0])
    return found


STAGE1_SUFFIXES = {"sid": "sid", "zq": "zq.npy", "codebooks": "codebooks.npy",
                   "summary": "stage1.json", "checkpoint": "stage1.pth"}


def stage1_files(folder: str | os.PathLike, name: str, sid_hash: str) -> dict[str, str]:
    """``{"sid", "zq", "codebooks", "summary", "checkpoint"}`` -> path, for one stage-1 hash."""
    return {kind: str(dataset_file(folder, name, f"{sid_hash}.{suffix}"))
            for kind, suffix in STAGE1_SUFFIXES.items()}


def stage1_lock_name(name: str, sid_hash: str) -> str:
    return f".{name}.{sid_hash}.stage1.lock"
