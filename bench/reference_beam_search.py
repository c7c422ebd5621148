"""The straightforward trie-constrained beam search, as LETTER/TIGER code bases write it: a
dict trie and a per-beam ``prefix_allowed_tokens_fn`` callback, one Python loop per user and
beam. Not used by the models; ``bench/decode.py`` times the batched search against it and the
beam-search tests check that the two agree bit for bit (same summation order, same tie-break).
"""
from __future__ import annotations

import torch

from recbole_bbqrec.modules.beam_search import (StepFn, check_beam_args, pad_result,
                                                ranked_topk, tuple_scores)


def build_trie(item_codes: torch.Tensor) -> tuple[dict, dict]:
    """Python dict trie: prefix (tuple of S-tuples) -> allowed next tuples, sorted (the
    order :class:`PrefixIndex` lists children in, so tied scores break alike); full ID -> item."""
    sets: dict[tuple, set[tuple]] = {}
    leaf: dict[tuple, int] = {}
    for item, row in enumerate(item_codes.tolist()):
        path = tuple(tuple(pos) for pos in row)
        for level in range(len(path)):
            sets.setdefault(path[:level], set()).add(path[level])
        leaf[path] = item
    return {prefix: sorted(allowed) for prefix, allowed in sets.items()}, leaf


@torch.no_grad()
def reference_beam_search(step_fn: StepFn, item_codes: torch.Tensor, batch_size: int,
                          beam_size: int, topk: int | None = None,
                          trie: tuple[dict, dict] | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """The straightforward decoder (as LETTER/TIGER code bases do it), for benchmarks.

    One batched model call per step, then per user and per beam a Python callback
    ``prefix_allowed_tokens_fn(batch_id, prefix) -> allowed`` masks the vocabulary: for S=1
    the full [N] vocabulary, for S>1 the allowed tuples (the joint vocabulary N^S is too
    large to mask).  ``trie`` (from :func:`build_trie`) may be passed to reuse it.
    """
    check_beam_args(beam_size, topk)
    item_codes = item_codes.long().cpu()
    n_levels, n_signals = item_codes.shape[1], item_codes.shape[2]
    children, leaf = trie if trie is not None else build_trie(item_codes)

    def prefix_allowed_tokens_fn(batch_id: int, prefix: tuple) -> list[tuple]:
        return children.get(prefix, [])

    zero = torch.zeros((), dtype=torch.float32)
    beams = [[(zero, ())] for _ in range(batch_size)]       # per user: (score, prefix)
    parents: list[list[int]] | None = None
    for level in range(n_levels):
        width = max(len(user_beams) for user_beams in beams)
        prefix_rows = [[list(p) for _, p in user_beams] + [[(0,) * n_signals] * level]
                       * (width - len(user_beams)) for user_beams in beams]
        prefix = torch.tensor(prefix_rows, dtype=torch.long).view(batch_size, width, level,
                                                                  n_signals)
        parent = None if parents is None else torch.tensor(
            [p + [0] * (width - len(p)) for p in parents], dtype=torch.long)
        log_probs = step_fn(prefix, parent).cpu()
        n_codes = log_probs.shape[-1]
        new_beams, parents = [], []
        for b, user_beams in enumerate(beams):
            totals, valids, origin = [], [], []
            for w, (score, path) in enumerate(user_beams):
                allowed = prefix_allowed_tokens_fn(b, path)
                if not allowed:
                    continue
                if n_signals == 1:
                    # LETTER-style: mask the full vocabulary, keep every entry as a candidate.
                    mask = torch.full((n_codes,), float("-inf"))
                    mask[[a[0] for a in allowed]] = 0.0
                    totals.append(score + (log_probs[b, w, 0] + mask))
                    valids.append(mask == 0)
                    origin.extend((w, path, (c,)) for c in range(n_codes))
                else:
                    idx = torch.tensor(allowed, dtype=torch.long)     # [A, S]
                    totals.append(score + tuple_scores([log_probs[b, w, s][idx[:, s]]
                                                         for s in range(n_signals)]))
                    valids.append(torch.ones(len(allowed), dtype=torch.bool))
                    origin.extend((w, path, code) for code in allowed)
            kept, kept_parents = [], []
            if totals:
                flat, valid = torch.cat(totals), torch.cat(valids)
                key = torch.where(valid, flat.nan_to_num(neginf=torch.finfo(flat.dtype).min),
                                  torch.full_like(flat, float("-inf")))
                top_key, pick = ranked_topk(key[None], min(beam_size, key.shape[0]))
                top_key, pick = top_key[0], pick[0]
                for k, i in zip(top_key.tolist(), pick.tolist()):
                    if k == float("-inf"):
                        break
                    w, path, code = origin[i]
                    kept.append((flat[i], path + (code,)))
                    kept_parents.append(w)
            new_beams.append(kept)
            parents.append(kept_parents)
        beams = new_beams
    width = min(beam_size, max(1, max(len(u) for u in beams)))
    items = torch.full((batch_size, width), -1, dtype=torch.long)
    scores = torch.full((batch_size, width), float("-inf"))
    for b, user_beams in enumerate(beams):
        for w, (score, path) in enumerate(user_beams[:width]):
            items[b, w] = leaf[path]
            scores[b, w] = score
    return pad_result(items, scores, beam_size, topk)
