"""Collaborative item embeddings that start BBQRec's learnable ID signal.

The ID signal is the one part of a semantic ID that carries behavior. Started from random
numbers it needs many passes of the contrastive task before it means anything (measured on
Beauty: after 600 steps 74% of items kept the level-1 ID code their random start gave, and the
code was no more predictable from the previous item than a shuffled copy). LETTER starts its
collaborative side from a trained sequential model; we offer that too, and a cheaper default
that needs no training: a truncated SVD of the positive pointwise mutual information (PPMI)
of items that occur near each other in the TRAINING sequences.

    C_ij   = sum over sequences, positions p != q with |p - q| <= window, of 1 / |p - q|
    PPMI_ij = max(0, log(C_ij * C_.. / (C_i. * C_.j^0.75 * Z)))   (context smoothing 0.75)
    E       = U_k sqrt(S_k)                                        (k = code_dim)

Everything here is plain numpy / scipy with typed arguments; the caller chooses the
sequences (never validation or test interactions).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import svds


def cooccurrence_matrix(sequences: Sequence[np.ndarray], n_items: int, window: int = 3) -> sp.csr_matrix:
    """Symmetric distance-weighted co-occurrence counts [n_items, n_items] (zero diagonal)."""
    if window < 1:
        raise ValueError(f"co-occurrence window must be >= 1, got {window}")
    rows, cols, vals = [], [], []
    for seq in sequences:
        seq = np.asarray(seq, dtype=np.int64)
        if len(seq) and (seq.min() < 0 or seq.max() >= n_items):
            raise ValueError(f"sequence items must lie in [0, {n_items}), got {seq[:10]}")
        for d in range(1, min(window, len(seq) - 1) + 1):
            a, b = seq[:-d], seq[d:]
            keep = a != b  # a repeated item says nothing about its neighbours
            rows += [a[keep], b[keep]]
            cols += [b[keep], a[keep]]
            vals.append(np.full(2 * int(keep.sum()), 1.0 / d))
    if not rows:
        return sp.csr_matrix((n_items, n_items), dtype=np.float64)
    matrix = sp.coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_items, n_items)
    )
    return matrix.tocsr()  # duplicates are summed


def ppmi(counts: sp.csr_matrix, context_power: float = 0.75) -> sp.csr_matrix:
    """Positive PMI of a co-occurrence matrix, with the usual smoothing of context counts."""
    counts = counts.tocoo()
    total = counts.sum()
    if total <= 0:
        return sp.csr_matrix(counts.shape, dtype=np.float64)
    row_sum = np.asarray(counts.sum(1)).ravel()
    ctx = np.asarray(counts.sum(0)).ravel() ** context_power
    ctx_total = ctx.sum()
    pmi = np.log(counts.data * ctx_total / (row_sum[counts.row] * ctx[counts.col]))
    keep = pmi > 0
    return sp.csr_matrix((pmi[keep], (counts.row[keep], counts.col[keep])), shape=counts.shape)


def cooccurrence_embeddings(
    sequences: Sequence[np.ndarray], n_items: int, dim: int, window: int = 3, seed: int = 0
) -> torch.Tensor:
    """PPMI + truncated SVD item embeddings [n_items, dim], mean row norm 1.

    Items that never co-occur (possible only for items absent from ``sequences``) get a small
    random row, as the random-start ablation would. Deterministic for a given seed (ARPACK is
    started from a seeded vector)."""
    if dim < 1 or n_items < 1:
        raise ValueError(f"need dim >= 1 and n_items >= 1, got dim={dim}, n_items={n_items}")
    rng = np.random.default_rng(seed)
    matrix = ppmi(cooccurrence_matrix(sequences, n_items, window))
    k = min(dim, n_items - 1)
    emb = np.zeros((n_items, dim), dtype=np.float64)
    if k >= 1 and matrix.nnz > 0:
        u, s, _vt = svds(matrix, k=k, v0=rng.standard_normal(n_items), random_state=seed)
        order = np.argsort(-s)  # svds returns ascending singular values
        emb[:, :k] = u[:, order] * np.sqrt(s[order])[None, :]
    norms = np.linalg.norm(emb, axis=1)
    empty = norms < 1e-12
    scale = norms[~empty].mean() if (~empty).any() else 1.0
    emb[empty] = 0.1 * scale * rng.standard_normal((int(empty.sum()), dim)) / np.sqrt(dim)
    return torch.from_numpy(emb / scale).float()


def fit_width(embeddings: torch.Tensor, dim: int) -> torch.Tensor:
    """Bring a [n, h] embedding table to [n, dim]: its top principal directions when h > dim,
    zero-padded when h < dim; rows rescaled to mean norm 1 (the ID signal's scale)."""
    emb = embeddings.detach().float()
    if emb.dim() != 2:
        raise ValueError(f"item embeddings must be [n_items, width], got {tuple(emb.shape)}")
    if emb.shape[1] > dim:
        centred = emb - emb.mean(0, keepdim=True)
        _u, _s, v = torch.linalg.svd(centred, full_matrices=False)
        emb = centred @ v[:dim].t()
    elif emb.shape[1] < dim:
        emb = torch.cat([emb, emb.new_zeros(emb.shape[0], dim - emb.shape[1])], 1)
    return emb / emb.norm(dim=1).mean().clamp_min(1e-12)
