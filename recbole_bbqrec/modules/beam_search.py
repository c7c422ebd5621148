"""Trie-constrained beam search over semantic IDs, batched over users and beams.

An item's semantic ID is L positions, each an S-tuple of codes (S=3 for BBQRec:
id, text, image; S=1 for TIGER).  Decoding picks one whole tuple per step; a tuple's
score is the sum of its S log-probabilities, a beam's score the sum over its steps.

``step_fn(prefix_codes, parent) -> log_probs``
    prefix_codes: LongTensor [B, W, l, S], the l tuples decoded so far per beam;
    parent:       LongTensor [B, W] index into the previous call's W beams (None at l=0),
                  so a step function with a KV cache can reorder it (stateless ones ignore it);
    log_probs:    FloatTensor [B, W, S, N], one distribution over N codes per signal.

``constrained_beam_search`` does every step with tensor ops (no per-beam Python): at the
root over its one shared child list, below it over the beams' children as flat lists or
as the padded table, whichever is cheaper for the level (``level_candidates.py``).
``bench/reference_beam_search.py`` holds the LETTER/TIGER way (a dict trie and a per-beam
callback) to benchmark and cross-check it: both add scores in the same order
(``tuple_scores``, ``ranked_topk``), so on the same step function they agree bit for bit.

When only the top ``topk`` < beam_size items are wanted (evaluation ranks 10 from 50 beams),
the last level need not score every beam: no child outscores its beam, so a beam below the
topk-th final score is never sent through the model (``prune=True``; ``generate`` uses it).
The trie and the first position's exact top-k live in ``prefix_index.py`` and
``tuple_topk.py``.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from .level_candidates import FlatChildren, PaddedChildren, level_children
from .prefix_index import PrefixIndex
from .tuple_topk import rank_key, ranked_topk, root_topk, scan_topk, tuple_scores

__all__ = ["PrefixIndex", "StepFn", "check_beam_args", "constrained_beam_search", "pad_result",
           "ranked_topk", "tuple_scores"]

StepFn = Callable[[torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


def check_beam_args(beam_size: int, topk: int | None) -> None:
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    if topk is not None and beam_size < topk:
        raise ValueError(f"beam_size={beam_size} is smaller than topk={topk}: beam search "
                         f"can only return beam_size items; raise beam_size to >= {topk}")


def pad_result(items: torch.Tensor, scores: torch.Tensor, beam_size: int,
                topk: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    missing = beam_size - items.shape[1]
    if missing > 0:
        items = torch.cat([items, items.new_full((items.shape[0], missing), -1)], dim=1)
        scores = torch.cat([scores, scores.new_full((scores.shape[0], missing),
                                                    float("-inf"))], dim=1)
    keep = beam_size if topk is None else topk
    return items[:, :keep], scores[:, :keep]


def _check_log_probs(log_probs: torch.Tensor, shape: tuple[int, ...], max_code: int) -> None:
    if log_probs.dim() != 4 or tuple(log_probs.shape[:3]) != shape:
        raise ValueError(f"step_fn must return [B, W, S, N] = {shape + ('N',)}, "
                         f"got {tuple(log_probs.shape)}")
    if log_probs.shape[3] <= max_code:
        raise ValueError(f"step_fn scores N={log_probs.shape[3]} codes but the catalogue "
                         f"uses code {max_code}")


def _pruned_last_level(step_fn: Callable, prefix: torch.Tensor, parent: torch.Tensor,
                       scores: torch.Tensor, children: FlatChildren | PaddedChildren,
                       topk: int, max_code: int) -> None:
    """Scores the last level's candidates (``children``) of the beams that can still reach
    the top ``topk``; the rest keep key -inf, and their beams are never sent through the model.

    Log-probs are <= 0, so no child of a beam scores above the beam (float addition of a
    non-positive number never rounds up), and beams arrive sorted by score.  Round 1 scores
    the first ``FIRST_ROUND * topk`` beams of every user; its topk-th best key is a floor
    under the final one.  Round 2 scores, for the users that need it, every further beam
    above that floor.  A beam left out scores at most the final floor and sits after every
    scored one, so it loses even a tie (ties rank by position): the top ``topk`` are exactly
    those of the full level.  On a trained model most users need round 1 only (Beauty:
    ~11 of 50 beams at topk 10); a flat (untrained) model needs every beam."""
    bsz, width = scores.shape
    # A beam's best possible key (its children's totals never exceed its score); dead: -inf.
    bound = rank_key(scores, children.per_beam > 0)                          # [B, W]

    def score(users: torch.Tensor | None, lo: int, hi: int) -> None:
        rows = slice(None) if users is None else users
        log_probs = step_fn(prefix[rows, lo:hi], parent[rows, lo:hi], users)
        n_users = bsz if users is None else users.numel()
        _check_log_probs(log_probs, (n_users, hi - lo, prefix.shape[3]), max_code)
        children.score(log_probs, lo, hi, users)

    first = min(width, math.ceil(FIRST_ROUND * topk))
    score(None, 0, first)
    floor = children.top(topk)[0][:, -1]                                     # [B]
    need = (bound[:, first:] > floor[:, None]).sum(1)  # beams are sorted: a run from `first`
    users = need.nonzero().flatten()
    if users.numel():
        score(users, first, first + int(need.max()))


# Round 1 of the pruned last level scores this many times topk beams per user: on trained
# Beauty checkpoints 90% of test users need at most 1.2 x topk (measured at topk 10, beam 50).
# Where round 1 would cover more than half the beams (beam 20 for a top 10) the search scores
# them all in one call: what a second, small call costs was as much as it saved.
FIRST_ROUND = 1.5


@torch.no_grad()
def constrained_beam_search(step_fn: StepFn, index: PrefixIndex, batch_size: int,
                            beam_size: int, device: torch.device | str | None = None,
                            topk: int | None = None, prune: bool = False
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact trie-constrained beam search.

    Returns (item_ids [B, K], scores [B, K]) sorted by score, K = topk or beam_size; every
    id is a distinct real item, or -1 with score -inf when fewer than K items exist.
    ``index`` must live on ``device`` (``index.to(device)``) for speed; it is moved if not.

    ``prune=True`` (with topk < beam_size) sends through the model, at the last level, only
    the beams that can still reach the top ``topk`` (when ``FIRST_ROUND * topk`` is at most
    half the beams; otherwise all of them, in one call); the result is that of scoring every beam,
    bit for bit when a row's log-probs do not depend on how many rows are in the call (a
    model's matmuls may pick another kernel for another shape and differ in the last bits,
    as the batched search and the reference do).  It needs two promises of ``step_fn``: its
    log-probs are normalised (<= 0, no NaN, as log_softmax gives them), and at the last
    level it takes a third argument ``users`` (LongTensor [B'], or None for all): the call
    then covers those rows of the batch only, prefix [B', W', l, S] and parent [B', W']
    (into those users' previous beams), and it may be called more than once at that level.
    """
    check_beam_args(beam_size, topk)
    device = torch.device(device) if device is not None else index.item_codes.device
    if index.item_codes.device != device:
        index = index.to(device)
    n_signals, max_code = index.n_signals, index.max_code
    bsz = batch_size
    nodes = torch.zeros(bsz, 1, dtype=torch.long, device=device)         # [B, W]
    scores = torch.zeros(bsz, 1, device=device)                           # [B, W]
    alive = torch.ones(bsz, 1, dtype=torch.bool, device=device)           # [B, W]
    prefix = torch.zeros(bsz, 1, 0, n_signals, dtype=torch.long, device=device)
    parent: torch.Tensor | None = None
    for level in range(index.n_levels):
        width = nodes.shape[1]
        table_codes, table_next = index.child_codes[level], index.child_next[level]
        n_children = table_codes.shape[1]
        if table_codes.shape[0] == 1:
            # Root level (a single node, so W == 1): one shared child list, for S=3 ~ the
            # whole catalogue.  (A single-node level below the root means every item shares
            # the prefix, so the one beam above it is alive too.)
            log_probs = step_fn(prefix, parent)                           # [B, W, S, N]
            _check_log_probs(log_probs, (bsz, width, n_signals), max_code)
            child_codes = table_codes[0]                                  # [C, S]
            keep = min(beam_size, child_codes.shape[0])
            top_key, flat_pick = (root_topk(log_probs[:, 0], index, keep) if level == 0 else
                                  scan_topk(log_probs[:, 0], child_codes, scores, keep))
            alive = top_key > float("-inf")
            parent = torch.zeros_like(flat_pick)
            # Same additions as the scan (and the reference), so scores agree bit for bit.
            tuple_score = tuple_scores([log_probs[:, 0, s].gather(1, child_codes[flat_pick, s])
                                         for s in range(n_signals)])      # [B, W']
            scores = (scores + tuple_score).masked_fill(~alive, float("-inf"))
            nodes = table_next[0][flat_pick].masked_fill(~alive, 0)
            prefix = torch.cat([prefix.expand(-1, keep, -1, -1),
                                table_codes[0][flat_pick][:, :, None]], dim=2)
            continue
        # Below the root: every (beam, child) pair, in the cheaper layout for this level
        children = level_children(index, level, nodes, alive, scores)
        keep = min(beam_size, width * n_children)
        if (prune and topk is not None and topk < keep and level == index.n_levels - 1
                and math.ceil(FIRST_ROUND * topk) <= width // 2):
            _pruned_last_level(step_fn, prefix, parent, scores, children, topk, max_code)
            keep = topk                   # the top topk of a ranking are its first topk
        else:
            log_probs = step_fn(prefix, parent)                           # [B, W, S, N]
            _check_log_probs(log_probs, (bsz, width, n_signals), max_code)
            children.score(log_probs)
        top_key, pick = children.top(keep)                                # [B, W'] sorted
        alive = top_key > float("-inf")
        parent, scores, nodes, picked_codes = children.take(pick)
        parent = parent.masked_fill(~alive, 0)
        scores = scores.masked_fill(~alive, float("-inf"))
        nodes = nodes.masked_fill(~alive, 0)
        prefix = torch.cat([prefix.gather(1, parent[:, :, None, None].expand(
            -1, -1, level, n_signals)), picked_codes[:, :, None]], dim=2)
    items = nodes.masked_fill(~alive, -1)
    return pad_result(items, scores, beam_size, topk)
