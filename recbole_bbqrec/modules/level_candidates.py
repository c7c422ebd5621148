"""The candidates of one beam-search level below the root: every (beam, child) pair, scored
and ranked in two layouts behind one interface (``score``, ``top``, ``take``).

The padded child tables are as wide as a level's busiest node. Where most nodes have few
children that is mostly padding: Beauty's S=3 IDs have 1.4 and 1.04 children on average
below the root, padded to 61 and 31, and on the beams evaluation meets (which favour busy
nodes) the [B, W, C] table held 24-25 entries per candidate. ``FlatChildren`` then keeps every
candidate as one entry of flat [M] lists, ordered by user, beam, child: the padded [B, W*C]
order with the padding left out. Where the beams fill the table (the flat layout's second
level: 1.6 entries per candidate) the flat lists cost more per entry than they save, and
``PaddedChildren`` ranks the table itself. Both rank ties by that order (``ranked_topk``, by
position), so they pick the same candidates in the same order as each other and as the
reference.
"""
from __future__ import annotations

import torch

from .prefix_index import PrefixIndex
from .tuple_topk import ragged_ranked_topk, rank_key, ranked_topk, tuple_scores

# The padded table is ranked as it is while it holds at most this many entries per candidate.
# Search part of the trained flat model (9 levels, 1.6-12.7 entries per candidate on its
# beams), beam 50, 1 thread, 256 Beauty test users, alternating in one process: 0.203 ms per
# user at 2.5 and at 4, 0.212 at 8, 0.218 all padded, 0.236 all flat lists. The trained tuple
# model (24-25 per candidate): 0.11 ms flat, 0.18 padded.
PADDED_MAX_ENTRIES_PER_CANDIDATE = 2.5


def candidate_totals(log_probs: torch.Tensor, codes: torch.Tensor, scores: torch.Tensor,
                     rows: torch.Tensor | None = None) -> torch.Tensor:
    """Beam score plus child tuple score: log_probs [R, S, N] (one row per beam scored),
    codes [..., S] the candidates' tuples, scores [...] their beams' scores (broadcast
    against codes' leading dims) -> [...]. ``rows`` [...] holds each candidate's row; without
    it codes is [R, C, S], row r's candidates in row r (one gather, as the padded table
    has them). The same additions, in the same order, as the reference's."""
    n_rows, n_signals, n_codes = log_probs.shape
    offsets = torch.arange(n_signals, device=codes.device) * n_codes
    if rows is None:
        picked = log_probs.reshape(n_rows, n_signals * n_codes).gather(
            1, (codes + offsets).view(n_rows, codes.shape[1] * n_signals))
        picked = picked.view(codes.shape)                                       # [R, C, S]
    else:
        flat = log_probs.reshape(-1)
        picked = flat[(rows * (n_signals * n_codes))[..., None] + offsets + codes]  # [..., S]
    return scores + tuple_scores([picked[..., s] for s in range(n_signals)])


class FlatChildren:
    """The candidates as flat [M] lists (no padding)."""

    def __init__(self, nodes: torch.Tensor, scores: torch.Tensor, per_beam: torch.Tensor,
                 n_candidates: int,
                 lists: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
        """nodes, scores [B, W]; per_beam [B, W] each beam's children (0 where dead) and
        n_candidates their sum; ``lists`` the level's ``PrefixIndex.child_lists`` (node n's
        children are entries first[n] .. first[n] + count[n] - 1)."""
        child_first, _, child_codes, self.child_next = lists
        bsz, self.width = nodes.shape
        device = nodes.device
        self.per_beam = per_beam                                                  # [B, W]
        counts = per_beam.flatten()                                               # [B*W]
        self.beam = torch.repeat_interleave(torch.arange(bsz * self.width, device=device),
                                            counts, output_size=n_candidates)     # [M] b*W+w
        beam_first = counts.cumsum(0) - counts
        self.child = (child_first[nodes].flatten()[self.beam]
                      + torch.arange(n_candidates, device=device) - beam_first[self.beam])
        self.codes = child_codes[self.child]                                      # [M, S]
        self.user = self.beam // self.width                                       # [M]
        self.user_count = self.per_beam.sum(1)                                    # [B]
        self.beam_scores = scores.flatten()[self.beam]                            # [M]
        self.key = self.total = None          # [M] once scored; -inf where never scored

    def score(self, log_probs: torch.Tensor, lo: int = 0, hi: int | None = None,
              users: torch.Tensor | None = None) -> None:
        """Scores the candidates of beams lo:hi of ``users`` (default all):
        log_probs [U, hi - lo, S, N] from a step over those users and beams."""
        hi = self.width if hi is None else hi
        if users is None and (lo, hi) == (0, self.width):
            self.total = candidate_totals(log_probs.flatten(0, 1), self.codes, self.beam_scores,
                                          self.beam)
            self.key = rank_key(self.total)
            return
        if self.key is None:
            self.key = self.beam_scores.new_full(self.beam.shape, float("-inf"))
            self.total = torch.full_like(self.key, float("-inf"))
        slot = self.beam % self.width
        inside = (slot >= lo) & (slot < hi)
        position = self.user
        if users is not None:
            position = torch.full_like(self.user_count, -1)
            position[users] = torch.arange(users.numel(), device=users.device)
            position = position[self.user]
            inside &= position >= 0
        which = inside.nonzero().flatten()
        row = position[which] * (hi - lo) + slot[which] - lo       # into log_probs' [U*(hi-lo)]
        part = candidate_totals(log_probs.flatten(0, 1), self.codes[which],
                                self.beam_scores[which], row)
        self.total[which], self.key[which] = part, rank_key(part)

    def top(self, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each user's top ``keep`` keys [B, keep], sorted, and the candidates holding them.
        Where the key is -inf (a user with fewer candidates) the index is some candidate's,
        maybe another user's, to be masked by the caller; there is one (M > 0) whenever
        B > 0, since every user keeps a live beam and every trie node has a child."""
        return ragged_ranked_topk(self.key, self.user, self.user_count, keep)

    def take(self, pick: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                torch.Tensor]:
        """The picked candidates [B, K] -> (parent beam [B, K], total [B, K], next node or
        item [B, K], codes [B, K, S]); the caller masks dead picks."""
        user = torch.arange(pick.shape[0], device=pick.device)[:, None]
        parent = self.beam[pick] - user * self.width
        return parent, self.total[pick], self.child_next[self.child[pick]], self.codes[pick]


class PaddedChildren:
    """The candidates as the padded [B, W, C] child table."""

    def __init__(self, nodes: torch.Tensor, alive: torch.Tensor, scores: torch.Tensor,
                 per_beam: torch.Tensor, index: PrefixIndex, level: int) -> None:
        """nodes, alive, scores, per_beam [B, W] as for ``FlatChildren``."""
        self.nodes, self.scores, self.per_beam = nodes, scores, per_beam
        self.child_next = index.child_next[level]
        self.codes = index.child_codes[level][nodes]                             # [B, W, C, S]
        self.valid = index.child_valid[level][nodes] & alive[:, :, None]         # [B, W, C]
        self.key = self.total = None   # [B, W, C] once scored; -inf where never scored

    def score(self, log_probs: torch.Tensor, lo: int = 0, hi: int | None = None,
              users: torch.Tensor | None = None) -> None:
        """As ``FlatChildren.score``."""
        width = self.codes.shape[1]
        hi = width if hi is None else hi
        rows = slice(None) if users is None else users
        codes = self.codes[rows, lo:hi]                                          # [U, n, C, S]
        total = candidate_totals(log_probs.flatten(0, 1), codes.flatten(0, 1),
                                 self.scores[rows, lo:hi].reshape(-1, 1))        # [U*n, C]
        total = total.view(codes.shape[:3])                                     # [U, n, C]
        key = rank_key(total, self.valid[rows, lo:hi])
        if users is None and (lo, hi) == (0, width):
            self.key, self.total = key, total
            return
        if self.key is None:
            self.key = torch.full(self.valid.shape, float("-inf"), dtype=total.dtype,
                                  device=total.device)
            self.total = torch.full_like(self.key, float("-inf"))
        self.key[rows, lo:hi], self.total[rows, lo:hi] = key, total

    def top(self, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``FlatChildren.top``; the index is a position in the [W*C] table."""
        return ranked_topk(self.key.flatten(1), keep)

    def take(self, pick: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                torch.Tensor]:
        """As ``FlatChildren.take``."""
        bsz, _, n_children, n_signals = self.codes.shape
        parent = pick // n_children
        nodes = self.child_next[self.nodes.gather(1, parent), pick % n_children]
        codes = self.codes.reshape(bsz, -1, n_signals).gather(
            1, pick[:, :, None].expand(-1, -1, n_signals))
        return parent, self.total.flatten(1).gather(1, pick), nodes, codes


def level_children(index: PrefixIndex, level: int, nodes: torch.Tensor, alive: torch.Tensor,
                   scores: torch.Tensor, layout: str | None = None
                   ) -> FlatChildren | PaddedChildren:
    """The children of the beams' nodes (nodes, alive, scores [B, W]) at ``level`` > 0, in
    the layout that is cheaper for how full the padded table would be, or in ``layout``
    ("flat" or "padded") when given."""
    if layout not in (None, "flat", "padded"):
        raise ValueError(f"layout must be None, 'flat' or 'padded', got {layout!r}")
    n_children = index.child_codes[level].shape[1]
    lists = index.child_lists[level]
    per_beam = lists[1][nodes].masked_fill(~alive, 0)                           # [B, W]
    n_candidates = int(per_beam.sum())
    if layout is None:
        padded = nodes.numel() * n_children <= PADDED_MAX_ENTRIES_PER_CANDIDATE * n_candidates
        layout = "padded" if padded else "flat"
    if layout == "padded":
        return PaddedChildren(nodes, alive, scores, per_beam, index, level)
    return FlatChildren(nodes, scores, per_beam, n_candidates, lists)
