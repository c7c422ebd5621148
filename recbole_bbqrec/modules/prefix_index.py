"""The semantic-ID trie as per-level child tables, padded and as flat lists (built once per
catalogue)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch


@dataclass
class PrefixIndex:
    """Per-level child tables of the semantic-ID trie, padded and as flat lists.

    Level l has one node per distinct length-l prefix (level 0: the root).  For node n:
    child_codes[l][n, c] is the S-tuple of child c, child_next[l][n, c] its node id at
    level l+1 (at the last level: the item id), child_valid[l][n, c] masks padding.
    The padded tables are as wide as the level's busiest node (Beauty's S=3 IDs: 61 and
    31 below the root, against 1.4 and 1.04 children on average); where that padding
    dominates, the search reads a level from ``child_lists``, the same children without
    it (``level_candidates.py``).
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
    def child_lists(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                        torch.Tensor]]:
        """Per level the children as flat lists: (first [n_nodes_l], count [n_nodes_l],
        codes [n_children_l, S], next [n_children_l]); node n's children are entries
        first[n] .. first[n] + count[n] - 1, in the padded tables' order (valid slots are
        the leading ones)."""
        lists = []
        for codes, nxt, valid in zip(self.child_codes, self.child_next, self.child_valid):
            count = valid.sum(1)
            lists.append((count.cumsum(0) - count, count, codes[valid], nxt[valid]))
        return lists

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
