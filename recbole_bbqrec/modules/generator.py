"""Stage-2 generator: encoder-decoder transformer over semantic IDs (paper 4.2, SPEC stage 2).

Encoder: one token per history item = sum of its L x S code embeddings + position,
self-attention with similarity-bucket value scaling (``use_similarity``).
Decoder: BOS then L steps; step l predicts the S-tuple at position l with S heads over N
codes; its input at l > 0 is the sum of the S code embeddings of position l-1 plus a level
embedding.  A tuple's score is the sum of its S log-probabilities.

The decoder is hand-written (not nn.TransformerDecoderLayer) so that during beam search
the W beams of a user share one copy of the encoder memory: cross-attention treats a
user's beams as W extra queries against its [T] memory keys, whose projections are computed
once per user; decoder self-attention keeps a KV cache reordered by the beam parents.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .attention import SimilarityEncoder, bucketize_similarity
from .beam_search import PrefixIndex, StepFn, constrained_beam_search
from .batched_steps import batched_step_fn
from .cpu_linear import InferenceLinear, linear
from .length_groups import encode_in_length_groups


# Beams decoded at once by ``generate``. On the CPU the whole search runs per chunk of
# DECODE_ROWS_CPU // beam_size users: measured on one core (Beauty IDs, beam 50, d_model 128,
# 4+4 layers, 512 users, CPU seconds) 32-128 users per chunk cost 3.8 ms per user against
# 4.5 with all users through each step at once (memory-bound [rows, d_ff] activations).
# An accelerator wants large batches.
DECODE_ROWS_CPU = 4096
DECODE_ROWS_CUDA = 1 << 16


def decode_rows(device: torch.device | str) -> int:
    return DECODE_ROWS_CUDA if torch.device(device).type == "cuda" else DECODE_ROWS_CPU


def user_chunks(n_users: int, beam_size: int, device: torch.device | str) -> list[slice]:
    """The users ``generate`` decodes together: the whole search runs per chunk, so a
    chunk's activations and KV cache stay in cache and no per-step result is concatenated."""
    users = max(1, decode_rows(device) // beam_size)
    if n_users <= users:                             # one chunk (also for an empty batch)
        return [slice(0, n_users)]
    return [slice(lo, min(lo + users, n_users)) for lo in range(0, n_users, users)]


def check_code_range(codes: torch.Tensor, codebook_size: int, name: str) -> None:
    """Every code in [0, codebook_size) (reads the tensor on the host: call once per load)."""
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= codebook_size):
        raise ValueError(f"{name} holds codes in [{int(codes.min())}, {int(codes.max())}] "
                         f"but codebook_size is {codebook_size}")


class _DecoderLayer(nn.Module):
    """Pre-LN decoder layer on tokens [B, W, t, d] (W independent beams per user)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.self_qkv = InferenceLinear(d_model, 3 * d_model)
        self.self_out = InferenceLinear(d_model, d_model)
        self.cross_q = InferenceLinear(d_model, d_model)
        self.cross_kv = InferenceLinear(d_model, 2 * d_model)
        self.cross_out = InferenceLinear(d_model, d_model)
        self.ffn = nn.Sequential(InferenceLinear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout),
                                 InferenceLinear(d_ff, d_model))
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(3))
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = nn.Dropout(dropout)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """memory [B, T, d] -> cross-attention keys, values [B, H, T, dh] (once per user)."""
        bsz, seq, _ = memory.shape
        k, v = self.cross_kv(memory).view(bsz, seq, 2, self.n_heads, self.d_head).unbind(2)
        return k.transpose(1, 2), v.transpose(1, 2)

    def forward(self, x: torch.Tensor, mem_k: torch.Tensor, mem_v: torch.Tensor,
                mem_bias: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x [B, W, t, d]; mem_k/v [B, H, T, dh]; mem_bias [B, 1, 1, T] additive;
        past: cached self-attention (k, v) [B, W, tp, d] or None."""
        bsz, width, steps, d_model = x.shape
        heads, d_head = self.n_heads, self.d_head
        q, k, v = self.self_qkv(self.norms[0](x)).chunk(3, dim=-1)       # [B, W, t, d] each
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        if steps == 1:
            # One new token per beam (cached decoding): a [1 x tp] score row per beam and
            # head is far cheaper as broadcast-multiply-sum than as B*W*H tiny matmuls.
            qh = q.view(bsz, width, 1, heads, d_head)
            kh = k.view(bsz, width, -1, heads, d_head)
            scores = (qh * kh).sum(-1) / math.sqrt(d_head)                 # [B, W, tp+1, H]
            attn = self.attn_dropout(torch.softmax(scores, dim=2))
            out = (attn[..., None] * v.view(bsz, width, -1, heads, d_head)).sum(2)
            out = out.reshape(bsz, width, 1, d_model)
        else:
            qh = q.view(bsz, width, steps, heads, d_head).transpose(2, 3)  # [B, W, H, t, dh]
            kh = k.view(bsz, width, -1, heads, d_head).transpose(2, 3)
            vh = v.view(bsz, width, -1, heads, d_head).transpose(2, 3)
            n_past = kh.shape[3] - steps
            scores = torch.matmul(qh, kh.transpose(-1, -2)) / math.sqrt(d_head)
            future = torch.ones(steps, kh.shape[3], dtype=torch.bool, device=x.device)
            scores = scores.masked_fill(torch.triu(future, diagonal=n_past + 1),
                                        torch.finfo(scores.dtype).min)
            attn = self.attn_dropout(torch.softmax(scores, dim=-1))
            out = torch.matmul(attn, vh).transpose(2, 3).reshape(bsz, width, steps, d_model)
        x = x + self.dropout(self.self_out(out))

        # Cross-attention: all W*t queries of a user against that user's memory.
        q = self.cross_q(self.norms[1](x)).view(bsz, width * steps, heads, d_head).transpose(1, 2)
        scores = torch.matmul(q, mem_k.transpose(-1, -2)) / math.sqrt(d_head) + mem_bias
        attn = self.attn_dropout(torch.softmax(scores, dim=-1))            # [B, H, W*t, T]
        out = torch.matmul(attn, mem_v).transpose(1, 2).reshape(bsz, width, steps, d_model)
        x = x + self.dropout(self.cross_out(out))
        x = x + self.dropout(self.ffn(self.norms[2](x)))
        return x, (k, v)

    def step(self, x: torch.Tensor, past: list[tuple[torch.Tensor, torch.Tensor]],
             mem_kt: torch.Tensor, mem_v: torch.Tensor, mem_bias: torch.Tensor
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One new token per beam (the batched search's path, same maths as ``forward``).
        x [c, W, d]; past: per earlier position its (k, v) [c, W, d], or [c, 1, d] when all
        beams share it (BOS), so shared positions are never copied per beam;
        mem_kt [c, H, dh, T] and mem_v [c, H, T, dh], contiguous (laid out once, so that
        torch.matmul need not copy strided ones per call); mem_bias [c, 1, 1, T].
        Returns x [c, W, d] and (k, v) [c, W, d]."""
        users, width, d_model = x.shape
        heads, d_head = self.n_heads, self.d_head
        q, k, v = self.self_qkv(self.norms[0](x)).chunk(3, dim=-1)       # [c, W, d] each
        qh = q.view(users, width, heads, d_head)
        keys = [pk for pk, _ in past] + [k]
        values = [pv for _, pv in past] + [v]
        scores = torch.stack([(qh * kj.view(users, -1, heads, d_head)).sum(-1) for kj in keys],
                             dim=2) / math.sqrt(d_head)                    # [c, W, P, H]
        attn = self.attn_dropout(torch.softmax(scores, dim=2))
        out = attn[:, :, 0, :, None] * values[0].view(users, -1, heads, d_head)
        for j in range(1, len(values)):
            out = out + attn[:, :, j, :, None] * values[j].view(users, -1, heads, d_head)
        x = x + self.dropout(self.self_out(out.reshape(users, width, d_model)))
        q = self.cross_q(self.norms[1](x)).view(users, width, heads, d_head).transpose(1, 2)
        scores = torch.matmul(q, mem_kt) / math.sqrt(d_head) + mem_bias
        attn = self.attn_dropout(torch.softmax(scores, dim=-1))            # [c, H, W, T]
        out = torch.matmul(attn, mem_v).transpose(1, 2).reshape(users, width, d_model)
        x = x + self.dropout(self.cross_out(out))
        x = x + self.dropout(self.ffn(self.norms[2](x)))
        return x, (k, v)


class SemanticIDGenerator(nn.Module):
    """Encoder-decoder generator of L-position, S-signal semantic IDs (codes in [0, N)).

    Without autograd on a CPU its Linear layers, and its head when it scores one level (as
    decoding does), run on oneDNN (``cpu_linear``); ``cpu_linear.set_onednn(generator,
    False)`` keeps PyTorch's default kernel."""

    onednn: bool = True             # the head's flag; the Linear layers carry their own

    def __init__(self, n_levels: int, n_signals: int, codebook_size: int, d_model: int,
                 n_heads: int, n_encoder_layers: int, n_decoder_layers: int, d_ff: int,
                 dropout: float, max_history: int, n_buckets: int, use_similarity: bool,
                 similarity_per_signal: bool = True, similarity_parts: int | None = None) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_levels, self.n_signals, self.codebook_size = n_levels, n_signals, codebook_size
        self.d_model, self.max_history = d_model, max_history
        self.n_buckets, self.use_similarity = n_buckets, use_similarity
        # cosine per signal part of the quantized vector (see bucketize_similarity);
        # ``similarity_parts`` says how many parts when the decoding layout is not one step
        # per level (a flat layout has S = 1 per step but the vector still holds S signals)
        if similarity_parts is None:
            similarity_parts = n_signals
        self.similarity_parts = similarity_parts if similarity_per_signal else 1
        # All L*S tables (N x d each) live in one embedding; table (l, s) starts at row
        # (l*S + s)*N.  Encoder and decoder share them (as TIGER's T5 shares its vocabulary).
        self.code_embedding = nn.Embedding(n_levels * n_signals * codebook_size, d_model)
        offsets = torch.arange(n_levels * n_signals).view(n_levels, n_signals) * codebook_size
        self.register_buffer("code_offsets", offsets, persistent=False)    # [L, S]
        self.position_embedding = nn.Embedding(max_history, d_model)
        self.encoder = SimilarityEncoder(n_encoder_layers, d_model, n_heads, d_ff, dropout,
                                         n_buckets, enabled=use_similarity)
        self.bos = nn.Parameter(torch.zeros(d_model))
        self.level_embedding = nn.Embedding(n_levels, d_model)
        self.decoder_layers = nn.ModuleList(_DecoderLayer(d_model, n_heads, d_ff, dropout)
                                            for _ in range(n_decoder_layers))
        self.decoder_norm = nn.LayerNorm(d_model)
        self.head_weight = nn.Parameter(torch.empty(n_levels, n_signals * codebook_size, d_model))
        self.head_bias = nn.Parameter(torch.zeros(n_levels, n_signals * codebook_size))
        self.input_dropout = nn.Dropout(dropout)
        for table in (self.code_embedding.weight, self.position_embedding.weight,
                      self.level_embedding.weight, self.bos, self.head_weight):
            nn.init.normal_(table, std=0.02)

    # ------------------------------------------------------------------ inputs
    def _check_codes(self, codes: torch.Tensor, name: str) -> None:
        """Shape check on every call; the range check only for CPU tensors. On an accelerator
        ``int(codes.min())`` would stall the device once per step, so there the codes are
        checked once when they are loaded (``check_code_range`` in ``load_semantic_ids``)."""
        if codes.dim() < 2 or tuple(codes.shape[-2:]) != (self.n_levels, self.n_signals):
            raise ValueError(f"{name} must end in [L, S] = [{self.n_levels}, {self.n_signals}], "
                             f"got shape {tuple(codes.shape)}")
        if codes.device.type == "cpu":
            check_code_range(codes, self.codebook_size, name)

    def _embed_tuples(self, codes: torch.Tensor, level: int) -> torch.Tensor:
        """codes [..., S] of position ``level`` -> sum of their S embeddings [..., d]."""
        return self.code_embedding(codes + self.code_offsets[level]).sum(-2)

    def _decoder_tokens(self, prefix: torch.Tensor) -> torch.Tensor:
        """prefix [B, W, l, S] -> decoder inputs [B, W, l+1, d] (BOS + one per tuple)."""
        bsz, width, steps, _ = prefix.shape
        bos = (self.bos + self.level_embedding.weight[0]).expand(bsz, width, 1, self.d_model)
        if steps == 0:
            return bos
        tuples = self.code_embedding(prefix + self.code_offsets[:steps]).sum(-2)  # [B, W, l, d]
        return torch.cat([bos, tuples + self.level_embedding.weight[1:steps + 1]], dim=2)

    # ------------------------------------------------------------------ encoder
    def encode(self, hist_codes: torch.Tensor, hist_mask: torch.Tensor,
               hist_zq: torch.Tensor | None = None) -> torch.Tensor:
        """hist_codes [B, T, L, S], hist_mask [B, T] (True = real item), hist_zq [B, T, Dz]
        -> memory [B, T, d]. Without autograd, positions past a user's last real item may be
        0 instead of the encoder's output there (they are padding: every reader masks them)."""
        self._check_codes(hist_codes, "hist_codes")
        bsz, seq = hist_codes.shape[:2]
        if seq > self.max_history:
            raise ValueError(f"history length {seq} exceeds max_history={self.max_history}")
        if tuple(hist_mask.shape) != (bsz, seq):
            raise ValueError(f"hist_mask must be {(bsz, seq)}, got {tuple(hist_mask.shape)}")
        if self.use_similarity and (hist_zq is None or tuple(hist_zq.shape[:2]) != (bsz, seq)):
            raise ValueError(f"use_similarity=True needs hist_zq [B, T, Dz] = [{bsz}, {seq}, "
                             f"Dz], got {None if hist_zq is None else tuple(hist_zq.shape)}")
        if torch.is_grad_enabled():
            return self._encode_rows(hist_codes, hist_mask, hist_zq)
        # Inference: only each user's real positions (``length_groups``).
        return encode_in_length_groups(self._encode_rows, hist_codes, hist_mask, hist_zq)

    def _encode_rows(self, hist_codes: torch.Tensor, hist_mask: torch.Tensor,
                     hist_zq: torch.Tensor | None) -> torch.Tensor:
        """The encoder on histories [B, T', L, S] as given (checked by ``encode``)."""
        seq = hist_codes.shape[1]
        items = self.code_embedding(hist_codes + self.code_offsets).sum((-2, -3))  # [B, T', d]
        x = self.input_dropout(items + self.position_embedding.weight[:seq])
        buckets = None
        if self.use_similarity:
            buckets = bucketize_similarity(hist_zq, self.n_buckets, self.similarity_parts)
        return self.encoder(x, buckets, ~hist_mask.bool())

    def _memory_state(self, memory: torch.Tensor, memory_mask: torch.Tensor,
                      transposed: bool = False):
        """Per decoder layer the cross-attention (keys, values) [B, H, T, dh], or with
        ``transposed`` (keys [B, H, dh, T], values) both contiguous; mask bias [B, 1, 1, T]."""
        kv = [layer.memory_kv(memory) for layer in self.decoder_layers]
        if transposed:
            kv = [(k.transpose(-1, -2).contiguous(), v.contiguous()) for k, v in kv]
        bias = torch.zeros(memory_mask.shape, dtype=memory.dtype, device=memory.device)
        bias = bias.masked_fill(~memory_mask.bool(), torch.finfo(memory.dtype).min)
        return kv, bias[:, None, None, :]                                  # [B, 1, 1, T]

    def _decode(self, tokens, kv, bias, past=None):
        """tokens [B, W, t, d] -> hidden [B, W, t, d], new caches."""
        x, caches = self.input_dropout(tokens), []
        for i, layer in enumerate(self.decoder_layers):
            x, cache = layer(x, kv[i][0], kv[i][1], bias, None if past is None else past[i])
            caches.append(cache)
        return self.decoder_norm(x), caches

    def _logits(self, hidden: torch.Tensor, first_level: int) -> torch.Tensor:
        """hidden [B, W, t, d] at levels first_level.. -> logits [B, W, t, S, N]."""
        steps = hidden.shape[2]
        if steps == 1:       # one level (decoding): the head as a Linear, as generate runs it
            logits = linear(hidden, self.head_weight[first_level], self.head_bias[first_level],
                            self.onednn)
            return logits.view(*hidden.shape[:3], self.n_signals, self.codebook_size)
        weight = self.head_weight[first_level:first_level + steps]          # [t, S*N, d]
        logits = torch.einsum("bwtd,tkd->bwtk", hidden, weight)
        logits = logits + self.head_bias[first_level:first_level + steps]
        return logits.view(*hidden.shape[:3], self.n_signals, self.codebook_size)

    # ------------------------------------------------------------------ training / scoring
    def forward(self, hist_codes: torch.Tensor, hist_mask: torch.Tensor,
                hist_zq: torch.Tensor | None, target_codes: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: target_codes [B, L, S] -> logits [B, L, S, N]."""
        self._check_codes(target_codes, "target_codes")
        memory = self.encode(hist_codes, hist_mask, hist_zq)
        kv, bias = self._memory_state(memory, hist_mask)
        tokens = self._decoder_tokens(target_codes[:, None, :self.n_levels - 1])
        hidden, _ = self._decode(tokens, kv, bias)
        return self._logits(hidden, 0)[:, 0]

    def loss(self, hist_codes: torch.Tensor, hist_mask: torch.Tensor,
             hist_zq: torch.Tensor | None, target_codes: torch.Tensor,
             label_smoothing: float = 0.0) -> torch.Tensor:
        """Mean cross-entropy over all L*S codes of the target (``label_smoothing`` spreads
        that share of each code's target mass over the N codes, as in TIGER's T5 recipe)."""
        logits = self.forward(hist_codes, hist_mask, hist_zq, target_codes)
        return F.cross_entropy(logits.reshape(-1, self.codebook_size), target_codes.reshape(-1),
                               label_smoothing=label_smoothing)

    def score_items(self, hist_codes: torch.Tensor, hist_mask: torch.Tensor,
                    hist_zq: torch.Tensor | None, candidate_codes: torch.Tensor) -> torch.Tensor:
        """candidate_codes [B, C, L, S] -> log-likelihood [B, C] (sum over all L*S codes)."""
        self._check_codes(candidate_codes, "candidate_codes")
        memory = self.encode(hist_codes, hist_mask, hist_zq)
        kv, bias = self._memory_state(memory, hist_mask)
        hidden, _ = self._decode(self._decoder_tokens(candidate_codes[:, :, :self.n_levels - 1]),
                                 kv, bias)
        log_probs = torch.log_softmax(self._logits(hidden, 0), dim=-1)    # [B, C, L, S, N]
        return log_probs.gather(-1, candidate_codes[..., None]).squeeze(-1).sum((-1, -2))

    # ------------------------------------------------------------------ decoding
    def step_log_probs(self, memory: torch.Tensor, memory_mask: torch.Tensor,
                       prefix_codes: torch.Tensor) -> torch.Tensor:
        """Stateless next-tuple distribution. memory [B, T, d], memory_mask [B, T] (True =
        real); prefix_codes [B, W, l, S] -> [B, W, S, N] (or [B, l, S] -> [B, S, N]).
        Beams are grouped per user so the memory is never copied per beam."""
        squeeze = prefix_codes.dim() == 3
        prefix = prefix_codes[:, None] if squeeze else prefix_codes
        kv, bias = self._memory_state(memory, memory_mask)
        hidden, _ = self._decode(self._decoder_tokens(prefix), kv, bias)
        level = prefix.shape[2]
        out = torch.log_softmax(self._logits(hidden[:, :, -1:], level)[:, :, 0], dim=-1)
        return out[:, 0] if squeeze else out

    def make_step_fn(self, memory: torch.Tensor, memory_mask: torch.Tensor) -> StepFn:
        """A beam-search step function with a decoder KV cache, reordered by ``parent``.
        Falls back to recomputing the prefix when called out of sequence."""
        kv, bias = self._memory_state(memory, memory_mask)
        state: dict = {"past": None, "length": -1}

        def step(prefix: torch.Tensor, parent: torch.Tensor | None) -> torch.Tensor:
            level = prefix.shape[2]
            past = state["past"]
            if level > 0 and parent is not None and state["length"] == level:
                index = parent[:, :, None, None]
                past = [tuple(t.gather(1, index.expand(-1, -1, *t.shape[2:])) for t in layer)
                        for layer in past]
                tokens = self._decoder_tokens(prefix)[:, :, -1:]             # newest token only
            else:
                past, tokens = None, self._decoder_tokens(prefix)
            hidden, state["past"] = self._decode(tokens, kv, bias, past)
            state["length"] = level + 1
            return torch.log_softmax(self._logits(hidden[:, :, -1:], level)[:, :, 0], dim=-1)

        return step

    def make_batched_step_fn(self, memory: torch.Tensor, memory_mask: torch.Tensor,
                             rows_per_chunk: int = DECODE_ROWS_CPU) -> StepFn:
        """The step function of :meth:`generate` for a batch of many users times W beams
        (``batched_steps.batched_step_fn``): the log-probs of :meth:`make_step_fn` up to
        float rounding."""
        return batched_step_fn(self, memory, memory_mask, rows_per_chunk)

    def _check_index(self, index: PrefixIndex) -> None:
        if (index.n_levels, index.n_signals) != (self.n_levels, self.n_signals):
            raise ValueError(f"index has [L, S] = [{index.n_levels}, {index.n_signals}], the "
                             f"model [{self.n_levels}, {self.n_signals}]")
        if index.max_code >= self.codebook_size:
            raise ValueError(f"index uses code {index.max_code} >= codebook_size "
                             f"{self.codebook_size}")

    @torch.no_grad()
    def generate(self, hist_codes: torch.Tensor, hist_mask: torch.Tensor,
                 hist_zq: torch.Tensor | None, index: PrefixIndex, beam_size: int,
                 topk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Trie-constrained beam search -> (item_ids [B, K], scores [B, K]), K = topk or
        beam_size, best first; -1 / -inf pad when the catalogue has fewer than K items.
        Call ``eval()`` first: dropout is not switched off here."""
        self._check_index(index)
        memory = self.encode(hist_codes, hist_mask, hist_zq)
        return self.decode(memory, hist_mask, index, beam_size, topk)

    @torch.no_grad()
    def decode(self, memory: torch.Tensor, memory_mask: torch.Tensor, index: PrefixIndex,
               beam_size: int, topk: int | None = None,
               wrap_step: Callable[[StepFn], StepFn] | None = None, prune: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """The search part of :meth:`generate`, from the encoder's memory [B, T, d]: the whole
        search per chunk of users (``user_chunks``), the last level pruned to the beams that
        can reach the top ``topk`` (``prune=False`` scores them all: same result, for the
        bench). ``wrap_step`` wraps each chunk's step function (the bench times the model)."""
        self._check_index(index)
        rows = decode_rows(memory.device)
        parts = []
        for sl in user_chunks(memory.shape[0], beam_size, memory.device):
            step = self.make_batched_step_fn(memory[sl], memory_mask[sl], rows)
            if wrap_step is not None:
                step = wrap_step(step)
            parts.append(constrained_beam_search(step, index, memory[sl].shape[0], beam_size,
                                                 memory.device, topk, prune=prune))
        if len(parts) == 1:
            return parts[0]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    # ------------------------------------------------------------------ ablation: inherit
    @torch.no_grad()
    def inherit_codebooks(self, codebooks: torch.Tensor, seed: int = 0) -> None:
        """Initialise the code tables from stage-1 codebooks ([L, N, D] shared by all
        signals, or [L, S, N, D]); they stay learnable (the paper's "inherit" ablation).
        D != d_model goes through a fixed random orthonormal projection; vectors are
        rescaled to the tables' init std so the optimisation scale is unchanged."""
        if codebooks.dim() == 3:
            codebooks = codebooks[:, None].expand(-1, self.n_signals, -1, -1)
        n_levels, n_signals, n_codes, dim = codebooks.shape
        if (n_levels, n_signals, n_codes) != (self.n_levels, self.n_signals, self.codebook_size):
            raise ValueError(f"codebooks [L, S, N, D] = {tuple(codebooks.shape)} do not match the "
                             f"model's [{self.n_levels}, {self.n_signals}, {self.codebook_size}, D]")
        vectors = codebooks.float().reshape(-1, dim).to(self.code_embedding.weight.device)
        if dim != self.d_model:
            gen = torch.Generator().manual_seed(seed)
            basis, _ = torch.linalg.qr(torch.randn(max(dim, self.d_model),
                                                   min(dim, self.d_model), generator=gen))
            projection = basis if dim > self.d_model else basis.T          # [D, d]
            vectors = vectors @ projection.to(vectors.device)
        target_std = float(self.code_embedding.weight.std())
        vectors = vectors * (target_std / float(vectors.std().clamp_min(1e-12)))
        self.code_embedding.weight.copy_(vectors)
