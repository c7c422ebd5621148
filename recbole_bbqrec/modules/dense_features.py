"""Pretrained per-item feature matrices (text, image, ...) as a sequence embedding.

The feature-fused baselines (GRU4RecF, SASRecF, NOVA) read the same frozen feature matrices
that BBQRec's stage 1 quantizes, so every model of the comparison sees the same side
information. The matrices stay fixed (they are the pretrained encoders' output); what is
learned is one projection per modality into the model's width.
"""

from __future__ import annotations

import torch
from torch import nn


class DenseItemFeatures(nn.Module):
    """Look up each item's frozen feature rows and project every modality to ``out_dim``.

    Args:
        matrices: one float tensor ``[n_items, d_m]`` per modality, rows indexed by the
            model's item ids (row 0 = padding; extra rows, e.g. BERT4Rec's mask token, are
            simply rows of zeros).
        out_dim: width of each projected modality (the model's hidden size).
        dropout: dropout on the projected features.
    """

    def __init__(self, matrices: list[torch.Tensor], out_dim: int, dropout: float = 0.0):
        super().__init__()
        if not matrices:
            raise ValueError("DenseItemFeatures needs at least one feature matrix "
                             "(no modality was found for this dataset: run the preprocessing)")
        n_rows = {int(m.shape[0]) for m in matrices}
        if len(n_rows) != 1:
            raise ValueError(f"feature matrices disagree on the number of items: {sorted(n_rows)}")
        for index, matrix in enumerate(matrices):
            if matrix.dim() != 2:
                raise ValueError(f"feature matrix {index} must be [n_items, dim], got {tuple(matrix.shape)}")
            # Buffers, not parameters: moved with .to(device), never trained, and left out of
            # the checkpoint (persistent=False) since they are rebuilt from the dataset's files.
            self.register_buffer(f"table_{index}", matrix.float().contiguous(), persistent=False)
        self.n_modalities = len(matrices)
        self.projections = nn.ModuleList(nn.Linear(int(m.shape[1]), out_dim) for m in matrices)
        self.norm = nn.LayerNorm(out_dim)
        self.dropout = nn.Dropout(dropout)

    def tables(self) -> list[torch.Tensor]:
        return [getattr(self, f"table_{i}") for i in range(self.n_modalities)]

    def forward(self, item_seq: torch.Tensor) -> torch.Tensor:
        """``item_seq`` [...] of item ids -> ``[..., n_modalities, out_dim]``."""
        projected = [proj(table[item_seq]) for proj, table in zip(self.projections, self.tables())]
        # Padding (id 0) has a zero row, so its projection is the bias alone; the models mask
        # padded positions themselves, as they do for their item embeddings.
        return self.dropout(self.norm(torch.stack(projected, dim=-2)))  # [..., M, out_dim]


class RecBoleFeatureSeqAdapter(DenseItemFeatures):
    """``DenseItemFeatures`` behind the call contract of RecBole's ``FeatureSeqEmbLayer``.

    RecBole's GRU4RecF/SASRecF call ``feature_embed_layer(None, item_seq)`` and receive
    ``(sparse, dense)`` dicts keyed by ``'item'``, each ``[B, L, n_fields, H]`` or None; the
    dense modalities are returned as the ``dense`` part so RecBole's forward runs unchanged.
    """

    def forward(self, user_idx, item_seq: torch.Tensor):  # noqa: D401 (RecBole's signature)
        return {"item": None}, {"item": super().forward(item_seq)}
