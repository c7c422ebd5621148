"""Trie-constrained beam search over semantic IDs, batched over users and beams.

An item's semantic ID is L positions, each an S-tuple of codes (S=3 for BBQRec:
id, text, image; S=1 for TIGER).  Decoding picks one whole tuple per step; a tuple's
score is the sum of its S log-probabilities, a beam's score the sum over its steps.

``step_fn(prefix_codes, parent) -> log_probs``
    prefix_codes: LongTensor [B, W, l, S], the l tuples decoded so far per beam;
    parent:       LongTensor [B, W] index into the previous call's W beams (None at l=0),
                  so a step function with a KV cache can reorder it (stateless ones ignore it);
    log_probs:    FloatTensor [B, W, S, N], one distribution over N codes per signal.

``constrained_beam_search`` does every step with tensor ops on a padded child table
(no per-beam Python). ``bench/reference_beam_search.py`` holds the LETTER/TIGER way (a dict
trie and a per-beam callback) to benchmark and cross-check it: both add scores in the same
order (``tuple_scores``, ``ranked_topk``), so on the same step function they agree bit for bit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Optional

import torch

StepFn = Callable[[torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


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


@dataclass
class PrefixIndex:
    """Per-level padded child tables of the semantic-ID trie.

    Level l has one node per distinct length-l prefix (level 0: the root).  For node n:
    child_codes[l][n, c] is the S-tuple of child c, child_next[l][n, c] its node id at
    level l+1 (at the last level: the item id), child_valid[l][n, c] masks padding.
    Padded tables beat CSR here: every step is then one gather with a fixed width, and
    the widths stay small below the root (a few children per node for S=3).
    """

    item_codes: torch.Tensor            # [n_items, L, S]
    child_codes: list[torch.Tensor]     # per level [n_nodes_l, C_l, S]
    child_next: list[torch.Tensor]      # per level [n_nodes_l, C_l]
    child_valid: list[torch.Tensor]     # per level [n_nodes_l, C_l] bool

    @property
    def n_items(self) -> int:
        return int(self.item_codes.shape[0])

    @property
    def n_levels(self) -> int:
        return int(self.item_codes.shape[1])

    @property
    def n_signals(self) -> int:
        return int(self.item_codes.shape[2])

    @cached_property
    def max_code(self) -> int:
        return int(self.item_codes.max())

    @cached_property
    def root_keys(self) -> torch.Tensor | None:
        """The root's child tuples as integers in base max_code+1 [C0], ascending (the table
        is sorted lexicographically), or None when the key space overflows int64."""
        base, n_signals = self.max_code + 1, self.n_signals
        if base ** n_signals >= 2 ** 62:
            return None
        keys = torch.zeros(self.child_codes[0].shape[1], dtype=torch.long,
                           device=self.item_codes.device)
        for s in range(n_signals):
            keys = keys * base + self.child_codes[0][0, :, s]
        return keys

    @cached_property
    def prefix_offsets(self) -> torch.Tensor | None:
        """Root children grouped by their first S-1 codes: group g (an integer in base
        max_code+1) holds slots offsets[g]:offsets[g+1]; None for S=1 or > 2^17 groups."""
        base, n_signals = self.max_code + 1, self.n_signals
        if n_signals == 1 or self.root_keys is None or base ** (n_signals - 1) > 2 ** 17:
            return None
        groups = torch.arange(base ** (n_signals - 1) + 1, device=self.item_codes.device)
        return torch.searchsorted(self.root_keys // base, groups)

    @cached_property
    def root_bitmap(self) -> torch.Tensor | None:
        """Dense membership table over all base^S first tuples (<= 64 MB), or None."""
        if self.root_keys is None or (self.max_code + 1) ** self.n_signals > 2 ** 26:
            return None
        bitmap = torch.zeros((self.max_code + 1) ** self.n_signals, dtype=torch.bool,
                             device=self.item_codes.device)
        bitmap[self.root_keys] = True
        return bitmap

    @classmethod
    def from_codes(cls, item_codes: torch.Tensor) -> "PrefixIndex":
        """Build the index once from the catalogue's codes [n_items, L, S] (rows distinct)."""
        if not isinstance(item_codes, torch.Tensor):
            item_codes = torch.as_tensor(item_codes)
        if item_codes.dim() != 3 or min(item_codes.shape) < 1:
            raise ValueError(f"item_codes must be a non-empty [n_items, L, S] tensor, "
                             f"got shape {tuple(item_codes.shape)}")
        if item_codes.dtype.is_floating_point:
            raise ValueError(f"item_codes must be integer codes, got dtype {item_codes.dtype}")
        item_codes = item_codes.long().cpu()
        if int(item_codes.min()) < 0:
            row = int((item_codes < 0).flatten(1).any(1).nonzero()[0])
            raise ValueError(f"item_codes has a negative code at item row {row}: "
                             f"{item_codes[row].tolist()}")
        n_items, n_levels, n_signals = item_codes.shape
        node_of_item = torch.zeros(n_items, dtype=torch.long)  # level-0 node: the root
        n_nodes = 1
        codes_tables, next_tables, valid_tables = [], [], []
        for level in range(n_levels):
            keys = torch.cat([node_of_item[:, None], item_codes[:, level, :]], dim=1)
            # unique(dim=0) sorts rows, so the children of one parent are contiguous.
            uniq, inverse = torch.unique(keys, dim=0, return_inverse=True)
            parent, child_tuple = uniq[:, 0], uniq[:, 1:]
            counts = torch.bincount(parent, minlength=n_nodes)
            width = int(counts.max())
            slot = torch.arange(uniq.shape[0]) - (torch.cumsum(counts, 0) - counts)[parent]
            codes = torch.zeros(n_nodes, width, n_signals, dtype=torch.long)
            nxt = torch.zeros(n_nodes, width, dtype=torch.long)
            valid = torch.zeros(n_nodes, width, dtype=torch.bool)
            codes[parent, slot] = child_tuple
            valid[parent, slot] = True
            if level < n_levels - 1:
                nxt[parent, slot] = torch.arange(uniq.shape[0])
                node_of_item, n_nodes = inverse, uniq.shape[0]
            else:
                if uniq.shape[0] != n_items:
                    leaf = int(torch.nonzero(torch.bincount(inverse) > 1)[0])
                    rows = torch.nonzero(inverse == leaf).flatten().tolist()
                    raise ValueError(f"item_codes rows must be distinct: items {rows} share "
                                     f"the semantic ID {item_codes[rows[0]].tolist()} "
                                     f"({n_items - uniq.shape[0]} collisions in total)")
                item_of_leaf = torch.empty(n_items, dtype=torch.long)
                item_of_leaf[inverse] = torch.arange(n_items)
                nxt[parent, slot] = item_of_leaf
            codes_tables.append(codes)
            next_tables.append(nxt)
            valid_tables.append(valid)
        return cls(item_codes, codes_tables, next_tables, valid_tables)

    def to(self, device: torch.device | str) -> "PrefixIndex":
        move = lambda ts: [t.to(device) for t in ts]  # noqa: E731
        return PrefixIndex(self.item_codes.to(device), move(self.child_codes),
                           move(self.child_next), move(self.child_valid))


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


def _scan_topk(log_probs: torch.Tensor, child_codes: torch.Tensor, scores: torch.Tensor,
               keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``keep`` of one shared child list by scanning it: log_probs [B, S, N], child_codes
    [C, S], scores [B, 1] -> (key [B, keep] sorted, child slot [B, keep])."""
    tuple_score = tuple_scores([log_probs[:, s].index_select(-1, child_codes[:, s])
                                 for s in range(child_codes.shape[1])])  # [B, C]
    total = scores + tuple_score
    return ranked_topk(total.nan_to_num(neginf=torch.finfo(total.dtype).min), keep)


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
    minimum = torch.finfo(total.dtype).min
    ranked = torch.where(index.root_bitmap[key], total.nan_to_num(neginf=minimum),
                         torch.full_like(total, float("-inf")))
    top_key, pick = ranked_topk(ranked, keep, order=key)      # tuple keys ascend with the slot
    bound = None
    for s in range(n_signals):
        edge = zero[:, 0] + tuple_scores([vals[:, t, depth if t == s else 0]
                                           for t in range(n_signals)])
        bound = edge if bound is None else torch.maximum(bound, edge)
    exact = top_key[:, -1] > bound.nan_to_num(neginf=minimum)
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
    counts = torch.bincount(user, minlength=bsz)
    position = torch.arange(user.numel(), device=user.device) - (counts.cumsum(0) - counts)[user]
    width = max(int(counts.max()), keep)
    ranked = log_probs.new_full((bsz, width), float("-inf"))
    ranked[user, position] = total.nan_to_num(neginf=torch.finfo(total.dtype).min)
    slots = torch.zeros(bsz, width, dtype=torch.long, device=user.device)
    slots[user, position] = slot
    top_key, pick = ranked_topk(ranked, keep)                 # a user's candidates ascend by slot
    return top_key, slots.gather(1, pick)


def _root_topk(log_probs: torch.Tensor, index: PrefixIndex, keep: int
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
        return _scan_topk(log_probs, index.child_codes[0][0], zero, keep)
    top_key, slot, exact = _cube_topk(log_probs, index, keep, depth)
    finite = log_probs.isfinite().flatten(1).all(1)
    floor = top_key[:, -1]
    usable = ~exact & finite & (floor > torch.finfo(floor.dtype).min)
    if bool(usable.any()):
        rows = usable.nonzero().flatten()
        top_key[rows], slot[rows] = _group_topk(log_probs[rows], index, keep, floor[rows])
    scan = (~exact & ~usable).nonzero().flatten()
    if scan.numel():
        top_key[scan], slot[scan] = _scan_topk(log_probs[scan], index.child_codes[0][0],
                                               zero[scan], keep)
    return top_key, slot


@torch.no_grad()
def constrained_beam_search(step_fn: StepFn, index: PrefixIndex, batch_size: int,
                            beam_size: int, device: torch.device | str | None = None,
                            topk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact trie-constrained beam search.

    Returns (item_ids [B, K], scores [B, K]) sorted by score, K = topk or beam_size; every
    id is a distinct real item, or -1 with score -inf when fewer than K items exist.
    ``index`` must live on ``device`` (``index.to(device)``) for speed; it is moved if not.
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
        log_probs = step_fn(prefix, parent)                               # [B, W, S, N]
        _check_log_probs(log_probs, (bsz, width, n_signals), max_code)
        table_codes, table_next = index.child_codes[level], index.child_next[level]
        n_children = table_codes.shape[1]
        if table_codes.shape[0] == 1:
            # Root level (a single node, so W == 1): one shared child list, for S=3 ~ the
            # whole catalogue.  (A single-node level below the root means every item shares
            # the prefix, so the one beam above it is alive too.)
            child_codes = table_codes[0]                                  # [C, S]
            keep = min(beam_size, child_codes.shape[0])
            top_key, flat_pick = (_root_topk(log_probs[:, 0], index, keep) if level == 0 else
                                  _scan_topk(log_probs[:, 0], child_codes, scores, keep))
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
        child_codes = table_codes[nodes]                                  # [B, W, C, S]
        flat = log_probs.reshape(bsz * width, n_signals * log_probs.shape[3])
        offsets = torch.arange(n_signals, device=device) * log_probs.shape[3]
        picked = flat.gather(1, (child_codes + offsets).view(bsz * width, -1))
        picked = picked.view(bsz, width, n_children, n_signals)
        tuple_score = tuple_scores([picked[..., s] for s in range(n_signals)])
        child_valid = index.child_valid[level][nodes]
        child_next = table_next[nodes]
        child_valid = child_valid & alive[:, :, None]
        total = scores[:, :, None] + tuple_score                          # [B, W, C]
        # A valid child whose model log-prob is -inf must still outrank padding.
        key = torch.where(child_valid, total.nan_to_num(neginf=torch.finfo(total.dtype).min),
                          torch.full_like(total, float("-inf"))).view(bsz, -1)
        keep = min(beam_size, key.shape[1])
        top_key, flat_pick = ranked_topk(key, keep)                             # [B, W'] sorted
        alive = top_key > float("-inf")
        parent = flat_pick // n_children
        scores = total.view(bsz, -1).gather(1, flat_pick).masked_fill(~alive, float("-inf"))
        nodes = child_next.reshape(bsz, -1).gather(1, flat_pick).masked_fill(~alive, 0)
        picked_codes = child_codes.reshape(bsz, -1, n_signals).gather(
            1, flat_pick[:, :, None].expand(-1, -1, n_signals))           # [B, W', S]
        prefix = torch.cat([prefix.gather(1, parent[:, :, None, None].expand(
            -1, -1, level, n_signals)), picked_codes[:, :, None]], dim=2)
    items = nodes.masked_fill(~alive, -1)
    return pad_result(items, scores, beam_size, topk)
