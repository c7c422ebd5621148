"""CLUB: a contrastive log-ratio upper bound of mutual information (Cheng et al., ICML 2020).

With a variational conditional q(s | b) close to p(s | b),
    I(b; s) <= E_{p(b,s)}[log q(s|b)] - E_{p(b)} E_{p(s)}[log q(s|b)].
On a batch of pairs (b_k, s_k):
    full     : mean_k log q(s_k|b_k) - mean_{k,l} log q(s_l|b_k)
    sampled  : mean_k log q(s_k|b_k) - mean_k log q(s_{pi(k)}|b_k),  pi a random permutation.
q(s|b) = N(mu(b), diag exp(logvar(b))), or N(mu(b), I) with ``learn_variance=False``. Two
alternating steps (BBQRec 4.1.1):
  * ``learning_loss`` fits q by maximum likelihood on DETACHED pairs (q's own optimiser);
  * ``forward`` gives the bound, which the encoders minimise (q's parameters are not stepped
    by that loss; see ``BBQTokenizer.mim_parameters``).
Why a unit variance is offered: in training the encoders move s against q. A learned variance
lets q become confident in some dimensions, the encoders then push s away from mu(b) exactly
there, and q's likelihood falls below that of a constant unit Gaussian (measured on Beauty:
NLL 2.4 nats per dimension against 1.42 for the constant), so the bound no longer bounds
anything. With a unit variance q cannot be exploited that way; the bound becomes half the
gap between the negative- and positive-pair squared errors of mu(b).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class CLUB(nn.Module):
    def __init__(self, b_dim: int, s_dim: int, hidden_dim: int = 64, sampled: bool = False,
                 learn_variance: bool = True) -> None:
        super().__init__()
        self.b_dim, self.s_dim, self.sampled = b_dim, s_dim, sampled
        self.learn_variance = learn_variance
        self.mu_net = nn.Sequential(nn.Linear(b_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, s_dim))
        # log-variance = 5 tanh(.) in [-5, 5]: a bounded variance keeps the likelihood from
        # blowing up on near-deterministic pairs early in training
        self.logvar_net = nn.Sequential(
            nn.Linear(b_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, s_dim), nn.Tanh()
        ) if learn_variance else None
        self.logvar_scale = 5.0

    def _params(self, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if b.dim() != 2 or b.shape[1] != self.b_dim:
            raise ValueError(f"CLUB expects b as [B, {self.b_dim}], got {tuple(b.shape)}")
        mu = self.mu_net(b)
        if not self.learn_variance:
            return mu, torch.zeros_like(mu)
        return mu, self.logvar_scale * self.logvar_net(b)

    def log_likelihood(self, b: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """mean_k log q(s_k | b_k) (full Gaussian log density, summed over dimensions)."""
        mu, logvar = self._params(b)
        log_density = -0.5 * ((s - mu) ** 2 / logvar.exp() + logvar + math.log(2 * math.pi))
        return log_density.sum(-1).mean()

    def learning_loss(self, b: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of q on detached pairs: only q's parameters get gradients."""
        return -self.log_likelihood(b.detach(), s.detach())

    def forward(self, b: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The CLUB estimate of I(b; s) (differentiable w.r.t. b and s)."""
        if s.shape[0] != b.shape[0] or s.dim() != 2 or s.shape[1] != self.s_dim:
            raise ValueError(f"CLUB expects s as [{b.shape[0]}, {self.s_dim}], got {tuple(s.shape)}")
        mu, logvar = self._params(b)  # [B, Ds]
        inv_var = (-logvar).exp()
        # the -0.5 logvar and constant terms are identical for positive and negative pairs
        # (both condition on b_k), so they cancel in the difference
        positive = -0.5 * ((s - mu) ** 2 * inv_var).sum(-1)  # [B]
        if self.sampled:
            perm = torch.randperm(s.shape[0], device=s.device)
            negative = -0.5 * ((s[perm] - mu) ** 2 * inv_var).sum(-1)  # [B]
        else:
            # mean_l (s_l - mu_k)^2 = E[s^2] - 2 mu_k E[s] + mu_k^2, per dimension: O(B D), not O(B^2 D)
            s_mean, s_sq_mean = s.mean(0), (s * s).mean(0)
            mean_sq = s_sq_mean[None, :] - 2 * mu * s_mean[None, :] + mu * mu  # [B, Ds]
            negative = -0.5 * (mean_sq * inv_var).sum(-1)  # [B]
        return (positive - negative).mean()
