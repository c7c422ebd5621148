"""Residual quantizer (RQ-VAE style) with one or several codebook sets.

For a signal h: r_0 = h; c_l = argmin_k ||r_{l-1} - C_l[k]||^2; r_l = r_{l-1} - C_l[c_l];
z = sum_l C_l[c_l], passed on with the straight-through estimator (STE) so gradients of
downstream losses reach the encoder that produced h.

BBQRec quantizes several signals (item ID, behavior-aligned text / image ...) with ONE
codebook set shared by all of them (``n_codebook_sets=1``, every call uses set 0); the
"no shared codebook" ablation gives each signal its own set (``codebook_set=i``).
"""

from __future__ import annotations

from dataclasses import dataclass

import math

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class QuantizerOutput:
    z_q: torch.Tensor  # [B, D] quantized vector, straight-through (grads flow to the input)
    codes: torch.Tensor  # [B, L] int64, code index per level
    loss: torch.Tensor  # scalar: sum over levels of codebook + beta * commitment (MSE)
    distances: torch.Tensor  # [B, L, N] squared distance of r_{l-1} to every code at level l
    quant_error: torch.Tensor  # scalar, mean ||h - z||^2 per sample (monitoring only)


def squared_distances(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """||x_b - c_k||^2 for all pairs: [B, D] x [N, D] -> [B, N] (clamped at 0 against round-off)."""
    dist = (x * x).sum(-1, keepdim=True) - 2.0 * x @ codebook.t() + (codebook * codebook).sum(-1)[None, :]
    return dist.clamp_min(0.0)


def kmeans(
    x: torch.Tensor, n_clusters: int, n_iters: int = 10, seeding: str = "kmeans++"
) -> torch.Tensor:
    """Lloyd's k-means on x [M, D] -> centroids [n_clusters, D].

    Uses the global torch RNG (deterministic given ``torch.manual_seed``). With fewer points
    than clusters, points are repeated with a tiny jitter so every centroid is distinct.
    Empty clusters are re-seeded with the point farthest from its centroid.
    """
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"kmeans needs a non-empty [M, D] matrix, got shape {tuple(x.shape)}")
    x = x.detach().float()
    m = x.shape[0]
    if m < n_clusters:
        reps = x[torch.randint(0, m, (n_clusters - m,), device=x.device)]
        x = torch.cat([x, reps + 1e-3 * x.std().clamp_min(1e-6) * torch.randn_like(reps)])
        m = x.shape[0]
    if seeding == "random":
        centroids = x[torch.randperm(m, device=x.device)[:n_clusters]].clone()
    elif seeding == "kmeans++":
        centroids = torch.empty(n_clusters, x.shape[1], device=x.device)
        centroids[0] = x[torch.randint(0, m, (1,), device=x.device)]
        closest = squared_distances(x, centroids[:1]).squeeze(1)  # [M]
        for k in range(1, n_clusters):
            weights = closest if closest.sum() > 0 else torch.ones_like(closest)
            idx = torch.multinomial(weights, 1)
            centroids[k] = x[idx]
            closest = torch.minimum(closest, squared_distances(x, centroids[k : k + 1]).squeeze(1))
    else:
        raise ValueError(f"unknown k-means seeding {seeding!r}; use 'kmeans++' or 'random'")
    for _ in range(n_iters):
        dist = squared_distances(x, centroids)  # [M, N]
        assign = dist.argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=n_clusters).float()
        empty = counts == 0
        centroids = torch.where(empty[:, None], centroids, sums / counts.clamp_min(1)[:, None])
        if empty.any():
            # the worst-served points become the new centroids of the empty clusters
            far = dist.gather(1, assign[:, None]).squeeze(1).topk(int(empty.sum())).indices
            centroids[empty] = x[far]
    return centroids


def usage_balance(distances: torch.Tensor, temperature_scale: float = 1.0) -> torch.Tensor:
    """Code-usage regulariser: sum over levels of log N - H(p_l), where
    p_l = mean over the batch of softmax(-d_l / T_l) is the batch's soft code usage at level l.

    distances [B, L, N] (squared distances of each level's residual to its codes). T_l is the
    batch's mean distance at level l times ``temperature_scale``, so the term is scale-free;
    a scale below 1 makes the soft assignment closer to the hard (nearest-code) one that
    decides the semantic IDs. Zero when every code gets the same soft share."""
    if distances.dim() != 3:
        raise ValueError(f"usage_balance needs distances [B, L, N], got {tuple(distances.shape)}")
    if temperature_scale <= 0:
        raise ValueError(f"temperature_scale must be > 0, got {temperature_scale}")
    temp = distances.detach().mean(dim=(0, 2), keepdim=True).clamp_min(1e-6) * temperature_scale  # [1, L, 1]
    probs = torch.softmax(-distances / temp, dim=-1).mean(0)  # [L, N]
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)  # [L]
    return (math.log(distances.shape[-1]) - entropy).sum()


class ResidualQuantizer(nn.Module):
    """L levels of N x D codebooks, optionally several independent codebook sets."""

    def __init__(
        self,
        n_levels: int,
        codebook_size: int,
        code_dim: int,
        n_codebook_sets: int = 1,
        beta: float = 0.25,
        kmeans_iters: int = 10,
        kmeans_seeding: str = "kmeans++",
    ) -> None:
        super().__init__()
        if min(n_levels, codebook_size, code_dim, n_codebook_sets) < 1:
            raise ValueError(
                f"ResidualQuantizer needs positive sizes, got n_levels={n_levels}, "
                f"codebook_size={codebook_size}, code_dim={code_dim}, n_codebook_sets={n_codebook_sets}"
            )
        self.n_levels = n_levels
        self.codebook_size = codebook_size
        self.code_dim = code_dim
        self.n_codebook_sets = n_codebook_sets
        self.beta = beta
        self.kmeans_iters = kmeans_iters
        self.kmeans_seeding = kmeans_seeding
        # [sets, L, N, D]; small random init, normally replaced by init_from_data
        self.codebooks = nn.Parameter(0.01 * torch.randn(n_codebook_sets, n_levels, codebook_size, code_dim))
        # how often each code was picked in training forwards since the last reseed
        self.register_buffer("usage_counts", torch.zeros(n_codebook_sets, n_levels, codebook_size))
        self.register_buffer("initialized", torch.zeros(n_codebook_sets, dtype=torch.bool))

    def _check_set(self, codebook_set: int) -> None:
        if not 0 <= codebook_set < self.n_codebook_sets:
            raise IndexError(f"codebook_set {codebook_set} out of range [0, {self.n_codebook_sets})")

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.code_dim:
            raise ValueError(f"quantizer input must be [B, {self.code_dim}], got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor, codebook_set: int = 0) -> QuantizerOutput:
        self._check_input(x)
        self._check_set(codebook_set)
        books = self.codebooks[codebook_set]  # [L, N, D]
        residual = x
        z_hat = torch.zeros_like(x)
        loss = x.new_zeros(())
        codes, dists = [], []
        for level in range(self.n_levels):
            dist = squared_distances(residual, books[level])  # [B, N]
            code = dist.detach().argmin(1)  # [B]
            chosen = books[level][code]  # [B, D]
            # codebook term moves codes to the residuals, commitment term the residuals to codes
            loss = loss + F.mse_loss(chosen, residual.detach()) + self.beta * F.mse_loss(residual, chosen.detach())
            z_hat = z_hat + chosen
            # detach so that level l's code is trained only by level l's codebook term
            residual = residual - chosen.detach()
            codes.append(code)
            dists.append(dist)
        codes_t = torch.stack(codes, 1)  # [B, L]
        if self.training:
            with torch.no_grad():
                for level in range(self.n_levels):
                    self.usage_counts[codebook_set, level] += torch.bincount(
                        codes_t[:, level], minlength=self.codebook_size
                    ).to(self.usage_counts.dtype)
        z_q = x + (z_hat - x).detach()  # straight-through estimator
        quant_error = (x.detach() - z_hat.detach()).pow(2).sum(-1).mean()
        return QuantizerOutput(z_q, codes_t, loss, torch.stack(dists, 1), quant_error)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, codebook_set: int = 0) -> torch.Tensor:
        """Codes [B, L] without touching usage counts."""
        return self.distances(x, codebook_set)[0]

    @torch.no_grad()
    def distances(self, x: torch.Tensor, codebook_set: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes [B, L], distances [B, L, N]): distances of r_{l-1} (along the greedy path)
        to every code at level l. The last level's row ranks alternative last codes for the
        same prefix, which is what collision fixing needs."""
        self._check_input(x)
        self._check_set(codebook_set)
        books = self.codebooks[codebook_set]
        residual = x
        codes, dists = [], []
        for level in range(self.n_levels):
            dist = squared_distances(residual, books[level])
            code = dist.argmin(1)
            residual = residual - books[level][code]
            codes.append(code)
            dists.append(dist)
        return torch.stack(codes, 1), torch.stack(dists, 1)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, codebook_set: int = 0) -> torch.Tensor:
        """Sum of the chosen code vectors: codes [B, L] -> [B, D] (equals forward's z_q value)."""
        self._check_set(codebook_set)
        if codes.dim() != 2 or codes.shape[1] != self.n_levels:
            raise ValueError(f"codes must be [B, {self.n_levels}], got {tuple(codes.shape)}")
        books = self.codebooks[codebook_set]
        return sum(books[level][codes[:, level]] for level in range(self.n_levels))

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, codebook_set: int | None = None) -> None:
        """Residual k-means: level l's codebook = k-means centroids of the level-l residuals.

        ``codebook_set=None`` initialises every set from the same data (for a shared set pass
        the concatenation of all signals' vectors)."""
        self._check_input(x)
        sets = range(self.n_codebook_sets) if codebook_set is None else [codebook_set]
        for s in sets:
            self._check_set(s)
            residual = x.detach().float()
            for level in range(self.n_levels):
                centroids = kmeans(residual, self.codebook_size, self.kmeans_iters, self.kmeans_seeding)
                self.codebooks.data[s, level] = centroids.to(self.codebooks.dtype)
                residual = residual - centroids[squared_distances(residual, centroids).argmin(1)]
            self.initialized[s] = True
            self.usage_counts[s].zero_()

    @torch.no_grad()
    def reseed_dead_codes(self, x: torch.Tensor, codebook_set: int = 0, min_count: float = 1.0) -> list[int]:
        """Replace codes picked fewer than ``min_count`` times since the last reseed with random
        current residuals of x at that level; resets the usage window. Returns the number of
        codes re-seeded per level."""
        self._check_input(x)
        self._check_set(codebook_set)
        books = self.codebooks.data[codebook_set]  # [L, N, D] (a view: edits land in place)
        residual = x.detach().float()
        reseeded = []
        for level in range(self.n_levels):
            dead = (self.usage_counts[codebook_set, level] < min_count).nonzero().squeeze(1)
            if dead.numel() > 0:
                pick = torch.randint(0, residual.shape[0], (dead.numel(),), device=x.device)
                books[level, dead] = residual[pick].to(books.dtype)
            reseeded.append(int(dead.numel()))
            residual = residual - books[level][squared_distances(residual, books[level]).argmin(1)]
        self.usage_counts[codebook_set].zero_()
        return reseeded

    @torch.no_grad()
    def code_usage(self, x: torch.Tensor | None = None, codebook_set: int = 0) -> list[float]:
        """Fraction of codes used per level: by encoding x, or (x=None) in the training window."""
        self._check_set(codebook_set)
        if x is None:
            used = (self.usage_counts[codebook_set] > 0).float().mean(1)
            return [float(u) for u in used]
        codes = self.encode(x, codebook_set)
        return [codes[:, level].unique().numel() / self.codebook_size for level in range(self.n_levels)]
