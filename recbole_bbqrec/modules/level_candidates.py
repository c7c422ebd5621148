"""The candidates of one beam-search level below the root, as flat lists without padding.

Below the root a trie node has few children (Beauty's S=3 IDs: 1.4 on average at level 1 and
1.04 at level 2), but the padded child tables are as wide as the busiest node (61 and 31).
Scoring and ranking a [B, W, C] table therefore touched 30-40x more entries than there are
children. Here every (beam, child) pair of a level is one entry of flat [M] lists, ordered by
user, then beam, then child: the padded [B, W*C] order with the padding left out. Ranking
ties by position (``ranked_topk``) therefore picks the same candidates in the same order as
the padded layout and the reference do.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .tuple_topk import rank_key, ranked_topk, tuple_scores


@dataclass
class LevelCandidates:
    beam: torch.Tensor          # [M] flat beam index b * W + w of each candidate
    child: torch.Tensor         # [M] index into the level's flat child list
    codes: torch.Tensor         # [M, S] the child's tuple
    per_beam: torch.Tensor      # [B, W] children of each beam (0 for a dead beam)
    user_first: torch.Tensor    # [B] a user's first candidate
    user_count: torch.Tensor    # [B] a user's candidates

    @property
    def width(self) -> int:
        return int(self.per_beam.shape[1])

    def rows_of(self, lo: int, hi: int, users: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The candidates of beams lo:hi of ``users`` (default all; LongTensor [U]) ->
        (which [M'] candidate indices, row [M'] into a step's log-probs for those users and
        beams, flattened [U * (hi - lo)])."""
        bsz, width = self.per_beam.shape
        user, slot = self.beam // width, self.beam % width
        inside = (slot >= lo) & (slot < hi)
        if users is None:
            which = inside.nonzero().flatten()
            return which, user[which] * (hi - lo) + slot[which] - lo
        position = torch.full((bsz,), -1, dtype=torch.long, device=user.device)
        position[users] = torch.arange(users.numel(), device=user.device)
        which = (inside & (position[user] >= 0)).nonzero().flatten()
        return which, position[user[which]] * (hi - lo) + slot[which] - lo


def level_candidates(nodes: torch.Tensor, alive: torch.Tensor, child_first: torch.Tensor,
                     child_count: torch.Tensor, child_codes: torch.Tensor) -> LevelCandidates:
    """The children of the beams' trie nodes: nodes, alive [B, W]; the level's flat child
    lists from ``PrefixIndex.child_lists`` (node n's children are child_first[n] onwards,
    child_count[n] of them, tuples child_codes [n_children, S])."""
    bsz, width = nodes.shape
    device = nodes.device
    per_beam = child_count[nodes].masked_fill(~alive, 0)                     # [B, W]
    counts = per_beam.flatten()                                               # [B*W]
    n_candidates = int(counts.sum())
    beam = torch.repeat_interleave(torch.arange(bsz * width, device=device), counts,
                                   output_size=n_candidates)                  # [M]
    beam_first = counts.cumsum(0) - counts                                    # [B*W]
    child = (child_first[nodes].flatten()[beam] + torch.arange(n_candidates, device=device)
             - beam_first[beam])                                              # [M]
    user_count = per_beam.sum(1)                                              # [B]
    return LevelCandidates(beam, child, child_codes[child], per_beam,
                           user_count.cumsum(0) - user_count, user_count)


def candidate_totals(log_probs: torch.Tensor, rows: torch.Tensor, codes: torch.Tensor,
                     scores: torch.Tensor) -> torch.Tensor:
    """Beam score plus child tuple score: log_probs [R, S, N] (one row per beam scored),
    rows [M'] the candidates' rows, codes [M', S], scores [M'] their beams' scores -> [M'].
    The same additions, in the same order, as the padded tables' and the reference's."""
    n_signals, n_codes = log_probs.shape[1], log_probs.shape[2]
    flat = log_probs.reshape(-1)
    offsets = torch.arange(n_signals, device=codes.device) * n_codes
    picked = flat[(rows * (n_signals * n_codes))[:, None] + offsets + codes]  # [M', S]
    return scores + tuple_scores([picked[:, s] for s in range(n_signals)])


def ranked_candidates(key: torch.Tensor, cands: LevelCandidates, keep: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each user's top ``keep`` candidates by ``key`` [M] (-inf: not a candidate), ties by
    position -> (top key [B, keep] sorted, candidate index [B, keep]; where the key is -inf
    the index is some valid candidate's, to be masked by the caller)."""
    bsz = cands.user_count.shape[0]
    width = max(int(cands.user_count.max()) if bsz else 0, keep)
    user = cands.beam // cands.width
    position = torch.arange(key.shape[0], device=key.device) - cands.user_first[user]
    ranked = key.new_full((bsz, width), float("-inf"))                       # [B, M_user]
    ranked[user, position] = key
    top_key, pick = ranked_topk(ranked, keep)
    return top_key, (cands.user_first[:, None] + pick).clamp_(max=max(key.shape[0] - 1, 0))

