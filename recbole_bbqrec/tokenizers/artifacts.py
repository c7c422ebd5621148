"""Stage 1's artifacts as stage 2 reads them: semantic IDs, quantized vectors and codebooks.

``stage1.py`` writes them (file names: ``layout.stage1_files``); the dataset of the generative
models (``data/dataset.py``) loads them once through the functions here and serves them to
the model, which therefore needs neither stage 1 nor a checkpoint loader.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from recbole_bbqrec.atomic_io import atomic_save_npy
from recbole_bbqrec.modules.generator import check_code_range
from recbole_bbqrec.tokenizers.semantic_ids import load_zq, read_sid_file

CODEBOOKS_KEY = "quantizer.codebooks"  # the tokenizers' ResidualQuantizer, [sets, L, N, D]


def _checkpoint_codebooks(checkpoint_path: str) -> torch.Tensor | None:
    """The codebooks in a tokenizer checkpoint (weights only: plain tensors, no pickled code)."""
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)["state_dict"]
    return state.get(CODEBOOKS_KEY)


def export_codebooks(checkpoint_path: str, out_path: str) -> None:
    """Write the best checkpoint's codebooks [sets, L, N, D] as ``out_path`` (atomically), so
    stage 2 reads an array instead of the tokenizer's state dict."""
    books = _checkpoint_codebooks(checkpoint_path)
    if books is not None:
        atomic_save_npy(out_path, books.numpy())


def load_codebooks(paths: dict[str, str]) -> torch.Tensor:
    """The stage-1 codebooks [sets, L, N, D] float32: the ``.codebooks.npy`` file, or, for IDs
    cached before it was written, the tokenizer checkpoint beside them."""
    if os.path.isfile(paths["codebooks"]):
        return torch.from_numpy(np.load(paths["codebooks"], allow_pickle=False))
    books = _checkpoint_codebooks(paths["checkpoint"]) if os.path.isfile(paths["checkpoint"]) else None
    if books is None:
        raise FileNotFoundError(
            f"No stage-1 codebooks for {paths['sid']}: neither {paths['codebooks']} nor a "
            f"tokenizer checkpoint holding them ({paths['checkpoint']}). Delete {paths['summary']} "
            f"and rerun with --stage=tokenizer to retrain stage 1 and write them.")
    return books


def generator_codebooks(books: torch.Tensor) -> torch.Tensor:
    """[sets, L, N, D] -> what the generator inherits: [L, N, D] for one (shared) set, else
    [L, S, N, D] (one set per signal)."""
    return books[0] if books.shape[0] == 1 else books.transpose(0, 1)


def load_semantic_ids(paths: dict[str, str], sid_hash: str, item_tokens: list[str],
                      codebook_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes [n_items, L, S] long, zq [n_items, Dz] float) aligned to RecBole's internal ids.

    ``item_tokens``: the raw token of internal ids 1..n-1; row 0 (padding) is zeros. Every
    item must have an ID in the file; one that does not (IDs from another tokenizer hash,
    another dataset) is a clear error.
    """
    if not os.path.isfile(paths["sid"]):
        raise FileNotFoundError(f"No semantic IDs for stage-1 hash {sid_hash} ({paths['sid']}): "
                                f"run with --stage=tokenizer (or --stage=all) first.")
    tokens, codes, _signals = read_sid_file(paths["sid"])
    zq = load_zq(paths["zq"], n_items=len(tokens))
    row_of = {tok: i for i, tok in enumerate(tokens)}
    missing = [t for t in item_tokens if t not in row_of]
    if missing:
        raise ValueError(f"{len(missing)} items have no semantic ID in {paths['sid']} (hash "
                         f"{sid_hash}), e.g. {missing[:5]}: the IDs were made for another item "
                         f"set; rerun stage 1.")
    rows = np.asarray([row_of[t] for t in item_tokens], dtype=np.int64)
    aligned_codes = np.zeros((len(item_tokens) + 1, *codes.shape[1:]), dtype=np.int64)
    aligned_codes[1:] = codes[rows]
    # checked once here, so the generator's forward never reads codes back from the device
    check_code_range(torch.from_numpy(aligned_codes), codebook_size,
                     f"{paths['sid']} (hash {sid_hash})")
    aligned_zq = np.zeros((len(item_tokens) + 1, zq.shape[1]), dtype=np.float32)
    aligned_zq[1:] = zq[rows]
    return torch.from_numpy(aligned_codes), torch.from_numpy(aligned_zq)
