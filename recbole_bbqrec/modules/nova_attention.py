"""Non-invasive self-attention (NOVA; Liu et al., AAAI 2021), plain torch.

NOVA's point: side information (positions, item features) should shape *which* items attend
to which, without being mixed into the item representations that attention averages. Queries
and keys are computed from a fusion of the item representation with its side information;
values (and the residual stream) come from the item representation alone, so the layers'
output stays in the items' own embedding space.
"""

from __future__ import annotations

import math

import torch
from torch import nn

FUSIONS = ("add", "concat", "gating")


class SideInfoFusion(nn.Module):
    """Fuse ``item [B, L, H]`` with ``side [B, L, M, H]`` into ``[B, L, H]``.

    ``add`` sums them; ``concat`` projects the concatenation; ``gating`` (NOVA's best) takes a
    gated sum of the 1 + M sources, one learned score per source vector. The gate is
    normalised with a softmax over the sources (our choice) so that the fused vector stays on
    the scale of its inputs whatever the number of modalities.
    """

    def __init__(self, hidden_size: int, n_side: int, mode: str = "gating"):
        super().__init__()
        if mode not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {mode!r}")
        self.mode = mode
        if mode == "concat":
            self.project = nn.Linear(hidden_size * (1 + n_side), hidden_size)
        elif mode == "gating":
            self.score = nn.Linear(hidden_size, 1)

    def forward(self, item: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
        if self.mode == "add":
            return item + side.sum(dim=-2)
        sources = torch.cat([item.unsqueeze(-2), side], dim=-2)          # [B, L, 1+M, H]
        if self.mode == "concat":
            return self.project(sources.flatten(-2))
        weights = torch.softmax(self.score(sources), dim=-2)             # [B, L, 1+M, 1]
        return (weights * sources).sum(dim=-2)


class NonInvasiveLayer(nn.Module):
    """One post-LN transformer layer whose attention reads side information in Q and K only."""

    def __init__(self, hidden_size: int, n_heads: int, inner_size: int, n_side: int,
                 fusion: str = "gating", hidden_dropout: float = 0.1, attn_dropout: float = 0.1,
                 layer_norm_eps: float = 1e-12):
        super().__init__()
        if hidden_size % n_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of n_heads {n_heads}")
        self.n_heads, self.head_dim = n_heads, hidden_size // n_heads
        self.fusion = SideInfoFusion(hidden_size, n_side, fusion)
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)
        self.attn_dropout = nn.Dropout(attn_dropout)
        self.hidden_dropout = nn.Dropout(hidden_dropout)
        self.attn_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.ffn = nn.Sequential(nn.Linear(hidden_size, inner_size), nn.GELU(),
                                 nn.Linear(inner_size, hidden_size), nn.Dropout(hidden_dropout))
        self.ffn_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_heads, self.head_dim).transpose(1, 2)  # [B, h, L, d]

    def forward(self, item: torch.Tensor, side: torch.Tensor,
                attention_mask: torch.Tensor) -> torch.Tensor:
        """item [B, L, H], side [B, L, M, H], attention_mask additive [B, 1, L, L] -> [B, L, H]."""
        fused = self.fusion(item, side)                                   # [B, L, H]
        q, k = self._heads(self.query(fused)), self._heads(self.key(fused))
        v = self._heads(self.value(item))                                 # values: items only
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + attention_mask
        probs = self.attn_dropout(torch.softmax(scores, dim=-1))          # [B, h, L, L]
        context = (probs @ v).transpose(1, 2).reshape(item.shape)         # [B, L, H]
        hidden = self.attn_norm(item + self.hidden_dropout(self.out(context)))
        return self.ffn_norm(hidden + self.ffn(hidden))


class NonInvasiveEncoder(nn.Module):
    """A stack of ``NonInvasiveLayer``; the same side information feeds every layer."""

    def __init__(self, n_layers: int, hidden_size: int, n_heads: int, inner_size: int,
                 n_side: int, fusion: str = "gating", hidden_dropout: float = 0.1,
                 attn_dropout: float = 0.1, layer_norm_eps: float = 1e-12):
        super().__init__()
        self.layers = nn.ModuleList(
            NonInvasiveLayer(hidden_size, n_heads, inner_size, n_side, fusion, hidden_dropout,
                             attn_dropout, layer_norm_eps) for _ in range(n_layers))

    def forward(self, item: torch.Tensor, side: torch.Tensor,
                attention_mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            item = layer(item, side, attention_mask)
        return item                                                       # [B, L, H]
