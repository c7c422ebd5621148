"""The causal sequence encoder of BBQRec's stage-1 contrastive task (SPEC 5).

A SASRec-style transformer over a user's history of item vectors e_i = [z_sig for sig]
(S * D wide). It runs at its own, narrower width (``dim``) between an input and an output
projection: the contrastive task needs a good ranking of e vectors, not a 384-wide
transformer, and the narrow one costs a quarter as much per step (measured on Beauty).

``forward`` returns every position (one row per user, the loss at every causal position),
``last`` picks each row's last valid position (validation, and any history -> user vector).
"""

from __future__ import annotations

import torch
from torch import nn


class SequenceEncoder(nn.Module):
    def __init__(
        self,
        item_dim: int,
        dim: int = 128,
        n_layers: int = 2,
        n_heads: int = 2,
        max_len: int = 20,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if dim % n_heads != 0:
            raise ValueError(f"sequence encoder width {dim} is not divisible by n_heads={n_heads}")
        if min(item_dim, dim, n_layers, max_len) < 1:
            raise ValueError(f"sequence encoder sizes must be positive: item_dim={item_dim}, dim={dim}, "
                             f"n_layers={n_layers}, max_len={max_len}")
        self.max_len = max_len
        self.input = nn.Linear(item_dim, dim)
        self.position = nn.Embedding(max_len, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(dim, n_heads, 2 * dim, dropout, activation="gelu", batch_first=True)
        self.layers = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.output = nn.Linear(dim, item_dim)  # back to the item space, where cosines are taken

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """seq [B, T, item_dim] (right-padded) -> [B, T, item_dim]; position t sees items <= t,
        so the rows of padded positions never reach a valid one."""
        _batch, steps, _ = seq.shape
        if steps > self.max_len:
            raise ValueError(f"history length {steps} exceeds the encoder's max_len {self.max_len}")
        pos = torch.arange(steps, device=seq.device)
        hidden = self.dropout(self.norm(self.input(seq) + self.position(pos)[None]))  # [B, T, dim]
        causal = nn.Transformer.generate_square_subsequent_mask(steps, device=seq.device)
        hidden = self.layers(hidden, mask=causal, is_causal=True)  # [B, T, dim]
        return self.output(hidden)

    def last(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[B, T, item_dim], lengths [B] -> output at each row's last valid position [B, item_dim]."""
        out = self.forward(seq)
        return out[torch.arange(seq.shape[0], device=seq.device), lengths.clamp_min(1) - 1]
