"""What every stage-1 tokenizer (BBQ, TIGER's RQ-VAE, LETTER) shares.

A tokenizer turns each item into S signal vectors (D-dim, before quantization), quantizes
them with one ``ResidualQuantizer`` and exposes one interface to ``TokenizerTrainer``:

  set_features(features, masks)   item feature matrices, kept as non-persistent buffers so
                                   they follow ``.to(device)`` but stay out of checkpoints
  loss(batch) -> dict              'loss' (what the main optimiser minimises) + parts to log
  mim_learning_loss()              (BBQ) q's NLL on the last step's pairs, for CLUB's own steps
  encode_all() -> EncodedItems     codes [n, L, S], zq [n, S*D], last-level distances
  mim_parameters() / main_parameters()
Item indices are 0..n_items-1 everywhere (the lead maps RecBole ids onto them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from recbole_bbqrec.modules.quantizer import ResidualQuantizer


def mlp(in_dim: int, hidden_dims: Sequence[int], out_dim: int, dropout: float = 0.0) -> nn.Sequential:
    """Linear-ReLU-Dropout stack ending in a plain Linear (no activation on the output)."""
    layers: list[nn.Module] = []
    prev = in_dim
    for width in hidden_dims:
        layers += [nn.Linear(prev, width), nn.ReLU(), nn.Dropout(dropout)]
        prev = width
    layers.append(nn.Linear(prev, out_dim))
    return nn.Sequential(*layers)


def masked_mse(x_hat: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over the rows where mask is True (0 when no row is valid)."""
    per_row = (x_hat - x).pow(2).mean(-1)  # [B]
    if mask is None:
        return per_row.mean()
    mask = mask.to(per_row.dtype)
    return (per_row * mask).sum() / mask.sum().clamp_min(1.0)


@dataclass
class EncodedItems:
    codes: np.ndarray  # [n, L, S] int64
    zq: np.ndarray  # [n, S*D] float32, concat over signals of the quantized vectors
    last_distances: np.ndarray  # [n, S, N] float32, squared distances at the last level


class ItemTokenizer(nn.Module):
    """Base class; subclasses set ``signal_names``, ``quantizer``, ``modalities`` and implement
    ``signal_vectors`` and ``loss``."""

    uses_sequences: bool = False  # True: the trainer feeds one sequence row per user
    validation_metric: str = "neg_recon_rq"  # higher is better

    def __init__(self, n_items: int, modality_dims: dict[str, int]) -> None:
        super().__init__()
        if n_items < 1:
            raise ValueError(f"n_items must be positive, got {n_items}")
        self.n_items = n_items
        self.modality_dims = dict(modality_dims)
        self.modalities: list[str] = list(modality_dims)
        self.signal_names: list[str] = []
        self.quantizer: ResidualQuantizer

    # ---- features -------------------------------------------------------------------------
    def set_features(
        self, features: dict[str, torch.Tensor], masks: dict[str, torch.Tensor] | None = None
    ) -> None:
        """Attach the item feature matrices [n_items, dim_m] (and optional bool masks [n_items],
        False = the item lacks that modality) for every modality this tokenizer uses."""
        masks = masks or {}
        device = next(self.parameters()).device
        for i, name in enumerate(self.modalities):
            if name not in features:
                raise KeyError(f"missing feature matrix for modality {name!r}; got {sorted(features)}")
            feat = torch.as_tensor(features[name], dtype=torch.float32)
            want = (self.n_items, self.modality_dims[name])
            if tuple(feat.shape) != want:
                raise ValueError(f"modality {name!r}: feature matrix is {tuple(feat.shape)}, expected {want}")
            if not torch.isfinite(feat).all():
                bad = (~torch.isfinite(feat)).any(1).nonzero().squeeze(1)[:5].tolist()
                raise ValueError(f"modality {name!r}: non-finite features in item rows {bad} ...")
            mask = masks.get(name)
            mask = torch.ones(self.n_items, dtype=torch.bool) if mask is None else torch.as_tensor(mask).bool()
            if tuple(mask.shape) != (self.n_items,):
                raise ValueError(f"modality {name!r}: mask is {tuple(mask.shape)}, expected ({self.n_items},)")
            self.register_buffer(f"_feat_{i}", feat.to(device), persistent=False)
            self.register_buffer(f"_mask_{i}", mask.to(device), persistent=False)

    def feature(self, name: str, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features [B, dim], mask [B]) of a modality for item indices [B]."""
        i = self.modalities.index(name)
        feat = getattr(self, f"_feat_{i}", None)
        if feat is None:
            raise RuntimeError("call set_features(...) before training or encoding")
        return feat[items], getattr(self, f"_mask_{i}")[items]

    # ---- signals and codebooks ------------------------------------------------------------
    def signal_vectors(self, items: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pre-quantization vectors {signal: [B, D]} for item indices [B]."""
        raise NotImplementedError

    def codebook_set(self, signal: str) -> int:
        """Which codebook set quantizes a signal (0 for all when codebooks are shared)."""
        return 0 if self.quantizer.n_codebook_sets == 1 else self.signal_names.index(signal)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def mim_parameters(self) -> list[nn.Parameter]:
        return []

    def id_parameters(self) -> list[nn.Parameter]:
        """Parameters the trainer gives their own learning rate (BBQ's learnable ID table)."""
        return []

    def decoder_dependence(self) -> dict[str, float]:
        """Reconstruction error with parts of the decoder input zeroed (BBQ), else {}."""
        return {}

    def main_parameters(self) -> list[nn.Parameter]:
        mim = {id(p) for p in self.mim_parameters()}
        return [p for p in self.parameters() if id(p) not in mim]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def all_signal_vectors(self, chunk: int = 4096) -> dict[str, torch.Tensor]:
        """{signal: [n_items, D]} in eval mode (restores the previous mode)."""
        was_training = self.training
        self.eval()
        parts: dict[str, list[torch.Tensor]] = {s: [] for s in self.signal_names}
        for start in range(0, self.n_items, chunk):
            items = torch.arange(start, min(start + chunk, self.n_items), device=self.device)
            for name, vec in self.signal_vectors(items).items():
                parts[name].append(vec)
        self.train(was_training)
        return {name: torch.cat(vecs) for name, vecs in parts.items()}

    @torch.no_grad()
    def init_codebooks(self) -> None:
        """k-means codebook init on all items' encoder outputs (items are few, ~1e4).
        A shared set is fitted on the union of all signals' vectors."""
        vectors = self.all_signal_vectors()
        if self.quantizer.n_codebook_sets == 1:
            self.quantizer.init_from_data(torch.cat([vectors[s] for s in self.signal_names]), 0)
        else:
            for s in self.signal_names:
                self.quantizer.init_from_data(vectors[s], self.codebook_set(s))

    @torch.no_grad()
    def reseed_dead_codes(self, min_count: float = 1.0) -> dict[str, list[int]]:
        """Re-seed codes unused since the last call; {codebook set name: re-seeded per level}."""
        vectors = self.all_signal_vectors()
        if self.quantizer.n_codebook_sets == 1:
            x = torch.cat([vectors[s] for s in self.signal_names])
            return {"shared": self.quantizer.reseed_dead_codes(x, 0, min_count)}
        return {
            s: self.quantizer.reseed_dead_codes(vectors[s], self.codebook_set(s), min_count)
            for s in self.signal_names
        }

    @torch.no_grad()
    def encode_all(self) -> EncodedItems:
        """Codes, quantized vectors and last-level distances of every item (eval mode)."""
        vectors = self.all_signal_vectors()
        codes, zqs, last = [], [], []
        for s in self.signal_names:
            c, d = self.quantizer.distances(vectors[s], self.codebook_set(s))  # [n, L], [n, L, N]
            codes.append(c)
            zqs.append(self.quantizer.decode(c, self.codebook_set(s)))
            last.append(d[:, -1])
        return EncodedItems(
            codes=torch.stack(codes, 2).cpu().numpy().astype(np.int64),
            zq=torch.cat(zqs, 1).float().cpu().numpy(),
            last_distances=torch.stack(last, 1).float().cpu().numpy(),
        )

    @torch.no_grad()
    def zq_from_codes(self, codes: np.ndarray) -> np.ndarray:
        """Quantized vectors [n, S*D] for codes [n, L, S] (after collision fixing)."""
        codes_t = torch.as_tensor(codes, dtype=torch.long, device=self.device)
        zqs = [self.quantizer.decode(codes_t[:, :, i], self.codebook_set(s)) for i, s in enumerate(self.signal_names)]
        return torch.cat(zqs, 1).float().cpu().numpy()

    @torch.no_grad()
    def validation_score(self, valid: dict[str, torch.Tensor] | None = None, chunk: int = 4096) -> float:
        """Default: minus the mean reconstruction + RQ loss over all items (higher is better)."""
        was_training = self.training
        self.eval()
        total, count = 0.0, 0
        for start in range(0, self.n_items, chunk):
            items = torch.arange(start, min(start + chunk, self.n_items), device=self.device)
            parts = self.loss({"items": items})
            total += float(parts["recon"] + parts["rq"]) * items.numel()
            count += items.numel()
        self.train(was_training)
        return -total / count
