"""The batched beam search's step function: many users times W beams per call.

``SemanticIDGenerator.generate`` hands ``constrained_beam_search`` this step function. It
returns the same log-probs as the generator's plain cached step function (``make_step_fn``,
which the reference search calls), up to float rounding, shaped for a batch of users:
users go through the decoder (and head) in chunks of ~``rows_per_chunk`` beams, which bounds
a step's [rows, d_ff] activations; the KV cache is kept per position, BOS once per user
([B, 1, d], never copied per beam), later positions gathered by ``parent`` chunk by chunk (no
growing cache re-concatenated each step, none kept after the last level); only the newest
token is embedded.
"""
from __future__ import annotations

import torch
from torch import nn

from .beam_search import StepFn
from .cpu_linear import linear


def batched_step_fn(model: nn.Module, memory: torch.Tensor, memory_mask: torch.Tensor,
                    rows_per_chunk: int) -> StepFn:
    """The step function for a ``generator.SemanticIDGenerator`` ``model`` (typed as a
    Module because the generator module imports this one): memory [B, T, d], memory_mask
    [B, T] (True = real) -> step(prefix [B, W, l, S], parent [B, W] or None, users=None)
    -> log-probs [B, W, S, N]. Called out of sequence, it rebuilds the cache from the
    prefix. At the last level it also takes ``users`` (batch rows) and may be called again,
    which the search's pruned last level needs. ``generate`` hands it chunks of users that
    fit ``rows_per_chunk`` (``generator.DECODE_ROWS_CPU``); 512-row chunks were up to 3x
    slower on 2 threads of a busy machine (each op is a thread barrier)."""
    n_layers = len(model.decoder_layers)
    # cache[layer][position] = (k, v) [B, W or 1, d], aligned with the current beams;
    # memory: per layer the cross-attention keys, transposed [B, H, dh, T], and values
    # [B, H, T, dh], both contiguous, and the mask bias; projected at the first step (so
    # that a wrapped step function's time includes them)
    state: dict = {"cache": None, "length": -1, "memory": None}

    def run(tokens: torch.Tensor, cache: list, parent: torch.Tensor | None,
            level: int | None, users: torch.Tensor | None = None) -> torch.Tensor | None:
        """Decode one position for every beam (tokens [B', W, d] of the batch rows
        ``users``, default all); appends its k/v to ``cache`` (first reordering it by
        ``parent``) unless ``level`` is the last; log-probs [B', W, S, N] at ``level``."""
        width = tokens.shape[1]
        chunk = max(1, rows_per_chunk // width)
        kv, bias = state["memory"]
        new_cache = [[[] for _ in range(len(cache[i]) + 1)] for i in range(n_layers)]
        out = []
        for lo in range(0, tokens.shape[0], chunk):
            sl = slice(lo, lo + chunk)
            rows = sl if users is None else users[sl]        # rows of memory and cache
            x = model.input_dropout(tokens[sl])                          # [c, W, d]
            for i, layer in enumerate(model.decoder_layers):
                past = []
                for pos, (k, v) in enumerate(cache[i]):
                    k, v = k[rows], v[rows]
                    if parent is not None and k.shape[1] > 1:
                        index = parent[sl, :, None].expand(-1, -1, k.shape[2])
                        k, v = k.gather(1, index), v.gather(1, index)
                    past.append((k, v))
                    new_cache[i][pos].append((k, v))
                x, fresh = layer.step(x, past, kv[i][0][rows], kv[i][1][rows], bias[rows])
                new_cache[i][-1].append(fresh)
            if level is not None:
                hidden = model.decoder_norm(x).view(-1, model.d_model)         # [c*W, d]
                logits = linear(hidden, model.head_weight[level], model.head_bias[level],
                                model.onednn)                                # [c*W, S*N]
                out.append(torch.log_softmax(logits.view(x.shape[0], width, model.n_signals,
                                                         model.codebook_size), dim=-1))
        for i in range(n_layers if level != model.n_levels - 1 else 0):  # none after the last
            cache[i] = [tuple(torch.cat(parts, 0) if len(parts) > 1 else parts[0]
                              for parts in zip(*chunks)) for chunks in new_cache[i]]
        if level is None:
            return None
        return torch.cat(out, 0) if len(out) > 1 else out[0]

    def step(prefix: torch.Tensor, parent: torch.Tensor | None,
             users: torch.Tensor | None = None) -> torch.Tensor:
        if state["memory"] is None:
            # laid out once per search, so that torch.matmul need not copy strided
            # keys and values per layer, step and chunk
            state["memory"] = model._memory_state(memory, memory_mask, transposed=True)
        level = prefix.shape[2]
        in_sequence = level > 0 and parent is not None and state["length"] == level
        if in_sequence:
            cache = state["cache"]
            tokens = (model.code_embedding(prefix[:, :, -1] + model.code_offsets[level - 1])
                      .sum(-2) + model.level_embedding.weight[level])         # [B, W, d]
        elif users is not None:
            raise ValueError("a step for a subset of users (users=...) must follow the "
                             "previous level's step: it decodes from the cached prefix")
        else:                                   # first step, or rebuild from the prefix
            cache, parent = [[] for _ in range(n_layers)], None
            tokens = model._decoder_tokens(prefix)                           # [B, W, l+1, d]
            for pos in range(level):
                run(tokens[:, :, pos], cache, None, None)
            tokens = tokens[:, :, level]
        log_probs = run(tokens, cache, parent, level, users)
        # Positions cached: the last level adds none, so it may be called again (for
        # other users or beams: the search's pruned last level).
        state["cache"] = cache
        state["length"] = level + 1 if level < model.n_levels - 1 else level
        return log_probs

    return step
