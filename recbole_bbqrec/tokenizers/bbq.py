"""BBQRec's stage-1 tokenizer: behavior-aligned multimodal quantization (paper 4.1, SPEC 1-7).

Per modality m (any list: text, image, category ...):
  s_m = E_m^spec(x_m)  modality-specific,   b_m = E_m^beh(x_m)  behavior-aligned   (D-dim MLPs)
plus a learnable item-ID embedding b_id: the signals. Every signal is whitened with its own
statistics (``signal_norm``) before ONE residual quantizer (one
shared codebook set, or one set per signal for the ablation) -> z_sig.
  L_recon = sum_m MSE(x_m, Dec_m([z_m ; s_m])) + MSE(x_m, Dec_m([z_m ; 0]))
  L_RQ    = sum over signals of the quantizer loss
  L_MIM   = sum_m max(0, CLUB(b_m, s_m)) / D     (per dimension; CLUB's q nets get their own steps)
  L_rec   = InfoNCE(cos(s_u,t, e_{t+1}) / tau) at every position t of each user's sequence,
            against every item of the step (histories, item batch and sampled negatives),
            e_i = [z_sig for sig], s_u,t = a causal transformer over e_1..e_t.
  L = L_recon + L_RQ + alpha L_MIM + gamma L_rec + w sum_sig ||E[b_sig b_sig^T] - I||_F^2 / D
      + u sum_sig sum_l (log N - H(batch-mean soft usage of signal sig at level l)).

Choices the paper leaves open, and why:
* Whitened signals. Raw encoder outputs have different scales (measured on Beauty: ID 1.07,
  category 2.12, text 4.66), so k-means on their union gave every signal its own codes and no
  code was used by two signals: a shared codebook in name only. Per-dimension scaling was not
  enough either (``modules/whitening.py`` says why); whitened signals share their first two
  moments, so the shared codebook is shared, and each signal weighs the same in e's cosine.
  The last term (weight ``whiteness_weight``) keeps them white between calibrations: the
  contrastive task otherwise folds the content signals onto a few directions (their part of
  the cosine is noise to it), and a folded signal gets a handful of codes.
* The ID signal starts from collaborative embeddings of the training split when ``id_init`` is
  given (see ``collaborative.py``); from random numbers it stays noise for many passes.
* The decoders must need z. With [z ; s] alone they learned to ignore z (reconstruction error
  .478 with both, .525 with z zeroed, .976 with s zeroed). The second term reconstructs from z
  alone, so the quantized behavior-aligned code carries the modality's content and s only adds
  the detail z cannot hold: s is the residual the paper's [z ; s] decoder allows.
* Every signal spreads over the shared codebook (weight ``usage_weight``, see
  ``modules/quantizer.usage_balance``). Nearest-code assignment of whitened 128-d vectors
  leaves half the codes of a level unused by a given signal (Beauty, 4 epochs: text 41%,
  category 47% at level 1), and re-assigning codes after training under a capacity cap cost
  much of the behavior the codes carry (reports/Beauty-stage1.md). Trained in, the encoders
  and codebooks move together, so the spread is learned rather than imposed.
Ablations: use_mim=False drops CLUB and the specific encoders (decoders see z_m alone);
use_rec=False drops L_rec and the ID signal; shared_codebook=False; ``signals`` drops any one.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recbole_bbqrec.modules.club import CLUB
from recbole_bbqrec.modules.quantizer import ResidualQuantizer, usage_balance
from recbole_bbqrec.modules.whitening import SignalWhitening, whiteness_loss
from recbole_bbqrec.tokenizers.base import ItemTokenizer, masked_mse, mlp
from recbole_bbqrec.tokenizers.sequence_encoder import SequenceEncoder

ID_SIGNAL = "id"


SIGNAL_NORMS = ("whiten", "standardize", "none")


def make_signal_norm(dim: int, kind: str = "standardize") -> nn.Module:
    """The map in front of the quantizer: 'whiten' (ZCA from all items, see
    ``modules/whitening.py``), 'standardize' (per dimension, batch statistics in training,
    running ones in eval, no learned scale or shift) or 'none'."""
    if kind == "whiten":
        return SignalWhitening(dim)
    if kind == "standardize":
        return nn.BatchNorm1d(dim, affine=False, momentum=0.05)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"signal_norm must be one of {SIGNAL_NORMS}, got {kind!r}")


class BBQTokenizer(ItemTokenizer):
    uses_sequences = True

    def __init__(
        self,
        n_items: int,
        modality_dims: dict[str, int],
        code_dim: int = 128,
        n_levels: int = 3,
        codebook_size: int = 256,
        hidden_dims: Sequence[int] = (512, 256),
        dropout: float = 0.1,
        shared_codebook: bool = True,
        use_mim: bool = True,
        use_rec: bool = True,
        signals: Sequence[str] | None = None,
        temperature: float = 0.1,
        alpha: float = 1.0,
        gamma: float = 1.0,
        beta: float = 0.25,
        seq_dim: int = 128,
        seq_layers: int = 2,
        seq_heads: int = 2,
        max_len: int = 20,
        seq_dropout: float = 0.1,
        club_hidden: int = 64,
        club_sampled: bool = False,
        club_learned_variance: bool = False,
        kmeans_iters: int = 10,
        id_init: torch.Tensor | None = None,
        id_init_std: float = 0.1,
        signal_norm: str = "whiten",
        recon_from_z: bool = True,
        whiteness_weight: float = 1.0,
        usage_weight: float = 0.0,
        usage_temperature: float = 0.1,
    ) -> None:
        if ID_SIGNAL in modality_dims:
            raise ValueError(f"{ID_SIGNAL!r} is reserved for the item-ID signal; rename that modality")
        if signals is None:
            signals = ([ID_SIGNAL] if use_rec else []) + list(modality_dims)
        signals = list(signals)
        unknown = [s for s in signals if s != ID_SIGNAL and s not in modality_dims]
        if not signals or unknown or len(set(signals)) != len(signals):
            raise ValueError(
                f"signals must be a non-empty, duplicate-free subset of {[ID_SIGNAL, *modality_dims]}; got {signals}"
            )
        if ID_SIGNAL in signals and not use_rec:
            raise ValueError("the ID signal is only supervised by the contrastive task: use_rec=False drops it")
        used = [s for s in signals if s != ID_SIGNAL]
        super().__init__(n_items, {m: modality_dims[m] for m in used})
        self.signal_names = signals
        self.code_dim = code_dim
        self.use_mim, self.use_rec, self.shared_codebook = use_mim, use_rec, shared_codebook
        self.temperature, self.alpha, self.gamma = temperature, alpha, gamma
        self.recon_from_z = recon_from_z
        self.whiteness_weight = whiteness_weight
        self.usage_weight, self.usage_temperature = usage_weight, usage_temperature
        self.validation_metric = "recall@10" if use_rec else "neg_recon_rq"
        self.uses_sequences = use_rec

        hidden = list(hidden_dims)
        self.beh_encoders = nn.ModuleDict({m: mlp(d, hidden, code_dim, dropout) for m, d in self.modality_dims.items()})
        dec_in = 2 * code_dim if use_mim else code_dim
        self.decoders = nn.ModuleDict(
            {m: mlp(dec_in, list(reversed(hidden)), d, dropout) for m, d in self.modality_dims.items()}
        )
        self.norms = nn.ModuleDict({sig: make_signal_norm(code_dim, signal_norm) for sig in signals})
        if use_mim:
            self.spec_encoders = nn.ModuleDict({m: mlp(d, hidden, code_dim, dropout) for m, d in self.modality_dims.items()})
            # s only meets CLUB and the decoders: a per-dimension scale keeps q's likelihood sane
            self.spec_norms = nn.ModuleDict({m: make_signal_norm(code_dim, "standardize") for m in self.modality_dims})
            self.clubs = nn.ModuleDict({m: CLUB(code_dim, code_dim, club_hidden, club_sampled,
                                                    club_learned_variance) for m in self.modality_dims})
            self._club_pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if ID_SIGNAL in signals:
            self.id_embedding = nn.Embedding(n_items, code_dim)
            if id_init is None:
                nn.init.normal_(self.id_embedding.weight, std=id_init_std)
            else:
                if tuple(id_init.shape) != (n_items, code_dim):
                    raise ValueError(f"id_init must be [n_items={n_items}, code_dim={code_dim}], "
                                     f"got {tuple(id_init.shape)}")
                self.id_embedding.weight.data.copy_(id_init)
        n_sets = 1 if shared_codebook else len(signals)
        self.quantizer = ResidualQuantizer(n_levels, codebook_size, code_dim, n_sets, beta, kmeans_iters)
        if use_rec:
            self.seq_encoder = SequenceEncoder(len(signals) * code_dim, seq_dim, seq_layers, seq_heads,
                                               max_len, seq_dropout)

    # ---- signals --------------------------------------------------------------------------
    def _raw_signal(self, sig: str, items: torch.Tensor) -> torch.Tensor:
        """The signal before normalisation [B, D]."""
        if sig == ID_SIGNAL:
            return self.id_embedding(items)
        return self.beh_encoders[sig](self.feature(sig, items)[0])

    def signal_vectors(self, items: torch.Tensor) -> dict[str, torch.Tensor]:
        return {sig: self.norms[sig](self._raw_signal(sig, items)) for sig in self.signal_names}

    @torch.no_grad()
    def calibrate_signal_norms(self, chunk: int = 4096) -> None:
        """Set each signal's normalisation statistics from all items (before k-means, so the
        codebooks are fitted on the vectors the quantizer will see)."""
        was_training = self.training
        self.eval()
        for sig in self.signal_names:
            norm = self.norms[sig]
            if isinstance(norm, nn.Identity):
                continue
            raw = torch.cat([self._raw_signal(sig, torch.arange(s, min(s + chunk, self.n_items), device=self.device))
                             for s in range(0, self.n_items, chunk)])
            if isinstance(norm, SignalWhitening):
                norm.calibrate(raw)
            else:
                norm.running_mean.copy_(raw.mean(0))
                norm.running_var.copy_(raw.var(0, unbiased=False).clamp_min(1e-8))
        self.train(was_training)

    def init_codebooks(self) -> None:
        self.calibrate_signal_norms()
        super().init_codebooks()

    def set_features(self, features, masks=None) -> None:
        super().set_features(features, masks)
        if self.usage_weight <= 0:
            return  # only the usage term reads the content groups
        # items with identical features (Beauty: 12,101 items, 254 category paths) get one
        # vote in the usage term: they must share a code, and weighting by items would ask
        # for a spread that only dropout noise can give
        for i in range(len(self.modalities)):
            feat = getattr(self, f"_feat_{i}")
            self.register_buffer(f"_content_{i}", torch.unique(feat, dim=0, return_inverse=True)[1],
                                 persistent=False)

    def _distinct_contents(self, sig: str, items: torch.Tensor) -> torch.Tensor:
        """Positions in items [U] of the first item of each distinct content of a signal [U']
        (every position for the ID signal, whose items are all distinct)."""
        if sig == ID_SIGNAL:
            return torch.arange(len(items), device=items.device)
        content = getattr(self, f"_content_{self.modalities.index(sig)}")[items]  # [U]
        groups, inverse = torch.unique(content, return_inverse=True)
        first = torch.full((len(groups),), len(items), dtype=torch.long, device=items.device)
        return first.scatter_reduce(0, inverse, torch.arange(len(items), device=items.device), "amin")

    def id_parameters(self) -> list[nn.Parameter]:
        """The learnable ID table (the trainer gives it its own learning rate)."""
        return [self.id_embedding.weight] if ID_SIGNAL in self.signal_names else []

    def mim_parameters(self) -> list[nn.Parameter]:
        return list(self.clubs.parameters()) if self.use_mim else []

    def mim_learning_loss(self) -> torch.Tensor:
        """Negative log-likelihood of every CLUB q net on the (detached) pairs of the last
        ``loss`` call: the trainer takes several q steps per encoder step with it, so q keeps
        up with the encoders and the bound stays an upper bound."""
        if not self.use_mim or not self._club_pairs:
            return torch.zeros((), device=self.device)
        return sum(self.clubs[m].learning_loss(b, s) for m, (b, s) in self._club_pairs.items())

    def club_nll_per_dim(self) -> float:
        """q's negative log-likelihood per modality and dimension on the last pairs (a q no
        better than a unit Gaussian scores ~1.42 on these standardised s)."""
        if not self.use_mim or not self._club_pairs:
            return 0.0
        with torch.no_grad():
            return float(self.mim_learning_loss()) / (len(self._club_pairs) * self.code_dim)

    def _item_losses(self, items: torch.Tensor,
                     loss_rows: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Quantize every signal of items [U]; returns (e [U, S*D], loss parts).

        ``loss_rows`` [U] bool selects the items whose reconstruction / MIM losses are computed
        (default: all). The contrastive task needs e for every item of the step, but the
        modality-specific encoders, decoders and CLUB only need the item batch.
        """
        zero = torch.zeros((), device=items.device)
        if loss_rows is None:
            loss_rows = torch.ones(len(items), dtype=torch.bool, device=items.device)
        recon, rq, mim, mim_raw, quant_error, white, usage = zero, zero, zero, zero, zero, zero, zero
        z = {}
        if self.use_mim:
            self._club_pairs = {}
        for sig in self.signal_names:
            b = self.norms[sig](self._raw_signal(sig, items))  # [U, D]
            if self.whiteness_weight > 0:
                white = white + whiteness_loss(b)
            quant = self.quantizer(b, self.codebook_set(sig))
            z[sig] = quant.z_q
            rq = rq + quant.loss
            if self.usage_weight > 0:
                # per signal, so that each signal spreads over the shared codebook (a term on
                # the union would be met by the signals splitting the codes between them)
                distinct = self._distinct_contents(sig, items)
                usage = usage + usage_balance(quant.distances[distinct], self.usage_temperature)
            quant_error = quant_error + quant.quant_error
            if sig == ID_SIGNAL:
                continue
            x, mask = self.feature(sig, items)  # [U, dim_m], [U]
            x, mask, b_l, z_l = x[loss_rows], mask[loss_rows], b[loss_rows], quant.z_q[loss_rows]
            if self.use_mim:
                s = self.spec_norms[sig](self.spec_encoders[sig](x))  # [U', D]
                # MI >= 0: a negative estimate means q lags behind the encoders; letting the
                # encoders chase it would drive the bound to -inf, so clamp at 0
                # per dimension, like every other term here (MSEs are means over dimensions);
                # summed over 128 dimensions the bound outweighed all other losses together and
                # the encoders met it by collapsing b onto a handful of codes
                bound = self.clubs[sig](b_l, s) / self.code_dim
                mim_raw = mim_raw + bound.detach()
                mim = mim + bound.clamp_min(0.0)
                self._club_pairs[sig] = (b_l.detach(), s.detach())
                recon = recon + masked_mse(self.decoders[sig](torch.cat([z_l, s], -1)), x, mask)
                if self.recon_from_z:
                    recon = recon + masked_mse(self.decoders[sig](torch.cat([z_l, torch.zeros_like(s)], -1)), x, mask)
            else:
                recon = recon + masked_mse(self.decoders[sig](z_l), x, mask)
        e = torch.cat([z[s] for s in self.signal_names], -1)  # [U, S*D]
        parts = {"recon": recon, "rq": rq, "mim": mim, "mim_raw": mim_raw, "white": white, "usage": usage}
        return e, {**parts, "quant_error": quant_error}

    def _rec_loss(self, e: torch.Tensor, rows: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """InfoNCE at every position of every sequence; rows [B, T] index e [U, S*D]."""
        out = self.seq_encoder(e[rows[:, :-1]])  # [B, T-1, S*D]: position t predicts item t+1
        steps = rows.shape[1] - 1
        valid = torch.arange(steps, device=rows.device)[None, :] < (lengths - 1)[:, None]  # [B, T-1]
        query = F.normalize(out[valid], dim=-1)  # [P, S*D]
        target = rows[:, 1:][valid]  # [P] rows of e
        # candidates are the step's unique items: the target's column is its only positive
        logits = query @ F.normalize(e, dim=-1).t() / self.temperature  # [P, U]
        return F.cross_entropy(logits, target)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """batch: 'items' [U0] (item-level losses) and, when use_rec, 'sequence' [B, T]
        (right-padded item indices, one row per user), 'sequence_len' [B] and optionally
        'negatives' [M] (extra candidate items for the contrastive task)."""
        with_rec = self.use_rec and "sequence" in batch
        pieces = [batch["items"]] if "items" in batch else []
        if with_rec:
            seq, lengths = batch["sequence"], batch["sequence_len"]
            if seq.shape[1] < 2:
                raise ValueError("contrastive sequences need at least 2 items (a history and a target)")
            valid = torch.arange(seq.shape[1], device=seq.device)[None, :] < lengths[:, None]
            pieces += [seq[valid], batch.get("negatives", seq.new_zeros(0))]
        if not pieces:
            raise ValueError("a tokenizer batch needs 'items' and/or 'sequence'/'sequence_len'")
        # every item of the step is encoded once; item-level losses run on the item batch only
        items, inverse = torch.unique(torch.cat(pieces), return_inverse=True)
        loss_rows = None
        if "items" in batch and with_rec:
            loss_rows = torch.zeros(len(items), dtype=torch.bool, device=items.device)
            loss_rows[inverse[: len(pieces[0])]] = True
        e, parts = self._item_losses(items, loss_rows)
        rec = torch.zeros((), device=items.device)
        if with_rec:
            offset = len(pieces[0]) if "items" in batch else 0
            rows = torch.zeros_like(seq)
            rows[valid] = inverse[offset: offset + int(valid.sum())]
            rec = self._rec_loss(e, rows, lengths)
        total = (parts["recon"] + parts["rq"] + self.alpha * parts["mim"] + self.gamma * rec
                 + self.whiteness_weight * parts["white"] + self.usage_weight * parts["usage"])
        out = {"loss": total, "rec": rec.detach()}
        out.update({k: v.detach() for k, v in parts.items()})
        return out

    @torch.no_grad()
    def decoder_dependence(self, chunk: int = 4096) -> dict[str, float]:
        """Reconstruction error (MSE over all items and modalities, eval mode) from [z ; s],
        from z alone (s zeroed) and from s alone (z zeroed): a decoder that ignores z has
        the first two far apart and the first and last close."""
        if not self.use_mim or not self.modalities:
            return {}
        was_training = self.training
        self.eval()
        totals = {"z_and_s": 0.0, "z_only": 0.0, "s_only": 0.0}
        for m in self.modalities:
            for start in range(0, self.n_items, chunk):
                items = torch.arange(start, min(start + chunk, self.n_items), device=self.device)
                x, mask = self.feature(m, items)
                z = self.quantizer(self.norms[m](self.beh_encoders[m](x)), self.codebook_set(m)).z_q
                s = self.spec_norms[m](self.spec_encoders[m](x))
                for key, inp in (("z_and_s", [z, s]), ("z_only", [z, torch.zeros_like(s)]),
                                 ("s_only", [torch.zeros_like(z), s])):
                    totals[key] += float(masked_mse(self.decoders[m](torch.cat(inp, -1)), x, mask)) * len(items)
        self.train(was_training)
        return {k: round(v / (self.n_items * len(self.modalities)), 4) for k, v in totals.items()}

    @torch.no_grad()
    def validation_score(self, valid: dict[str, torch.Tensor] | None = None, chunk: int = 1024) -> float:
        """recall@10 of the held-out next item over all items (use_rec), else -(recon + RQ)."""
        if not self.use_rec or valid is None:
            return super().validation_score(None)
        was_training = self.training
        self.eval()
        enc = self.encode_all()
        e_all = torch.as_tensor(enc.zq, device=self.device)  # [n, S*D], what the encoder was fed
        e_unit = F.normalize(e_all, dim=-1)
        hits = 0
        for start in range(0, len(valid["target"]), chunk):
            sl = slice(start, start + chunk)
            s_u = self.seq_encoder.last(e_all[valid["history"][sl]], valid["history_len"][sl])
            top = (F.normalize(s_u, dim=-1) @ e_unit.t()).topk(min(10, self.n_items), dim=-1).indices
            hits += int((top == valid["target"][sl][:, None]).any(1).sum())
        self.train(was_training)
        return hits / max(1, len(valid["target"]))
