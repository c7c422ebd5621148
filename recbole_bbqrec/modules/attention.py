"""Similarity-enhanced self-attention (BBQRec paper 4.2, eqs. 14-17).

For history items i, j with quantized vectors z_i, z_j:
    sim_ij = cos(z_i, z_j) in [-1, 1]
    k_ij   = min(K - 1, floor((sim_ij + 1) / 2 * K))          # bucket id
    S_ij   = SimEmb[k_ij]                                     # [d_model], learnable
    out_i  = sum_j softmax_j(q_i . k_j / sqrt(d_h) + mask_ij) * (v_j * S_ij)

The attention *scores* are untouched; only the values are re-weighted elementwise
("non-invasive", NOVA-style).  SimEmb starts at ones, so a fresh layer is exactly
standard attention.  Each encoder layer owns its SimEmb table (the paper is silent;
a per-layer table mirrors the per-layer value projection it modulates).

Implementation choice (measured on 2 CPU cores, B=256, T=20, d=128, K=100, fwd+bwd):
gathering S as [B, T, T, d] and reducing (a * v * S) over j (in cache-sized chunks of
users, see ``similarity_weighted_values``) beats the bucket identity
sum_k S_k * (sum_{j in k} a_ij v_j), whose [B, H, T, K, d_h] tensor is K/T = 5x larger
and ~6x slower.  Gathering wins whenever K > T, which is the paper's regime (K=100, T=20).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .cpu_linear import InferenceLinear


def bucketize_similarity(zq_hist: torch.Tensor, n_buckets: int, n_signals: int = 1) -> torch.Tensor:
    """Cosine similarity of every item pair, discretised into ``n_buckets`` bins.

    zq_hist: [B, T, Dz] quantized item vectors (padding rows may hold anything), the
    concatenation of ``n_signals`` equal parts (BBQ: [z_id; z_category; z_text]).
    With several signals each part is normalised before the cosine, which is then the mean
    of the per-signal cosines: on the raw concatenation the part with the largest norm (text,
    10x the ID part on Beauty) decides every bucket and the behavior signal is not heard.
    Returns LongTensor [B, T, T] with values in [0, n_buckets).
    """
    if zq_hist.dim() != 3:
        raise ValueError(f"zq_hist must be [B, T, Dz], got shape {tuple(zq_hist.shape)}")
    if n_buckets < 1:
        raise ValueError(f"n_buckets must be >= 1, got {n_buckets}")
    bsz, seq, width = zq_hist.shape
    if n_signals < 1 or width % n_signals:
        raise ValueError(f"zq width {width} does not split into n_signals={n_signals} parts")
    parts = zq_hist.float().view(bsz, seq, n_signals, width // n_signals)
    unit = F.normalize(parts, dim=-1, eps=1e-8).view(bsz, seq, width) / math.sqrt(n_signals)
    sim = torch.matmul(unit, unit.transpose(1, 2)).clamp_(-1.0, 1.0)  # [B, T, T]
    buckets = torch.floor((sim + 1.0) / 2.0 * n_buckets).long()
    return buckets.clamp_(0, n_buckets - 1)


# Elements of one chunk's [c, T, T, d] temporaries: 2^19 floats (2 MB) stay in cache.
# Measured on one core (B=256, T=20, d=128): the whole batch at once 105 ms per layer,
# chunks of 2^19 elements 7.8 ms (inference) and 274 -> 62 ms forward + backward.
MIX_CHUNK_ELEMENTS = 2 ** 19


def similarity_weighted_values(attn: torch.Tensor, v: torch.Tensor, buckets: torch.Tensor,
                               sim_table: torch.Tensor) -> torch.Tensor:
    """out_i = sum_j attn_ij * (v_j * SimEmb[bucket_ij]), split over heads like v.

    attn [B, H, T, T], v [B, T, H, dh], buckets [B, T, T] long, sim_table [K, H*dh]
    -> [B, T, H, dh].  Users go in chunks: the gathered [B, T, T, d] table and the
    product are memory-bound when built for the whole batch (a user's rows are
    independent, so the result is the same bit for bit)."""
    bsz, heads, seq, _ = attn.shape
    d_head = v.shape[-1]
    users = max(1, MIX_CHUNK_ELEMENTS // (seq * seq * heads * d_head))
    parts = []
    for lo in range(0, bsz, users):
        sl = slice(lo, lo + users)
        count = attn[sl].shape[0]
        sim = F.embedding(buckets[sl], sim_table).view(count, seq, seq, heads, d_head)
        a = attn[sl].permute(0, 2, 3, 1).unsqueeze(-1)                     # [c, Ti, Tj, H, 1]
        parts.append((a * v[sl].unsqueeze(1) * sim).sum(dim=2))            # [c, T, H, dh]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


class SimilarityEnhancedAttention(nn.Module):
    """Multi-head self-attention whose values are scaled by similarity-bucket embeddings.

    ``enabled=False`` builds no SimEmb table and computes plain scaled dot-product
    attention with the same projections (the paper's "w/o similarity" ablation).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float, n_buckets: int,
                 enabled: bool = True) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_model // n_heads
        self.n_buckets, self.enabled = n_buckets, enabled
        self.q_proj = InferenceLinear(d_model, d_model)
        self.k_proj = InferenceLinear(d_model, d_model)
        self.v_proj = InferenceLinear(d_model, d_model)
        self.out_proj = InferenceLinear(d_model, d_model)
        self.attn_dropout = nn.Dropout(dropout)
        if enabled:
            if n_buckets < 1:
                raise ValueError(f"n_buckets must be >= 1 when enabled, got {n_buckets}")
            # Ones: the layer starts as standard attention and learns deviations.
            self.sim_embedding = nn.Parameter(torch.ones(n_buckets, d_model))
        else:
            self.register_parameter("sim_embedding", None)

    def forward(self, x: torch.Tensor, buckets: torch.Tensor | None = None,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, T, d]; buckets: [B, T, T] long (required when enabled);
        key_padding_mask: [B, T] bool, True = padding (torch convention). -> [B, T, d]"""
        bsz, seq, _ = x.shape
        heads, d_head = self.n_heads, self.d_head
        q = self.q_proj(x).view(bsz, seq, heads, d_head).transpose(1, 2)  # [B, H, T, dh]
        k = self.k_proj(x).view(bsz, seq, heads, d_head).transpose(1, 2)
        v = self.v_proj(x).view(bsz, seq, heads, d_head)                    # [B, T, H, dh]

        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d_head)  # [B, H, T, T]
        if key_padding_mask is not None:
            # finfo.min, not -inf: a row whose keys are all padding stays finite (uniform)
            # instead of NaN; with >= 1 real key exp(min - max) is exactly 0 anyway.
            scores = scores.masked_fill(key_padding_mask[:, None, None, :],
                                        torch.finfo(scores.dtype).min)
        attn = self.attn_dropout(torch.softmax(scores, dim=-1))            # [B, H, T, T]

        if not self.enabled:
            out = torch.matmul(attn, v.transpose(1, 2)).transpose(1, 2)    # [B, T, H, dh]
        else:
            if buckets is None:
                raise ValueError("SimilarityEnhancedAttention(enabled=True) needs buckets "
                                 "[B, T, T]; pass enabled=False for plain attention")
            if buckets.shape != (bsz, seq, seq):
                raise ValueError(f"buckets must be {(bsz, seq, seq)}, got {tuple(buckets.shape)}")
            out = similarity_weighted_values(attn, v, buckets, self.sim_embedding)
        return self.out_proj(out.reshape(bsz, seq, self.d_model))


class SimilarityEncoderLayer(nn.Module):
    """Pre-LN transformer encoder layer (attention + GELU FFN, residual dropout).

    Pre-LN is chosen for stable training of small models without warm-up tricks."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, n_buckets: int,
                 enabled: bool = True) -> None:
        super().__init__()
        self.attn = SimilarityEnhancedAttention(d_model, n_heads, dropout, n_buckets, enabled)
        self.norm_attn = nn.LayerNorm(d_model)
        self.norm_ffn = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(InferenceLinear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout),
                                 InferenceLinear(d_ff, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, buckets: torch.Tensor | None = None,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.norm_attn(x), buckets, key_padding_mask))
        return x + self.dropout(self.ffn(self.norm_ffn(x)))


class SimilarityEncoder(nn.Module):
    """A stack of :class:`SimilarityEncoderLayer` plus the final LayerNorm of pre-LN."""

    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_ff: int, dropout: float,
                 n_buckets: int, enabled: bool = True) -> None:
        super().__init__()
        self.enabled = enabled
        self.layers = nn.ModuleList(
            SimilarityEncoderLayer(d_model, n_heads, d_ff, dropout, n_buckets, enabled)
            for _ in range(n_layers))
        self.final_norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, buckets: torch.Tensor | None = None,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, T, d]; buckets [B, T, T] or None; key_padding_mask [B, T] True = pad."""
        for layer in self.layers:
            x = layer(x, buckets if self.enabled else None, key_padding_mask)
        return self.final_norm(x)


def similarity_table_summary(encoder: SimilarityEncoder, n_groups: int = 10) -> list[list[float]]:
    """The learned value scales per layer: the mean of S over d for ``n_groups`` equal ranges
    of buckets, lowest similarity first (all 1.0 = the layer is still plain attention)."""
    out = []
    for layer in encoder.layers:
        table = layer.attn.sim_embedding
        if table is None:
            continue
        means = table.detach().float().mean(1)                              # [K]
        out.append([round(float(g.mean()), 4) for g in means.tensor_split(n_groups)])
    return out
