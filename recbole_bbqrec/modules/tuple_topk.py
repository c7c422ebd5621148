"""Exact top-k over S-tuples of codes: the summation order and tie rule that every search path
(the batched search, its first-position shortcuts, the reference) shares, and the exact
first-position top-k over a large catalogue without scanning it.

A tuple's score is the sum of its S per-signal log-probabilities, added left to right
(``tuple_scores``); ties rank by position (``ranked_topk``).  With both fixed, the batched
search and ``bench/reference_beam_search.py`` agree bit for bit.
"""
from __future__ import annotations

import math

import torch

from .prefix_index import PrefixIndex


def tuple_scores(log_probs_per_signal: list[torch.Tensor]) -> torch.Tensor:
    # Sequential left-to-right sum; the reference uses the identical order so the two agree
    # bit for bit (a reduction kernel could reassociate).
    total = log_probs_per_signal[0]
    for extra in log_probs_per_signal[1:]:
        total = total + extra
    return total


def ranked_topk(key: torch.Tensor, keep: int, order: torch.Tensor | None = None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """``key.topk(keep, dim=1)`` [B, M] -> [B, keep] with a fixed rule for ties: equal keys
    rank by ascending ``order`` (default: position), so every search path (scan, cube,
    groups, the reference) picks and orders tied candidates alike.  topk alone picks
    arbitrarily among ties, which are common enough (float32 sums of ~10^6 tuples)."""
    vals, pos = key.topk(keep, dim=1)
    rank = pos if order is None else order.gather(1, pos)
    tied = (key >= vals[:, -1:]).sum(1) > keep      # a tie straddles the cut: pick again
    if bool(tied.any()):
        rows = tied.nonzero().flatten()
        sub = key[rows]
        by_order = (torch.arange(sub.shape[1], device=key.device).expand_as(sub)
                    if order is None else order[rows]).argsort(dim=1, stable=True)
        best = sub.gather(1, by_order).argsort(dim=1, descending=True, stable=True)[:, :keep]
        pos[rows] = by_order.gather(1, best)
        vals[rows] = sub.gather(1, pos[rows])
        rank[rows] = pos[rows] if order is None else order[rows].gather(1, pos[rows])
    perm = rank.argsort(dim=1)                                # then stably by key, descending
    perm = perm.gather(1, vals.gather(1, perm).argsort(dim=1, descending=True, stable=True))
    return vals.gather(1, perm), pos.gather(1, perm)


def ragged_ranked_topk(key: torch.Tensor, user: torch.Tensor, user_count: torch.Tensor,
                       keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each user's top ``keep`` of candidates held as one flat list ordered by user: key [M],
    user [M] (non-decreasing), user_count [B] -> (top key [B, keep] sorted, index [B, keep]
    into the list). Ranked as a padded [B, max count] table by position within the user
    (``ranked_topk``), so ties break by list order. Where the key is -inf (a user with fewer
    than ``keep`` candidates) the index is some candidate's, maybe another user's: the
    caller masks it."""
    bsz, n_candidates = user_count.shape[0], key.shape[0]
    first = user_count.cumsum(0) - user_count                                # [B]
    position = torch.arange(n_candidates, device=key.device) - first[user]   # [M]
    width = max(int(user_count.max()) if bsz else 0, keep)
    ranked = key.new_full((bsz, width), float("-inf"))                       # [B, M_user]
    ranked[user, position] = key
    top_key, pick = ranked_topk(ranked, keep)
    return top_key, (first[:, None] + pick).clamp_(max=max(n_candidates - 1, 0))


def rank_key(total: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """What the beam cut ranks a score by: a score of -inf (a -inf log-prob) becomes the
    dtype's minimum, so a real candidate still outranks padding; where ``valid`` is False
    (padding, dead beams) the key is -inf."""
    key = total.nan_to_num(neginf=torch.finfo(total.dtype).min)
    return key if valid is None else key.masked_fill(~valid, float("-inf"))


def scan_topk(log_probs: torch.Tensor, child_codes: torch.Tensor, scores: torch.Tensor,
               keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``keep`` of one shared child list by scanning it: log_probs [B, S, N], child_codes
    [C, S], scores [B, 1] -> (key [B, keep] sorted, child slot [B, keep])."""
    tuple_score = tuple_scores([log_probs[:, s].index_select(-1, child_codes[:, s])
                                 for s in range(child_codes.shape[1])])  # [B, C]
    total = scores + tuple_score
    return ranked_topk(rank_key(total), keep)


def _cube_depth(index: PrefixIndex, keep: int) -> int | None:
    """Codes per signal of :func:`_cube_topk`'s cube, or None where a scan is as cheap.
    Tuples whose rank sum is <= r number ~ r^S / S!, a fraction ``density`` of them allowed;
    the depth is sized so ~2x``keep`` allowed tuples lie in that simplex."""
    n_root, n_signals, base = index.child_codes[0].shape[1], index.n_signals, index.max_code + 1
    if (index.prefix_offsets is None or index.root_bitmap is None
            or n_root < 4 * base ** (n_signals - 1)):
        return None
    density = n_root / base ** n_signals
    depth = math.ceil((math.factorial(n_signals) * 2 * keep / density) ** (1 / n_signals)) + 1
    return depth if depth < base and 4 * depth ** n_signals < n_root else None


def _cube_topk(log_probs: torch.Tensor, index: PrefixIndex, keep: int, depth: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``keep`` allowed tuples among the depth^S best-per-signal ones: log_probs
    [B, S, N] -> (key, slot) [B, keep] and exact [B] (whether they are the global top)."""
    bsz, n_signals, _ = log_probs.shape
    base, zero = index.max_code + 1, log_probs.new_zeros(bsz, 1)
    vals, codes = log_probs[:, :, :base].topk(depth + 1, dim=-1)          # [B, S, depth+1]
    total, key = vals[:, 0, :depth], codes[:, 0, :depth]
    for s in range(1, n_signals):                 # the same left-to-right sum as the scan
        total = (total[:, :, None] + vals[:, s, None, :depth]).flatten(1)
        key = (key[:, :, None] * base + codes[:, s, None, :depth]).flatten(1)  # [B, depth^s]
    total = zero + total
    ranked = rank_key(total, index.root_bitmap[key])
    top_key, pick = ranked_topk(ranked, keep, order=key)      # tuple keys ascend with the slot
    bound = None
    for s in range(n_signals):
        edge = zero[:, 0] + tuple_scores([vals[:, t, depth if t == s else 0]
                                           for t in range(n_signals)])
        bound = edge if bound is None else torch.maximum(bound, edge)
    exact = top_key[:, -1] > rank_key(bound)
    return top_key, torch.searchsorted(index.root_keys, key.gather(1, pick)), exact


def _group_topk(log_probs: torch.Tensor, index: PrefixIndex, keep: int, floor: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``keep`` when ``floor`` [B] (finite) is at most each user's keep-th best
    score: only groups (first S-1 codes) whose score plus the best last code reaches the
    floor can hold a top tuple, so only their allowed tuples are scored."""
    bsz, n_signals, _ = log_probs.shape
    base, offsets = index.max_code + 1, index.prefix_offsets
    log_probs = log_probs[:, :, :base]
    group_score = log_probs[:, 0]
    for s in range(1, n_signals - 1):
        group_score = (group_score[:, :, None] + log_probs[:, s, None, :]).flatten(1)  # [B, G]
    best_last = log_probs[:, -1].max(-1).values
    # The slack only admits extra groups: it covers the rounding of the last addition.
    need = floor - best_last - 1e-4 * (floor.abs() + best_last.abs() + 1)
    sizes = offsets[1:] - offsets[:-1]                                     # [G]
    user, group = ((group_score >= need[:, None]) & (sizes > 0)).nonzero(as_tuple=True)
    lengths = sizes[group]
    ends = lengths.cumsum(0)
    rep = torch.repeat_interleave(torch.arange(group.numel(), device=group.device), lengths)
    within = torch.arange(int(ends[-1]), device=group.device) - (ends - lengths)[rep]
    slot = offsets[group][rep] + within
    user = user[rep]                                                        # [M] candidates
    codes = index.child_codes[0][0][slot]                                  # [M, S]
    total = 0.0 + tuple_scores([log_probs[user, s, codes[:, s]] for s in range(n_signals)])
    # a user's candidates ascend by slot, so ranking by list position breaks ties by slot
    top_key, pick = ragged_ranked_topk(rank_key(total), user, torch.bincount(user, minlength=bsz),
                                       keep)
    return top_key, slot[pick]


def root_topk(log_probs: torch.Tensor, index: PrefixIndex, keep: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``keep`` first tuples per user: log_probs [B, S, N] -> (key, slot) [B, keep].

    With S > 1 a large catalogue has up to catalogue-size first tuples, and scanning them
    costs O(C) per user.  Instead: (1) the top ``depth`` codes of each signal span a cube of
    depth^S tuples; its allowed ones (a dense bitmap lookup) are ranked, and any tuple outside
    it scores at most one signal's (depth+1)-th code plus the others' best (rounded float
    addition is monotonic, so that bound survives rounding); a user whose keep-th cube key
    beats it strictly is done.  (2) Otherwise that keep-th key is still a floor under the
    true one, and :func:`_group_topk` scores only the groups that can reach it."""
    zero = log_probs.new_zeros(log_probs.shape[0], 1)
    depth = _cube_depth(index, keep)
    if depth is None:
        return scan_topk(log_probs, index.child_codes[0][0], zero, keep)
    top_key, slot, exact = _cube_topk(log_probs, index, keep, depth)
    finite = log_probs.isfinite().flatten(1).all(1)
    floor = top_key[:, -1]
    usable = ~exact & finite & (floor > torch.finfo(floor.dtype).min)
    if bool(usable.any()):
        rows = usable.nonzero().flatten()
        top_key[rows], slot[rows] = _group_topk(log_probs[rows], index, keep, floor[rows])
    scan = (~exact & ~usable).nonzero().flatten()
    if scan.numel():
        top_key[scan], slot[scan] = scan_topk(log_probs[scan], index.child_codes[0][0],
                                               zero[scan], keep)
    return top_key, slot
