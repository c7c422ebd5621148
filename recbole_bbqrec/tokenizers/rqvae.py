"""TIGER's item tokenizer (Rajput et al., 2023): an RQ-VAE on one content embedding.

encoder MLP -> D, residual quantizer (3 levels x 256 by default), decoder MLP back to the
input; loss = reconstruction MSE + RQ loss. One signal (S = 1), named after the modality.
Defaults follow TIGER: D = 32, encoder 512-256-128, beta = 0.25.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from recbole_bbqrec.modules.quantizer import QuantizerOutput, ResidualQuantizer
from recbole_bbqrec.tokenizers.base import ItemTokenizer, masked_mse, mlp


@dataclass
class RQVAEPass:
    h: torch.Tensor  # [B, D] encoder output
    quant: QuantizerOutput
    recon: torch.Tensor  # scalar


class RQVAETokenizer(ItemTokenizer):
    def __init__(
        self,
        n_items: int,
        input_dim: int,
        code_dim: int = 32,
        n_levels: int = 3,
        codebook_size: int = 256,
        hidden_dims: Sequence[int] = (512, 256, 128),
        dropout: float = 0.0,
        beta: float = 0.25,
        modality: str = "text",
        kmeans_iters: int = 10,
    ) -> None:
        super().__init__(n_items, {modality: input_dim})
        self.modality = modality
        self.signal_names = [modality]
        self.encoder = mlp(input_dim, hidden_dims, code_dim, dropout)
        self.decoder = mlp(code_dim, list(reversed(list(hidden_dims))), input_dim, dropout)
        self.quantizer = ResidualQuantizer(n_levels, codebook_size, code_dim, 1, beta, kmeans_iters)

    def signal_vectors(self, items: torch.Tensor) -> dict[str, torch.Tensor]:
        x, _ = self.feature(self.modality, items)
        return {self.modality: self.encoder(x)}

    def _pass(self, items: torch.Tensor) -> RQVAEPass:
        x, mask = self.feature(self.modality, items)  # [B, in]
        h = self.encoder(x)  # [B, D]
        quant = self.quantizer(h)
        recon = masked_mse(self.decoder(quant.z_q), x, mask)
        return RQVAEPass(h, quant, recon)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self._pass(batch["items"])
        return {
            "loss": out.recon + out.quant.loss,
            "recon": out.recon.detach(),
            "rq": out.quant.loss.detach(),
            "quant_error": out.quant.quant_error,
        }
