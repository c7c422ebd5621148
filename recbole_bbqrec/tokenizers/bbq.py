"""BBQRec's stage-1 tokenizer: behavior-aligned multimodal quantization (paper 4.1).

Per modality m (any list: text, image, category ...):
  s_m = E_m^spec(x_m)  modality-specific,   b_m = E_m^beh(x_m)  behavior-aligned   (D-dim MLPs)
plus a learnable item-ID embedding b_id: the signals. All signals go through ONE residual
quantizer (one shared codebook set, or one set per signal for the ablation) -> z_sig.
  L_recon = sum_m MSE(x_m, Dec_m([z_m ; s_m]))   (items lacking m are left out of its term)
  L_RQ    = sum over signals of the quantizer loss
  L_MIM   = sum_m max(0, CLUB(b_m, s_m))          (CLUB's q nets get their own optimiser step)
  L_rec   = InfoNCE(cos(s_u, e_pos) / tau) over in-batch targets, e_i = [z_sig for sig],
            s_u = a small SASRec-style causal transformer over the history's e vectors.
  L = L_recon + L_RQ + alpha L_MIM + gamma L_rec.
Ablations: use_mim=False drops CLUB and the specific encoders (decoders see z_m alone);
use_rec=False drops L_rec and the ID signal; shared_codebook=False; ``signals`` drops any one.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recbole_bbqrec.modules.club import CLUB
from recbole_bbqrec.modules.quantizer import ResidualQuantizer
from recbole_bbqrec.tokenizers.base import ItemTokenizer, masked_mse, mlp

ID_SIGNAL = "id"


class SequenceEncoder(nn.Module):
    """SASRec-style causal transformer: history vectors [B, T, dim] -> last valid position [B, dim]."""

    def __init__(self, dim: int, n_layers: int = 2, n_heads: int = 2, max_len: int = 20, dropout: float = 0.1) -> None:
        super().__init__()
        if dim % n_heads != 0:
            raise ValueError(f"sequence encoder width {dim} (signals x code_dim) is not divisible by n_heads={n_heads}")
        self.max_len = max_len
        self.position = nn.Embedding(max_len, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(dim, n_heads, 2 * dim, dropout, activation="gelu", batch_first=True)
        self.layers = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)

    def forward(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        batch, steps, _ = seq.shape
        if steps > self.max_len:
            raise ValueError(f"history length {steps} exceeds the encoder's max_len {self.max_len}")
        pos = torch.arange(steps, device=seq.device)
        hidden = self.dropout(self.norm(seq + self.position(pos)[None]))
        causal = nn.Transformer.generate_square_subsequent_mask(steps, device=seq.device)
        # right padding + a causal mask: positions < length never see the padding
        hidden = self.layers(hidden, mask=causal, is_causal=True)  # [B, T, dim]
        return hidden[torch.arange(batch, device=seq.device), lengths.clamp_min(1) - 1]


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
        seq_layers: int = 2,
        seq_heads: int = 2,
        max_len: int = 20,
        seq_dropout: float = 0.1,
        club_hidden: int = 64,
        club_sampled: bool = False,
        kmeans_iters: int = 10,
        id_init_std: float = 0.1,
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
        self.validation_metric = "recall@10" if use_rec else "neg_recon_rq"
        self.uses_sequences = use_rec

        hidden = list(hidden_dims)
        self.beh_encoders = nn.ModuleDict({m: mlp(d, hidden, code_dim, dropout) for m, d in self.modality_dims.items()})
        dec_in = 2 * code_dim if use_mim else code_dim
        self.decoders = nn.ModuleDict(
            {m: mlp(dec_in, list(reversed(hidden)), d, dropout) for m, d in self.modality_dims.items()}
        )
        if use_mim:
            self.spec_encoders = nn.ModuleDict({m: mlp(d, hidden, code_dim, dropout) for m, d in self.modality_dims.items()})
            self.clubs = nn.ModuleDict({m: CLUB(code_dim, code_dim, club_hidden, club_sampled) for m in self.modality_dims})
        if ID_SIGNAL in signals:
            self.id_embedding = nn.Embedding(n_items, code_dim)
            nn.init.normal_(self.id_embedding.weight, std=id_init_std)
        n_sets = 1 if shared_codebook else len(signals)
        self.quantizer = ResidualQuantizer(n_levels, codebook_size, code_dim, n_sets, beta, kmeans_iters)
        if use_rec:
            self.seq_encoder = SequenceEncoder(len(signals) * code_dim, seq_layers, seq_heads, max_len, seq_dropout)

    # ---- signals --------------------------------------------------------------------------
    def signal_vectors(self, items: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for sig in self.signal_names:
            if sig == ID_SIGNAL:
                out[sig] = self.id_embedding(items)
            else:
                out[sig] = self.beh_encoders[sig](self.feature(sig, items)[0])
        return out

    def mim_parameters(self) -> list[nn.Parameter]:
        return list(self.clubs.parameters()) if self.use_mim else []

    def _item_losses(self, items: torch.Tensor,
                     loss_rows: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Quantize every signal of items [U]; returns (e [U, S*D], loss parts).

        ``loss_rows`` [U] bool selects the items whose reconstruction / MIM losses are computed
        (default: all). The contrastive task needs e for every history item, but the
        modality-specific encoders, decoders and CLUB only need the item batch: restricting
        them there removes most of a step's cost (histories hold ~10x more items).
        """
        zero = torch.zeros((), device=items.device)
        if loss_rows is None:
            loss_rows = torch.ones(len(items), dtype=torch.bool, device=items.device)
        recon, rq, mim, mim_raw, mim_learning, quant_error = zero, zero, zero, zero, zero, zero
        z = {}
        for sig in self.signal_names:
            if sig == ID_SIGNAL:
                b = self.id_embedding(items)
            else:
                x, mask = self.feature(sig, items)  # [U, dim_m], [U]
                b = self.beh_encoders[sig](x)  # [U, D]
            quant = self.quantizer(b, self.codebook_set(sig))
            z[sig] = quant.z_q
            rq = rq + quant.loss
            quant_error = quant_error + quant.quant_error
            if sig == ID_SIGNAL:
                continue
            x, mask, b_l, z_l = x[loss_rows], mask[loss_rows], b[loss_rows], quant.z_q[loss_rows]
            if self.use_mim:
                s = self.spec_encoders[sig](x)
                # MI >= 0: a negative estimate only means q lags behind the encoders, and
                # letting the encoders chase it drives the bound to -inf, so clamp at 0
                bound = self.clubs[sig](b_l, s)
                mim_raw = mim_raw + bound.detach()
                mim = mim + bound.clamp_min(0.0)
                mim_learning = mim_learning + self.clubs[sig].learning_loss(b_l, s)
                dec_in = torch.cat([z_l, s], -1)
            else:
                dec_in = z_l
            recon = recon + masked_mse(self.decoders[sig](dec_in), x, mask)
        e = torch.cat([z[s] for s in self.signal_names], -1)  # [U, S*D]
        parts = {"recon": recon, "rq": rq, "mim": mim, "mim_raw": mim_raw, "mim_learning": mim_learning}
        return e, {**parts, "quant_error": quant_error}

    def _rec_loss(self, s_u: torch.Tensor, e_target: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = F.normalize(s_u, dim=-1) @ F.normalize(e_target, dim=-1).t() / self.temperature  # [B, B]
        # the same item as another row's target is not a negative
        same = (target[:, None] == target[None, :]) & ~torch.eye(len(target), dtype=torch.bool, device=target.device)
        logits = logits.masked_fill(same, float("-inf"))
        return F.cross_entropy(logits, torch.arange(len(target), device=target.device))

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """batch: 'items' [U0] (item-level losses) and, when use_rec, 'history' [B, T]
        (right-padded item indices), 'history_len' [B], 'target' [B]."""
        with_rec = self.use_rec and "target" in batch
        pieces = [batch["items"]] if "items" in batch else []
        if with_rec:
            history, lengths, target = batch["history"], batch["history_len"], batch["target"]
            valid = torch.arange(history.shape[1], device=history.device)[None, :] < lengths[:, None]
            pieces += [history[valid], target]
        if not pieces:
            raise ValueError("a tokenizer batch needs 'items' and/or 'history'/'history_len'/'target'")
        # every item of the batch is encoded once; item-level losses run over all of them
        items, inverse = torch.unique(torch.cat(pieces), return_inverse=True)
        loss_rows = None
        if "items" in batch and with_rec:
            loss_rows = torch.zeros(len(items), dtype=torch.bool, device=items.device)
            loss_rows[inverse[: len(pieces[0])]] = True
        e, parts = self._item_losses(items, loss_rows)
        rec = torch.zeros((), device=items.device)
        if with_rec:
            n_hist = int(valid.sum())
            offset = len(pieces[0]) if "items" in batch else 0
            hist_rows = torch.zeros_like(history)
            hist_rows[valid] = inverse[offset : offset + n_hist]
            target_rows = inverse[offset + n_hist :]
            s_u = self.seq_encoder(e[hist_rows], lengths)  # [B, S*D]
            rec = self._rec_loss(s_u, e[target_rows], target)
        total = parts["recon"] + parts["rq"] + self.alpha * parts["mim"] + self.gamma * rec
        out = {"loss": total, "rec": rec.detach(), "mim_learning": parts.pop("mim_learning")}
        out.update({k: v.detach() for k, v in parts.items()})
        return out

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
            s_u = self.seq_encoder(e_all[valid["history"][sl]], valid["history_len"][sl])
            top = (F.normalize(s_u, dim=-1) @ e_unit.t()).topk(min(10, self.n_items), dim=-1).indices
            hits += int((top == valid["target"][sl][:, None]).any(1).sum())
        self.train(was_training)
        return hits / max(1, len(valid["target"]))
