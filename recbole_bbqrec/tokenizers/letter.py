"""LETTER's item tokenizer (Wang et al., CIKM 2024), built on TIGER's RQ-VAE.

loss = RQ-VAE loss
     + cf_weight        * collaborative alignment: in-batch InfoNCE (both directions) between
                          the quantized vector z_i and a learned projection of item i's
                          collaborative embedding (e.g. a trained SASRec item table), so items
                          that co-occur in sequences get nearby codes;
     + diversity_weight * codebook-usage regulariser (our choice, simpler than LETTER's
                          cluster-based contrastive term): per level, the batch-mean soft
                          assignment p_k = mean_b softmax_k(-d_bk / T) is pushed towards
                          uniform by minimising log N - H(p) (T = the batch's mean distance,
                          so the term is scale-free). It spreads items over codes, which is
                          what LETTER's diversity loss is for: fewer collisions.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recbole_bbqrec.modules.quantizer import usage_balance
from recbole_bbqrec.tokenizers.rqvae import RQVAETokenizer


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric in-batch InfoNCE on cosine similarity; row i of a pairs with row i of b."""
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t() / temperature  # [B, B]
    labels = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


class LETTERTokenizer(RQVAETokenizer):
    def __init__(
        self,
        n_items: int,
        input_dim: int,
        cf_embeddings: torch.Tensor,
        code_dim: int = 32,
        n_levels: int = 3,
        codebook_size: int = 256,
        hidden_dims: Sequence[int] = (512, 256, 128),
        dropout: float = 0.0,
        beta: float = 0.25,
        modality: str = "text",
        kmeans_iters: int = 10,
        cf_weight: float = 0.02,
        diversity_weight: float = 0.1,
        temperature: float = 0.1,
    ) -> None:
        super().__init__(
            n_items, input_dim, code_dim, n_levels, codebook_size, hidden_dims, dropout, beta, modality, kmeans_iters
        )
        cf = torch.as_tensor(cf_embeddings, dtype=torch.float32)
        if cf.dim() != 2 or cf.shape[0] != n_items:
            raise ValueError(f"cf_embeddings must be [n_items={n_items}, d_cf], got {tuple(cf.shape)}")
        if not torch.isfinite(cf).all():
            raise ValueError("cf_embeddings contain NaN/Inf")
        # not persistent: the CF table is an input (fingerprinted in the stage-1 hash), not a weight
        self.register_buffer("cf_embeddings", cf, persistent=False)
        self.cf_proj = nn.Linear(cf.shape[1], code_dim)
        self.cf_weight, self.diversity_weight, self.temperature = cf_weight, diversity_weight, temperature

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        items = batch["items"]
        out = self._pass(items)
        align = info_nce(out.quant.z_q, self.cf_proj(self.cf_embeddings[items]), self.temperature)
        diversity = usage_balance(out.quant.distances)
        total = out.recon + out.quant.loss + self.cf_weight * align + self.diversity_weight * diversity
        return {
            "loss": total,
            "recon": out.recon.detach(),
            "rq": out.quant.loss.detach(),
            "cf_align": align.detach(),
            "diversity": diversity.detach(),
            "quant_error": out.quant.quant_error,
        }
