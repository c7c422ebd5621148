"""A level's candidates as flat lists: the padded child table's entries in its order, scored
and ranked as the padded [B, W*C] layout ranks them (ties included)."""
import pytest
import torch

from recbole_bbqrec.modules.level_candidates import (candidate_totals, level_candidates,
                                                     ranked_candidates)
from recbole_bbqrec.modules.prefix_index import PrefixIndex
from recbole_bbqrec.modules.tuple_topk import rank_key, ranked_topk, tuple_scores
from tests.test_beam_search import random_codes

pytestmark = pytest.mark.usefixtures("single_thread")


def beams_at(index, level, bsz, width, seed):
    """Random beams at ``level``: node ids [B, W] (repeats allowed) and ~20% dead beams."""
    gen = torch.Generator().manual_seed(seed)
    nodes = torch.randint(index.child_codes[level].shape[0], (bsz, width), generator=gen)
    alive = torch.rand(bsz, width, generator=gen) > 0.2
    alive[:, 0] = True
    return nodes, alive


def padded_keys(index, level, nodes, alive, log_probs, scores):
    """What the padded tables give: (key, total) [B, W*C], -inf key for padding and dead
    beams, each child's total = beam score + its tuple's log-probs added left to right."""
    codes = index.child_codes[level][nodes]                                # [B, W, C, S]
    valid = index.child_valid[level][nodes] & alive[:, :, None]
    picked = [log_probs[:, :, s].gather(2, codes[..., s]) for s in range(codes.shape[3])]
    total = scores[:, :, None] + tuple_scores(picked)
    return (rank_key(total, valid).flatten(1), total.flatten(1), codes.flatten(1, 2),
            valid.flatten(1))


@pytest.mark.parametrize("n_signals,quantum", [(1, None), (3, None), (2, 0.5)])
def test_candidates_score_and_rank_as_the_padded_table(n_signals, quantum):
    codes = random_codes(150 if n_signals == 1 else 400, 3, n_signals, 6, seed=n_signals)
    index = PrefixIndex.from_codes(codes)
    assert index.child_codes[1].shape[1] > 2         # padded: the busiest node is wide
    bsz, width, level = 5, 7, 1
    nodes, alive = beams_at(index, level, bsz, width, seed=1)
    gen = torch.Generator().manual_seed(2)
    log_probs = torch.log_softmax(torch.randn(bsz, width, n_signals, 6, generator=gen), -1)
    if quantum is not None:                         # many exact ties across beams
        log_probs = (log_probs / quantum).round() * quantum
    scores = -torch.rand(bsz, width, generator=gen).sort(1, descending=True).values

    first, count, flat_codes, _ = index.child_lists[level]
    cands = level_candidates(nodes, alive, first, count, flat_codes)
    key_pad, total_pad, codes_pad, valid_pad = padded_keys(index, level, nodes, alive,
                                                           log_probs, scores)
    # the same children, in the padded table's order, padding and dead beams left out
    for b in range(bsz):
        mine = slice(int(cands.user_first[b]), int(cands.user_first[b] + cands.user_count[b]))
        assert torch.equal(cands.codes[mine], codes_pad[b][valid_pad[b]])
    assert cands.beam.numel() == int(valid_pad.sum())

    total = candidate_totals(log_probs.flatten(0, 1), cands.beam, cands.codes,
                             scores.flatten()[cands.beam])
    assert torch.equal(total, total_pad[valid_pad])          # bit for bit
    keep = 6
    top_key, pick = ranked_candidates(rank_key(total), cands, keep)
    want_key, want_pos = ranked_topk(key_pad, keep)
    assert torch.equal(top_key, want_key)
    # the picked candidate is the padded table's picked child (same beam, same tuple)
    assert torch.equal(cands.beam[pick] % width,
                       want_pos // index.child_codes[level].shape[1])
    assert torch.equal(cands.codes[pick], codes_pad.gather(
        1, want_pos[:, :, None].expand(-1, -1, n_signals)))


def test_rows_of_maps_a_subset_of_users_and_beams_to_its_step_rows():
    codes = random_codes(300, 3, 2, 5, seed=4)
    index = PrefixIndex.from_codes(codes)
    nodes, alive = beams_at(index, 2, 6, 9, seed=5)
    cands = level_candidates(nodes, alive, *index.child_lists[2][:3])
    users, lo, hi = torch.tensor([4, 1]), 3, 7
    which, row = cands.rows_of(lo, hi, users)
    user, slot = cands.beam[which] // 9, cands.beam[which] % 9
    assert set(user.tolist()) <= {1, 4} and bool(((slot >= lo) & (slot < hi)).all())
    expected = [(u, w) for u in range(6) for w in range(lo, hi)
                for _ in range(int(cands.per_beam[u, w])) if u in (1, 4)]
    assert sorted(zip(user.tolist(), slot.tolist())) == sorted(expected)
    position = torch.tensor([{4: 0, 1: 1}[u] for u in user.tolist()])
    assert torch.equal(row, position * (hi - lo) + slot - lo)
    which_all, row_all = cands.rows_of(0, 9)
    assert torch.equal(which_all, torch.arange(cands.beam.numel()))
    assert torch.equal(row_all, cands.beam)


def test_child_lists_hold_every_child_once():
    codes = random_codes(200, 3, 3, 4, seed=6)
    index = PrefixIndex.from_codes(codes)
    for level, (first, count, flat_codes, flat_next) in enumerate(index.child_lists):
        valid = index.child_valid[level]
        assert torch.equal(count, valid.sum(1))
        assert int(first[-1] + count[-1]) == flat_codes.shape[0] == int(valid.sum())
        for node in (0, index.child_codes[level].shape[0] - 1):
            span = slice(int(first[node]), int(first[node] + count[node]))
            assert torch.equal(flat_codes[span], index.child_codes[level][node][valid[node]])
            assert torch.equal(flat_next[span], index.child_next[level][node][valid[node]])
    assert sorted(index.child_lists[-1][3].tolist()) == list(range(200))   # every item once


def test_an_empty_batch_has_no_candidates():
    codes = random_codes(50, 2, 2, 4, seed=7)
    index = PrefixIndex.from_codes(codes)
    nodes = torch.zeros(0, 4, dtype=torch.long)
    cands = level_candidates(nodes, nodes.bool(), *index.child_lists[1][:3])
    top_key, pick = ranked_candidates(torch.empty(0), cands, 3)
    assert cands.beam.numel() == 0 and top_key.shape == pick.shape == (0, 3)
