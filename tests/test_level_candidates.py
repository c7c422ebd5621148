"""A level's candidates as flat lists and as the padded table: the same children, scores,
picks and tie order, whichever layout the search takes."""
import pytest
import torch

from recbole_bbqrec.modules import level_candidates as lc
from recbole_bbqrec.modules.level_candidates import FlatChildren, PaddedChildren
from recbole_bbqrec.modules.prefix_index import PrefixIndex
from recbole_bbqrec.modules.tuple_topk import rank_key, ranked_topk, tuple_scores
from tests.test_beam_search import random_codes

pytestmark = pytest.mark.usefixtures("single_thread")


def beams_at(index, level, bsz, width, seed):
    """Random beams at ``level``: node ids [B, W] (repeats allowed), ~20% dead, scores
    sorted per user."""
    gen = torch.Generator().manual_seed(seed)
    nodes = torch.randint(index.child_codes[level].shape[0], (bsz, width), generator=gen)
    alive = torch.rand(bsz, width, generator=gen) > 0.2
    alive[:, 0] = True
    scores = -torch.rand(bsz, width, generator=gen).sort(1, descending=True).values
    return nodes, alive, scores.masked_fill(~alive, float("-inf"))


def expected_keys(index, level, nodes, alive, log_probs, scores):
    """Written out on the padded table: (key, total) [B, W*C], -inf key for padding and dead
    beams, a child's total = beam score + its tuple's log-probs added left to right."""
    codes = index.child_codes[level][nodes]                                # [B, W, C, S]
    valid = index.child_valid[level][nodes] & alive[:, :, None]
    picked = [log_probs[:, :, s].gather(2, codes[..., s]) for s in range(codes.shape[3])]
    total = scores[:, :, None] + tuple_scores(picked)
    return rank_key(total, valid).flatten(1), total.flatten(1), codes.flatten(1, 2), valid


def layouts(index, level, nodes, alive, scores):
    return tuple(lc.level_children(index, level, nodes, alive, scores, layout)
                 for layout in ("flat", "padded"))


@pytest.mark.parametrize("n_signals,quantum", [(1, None), (3, None), (2, 0.5)])
def test_both_layouts_score_pick_and_take_as_the_padded_table(n_signals, quantum):
    codes = random_codes(150 if n_signals == 1 else 400, 3, n_signals, 6, seed=n_signals)
    index = PrefixIndex.from_codes(codes)
    n_children = index.child_codes[1].shape[1]
    assert n_children > 2                            # padded: the busiest node is wide
    bsz, width, level = 5, 7, 1
    nodes, alive, scores = beams_at(index, level, bsz, width, seed=1)
    # user 4 keeps one beam, at a node with fewer than keep children: dead picks at its end
    few = int(index.child_valid[level].sum(1).argmin())
    keep = max(6, int(index.child_valid[level][few].sum()) + 1)
    nodes[4, 0], alive[4, 1:] = few, False
    scores[4, 1:] = float("-inf")
    gen = torch.Generator().manual_seed(2)
    log_probs = torch.log_softmax(torch.randn(bsz, width, n_signals, 6, generator=gen), -1)
    if quantum is not None:                          # many exact ties across beams
        log_probs = (log_probs / quantum).round() * quantum
    want_key, want_total, want_codes, valid = expected_keys(index, level, nodes, alive,
                                                            log_probs, scores)
    top_want, pos_want = ranked_topk(want_key, keep)
    flat = layouts(index, level, nodes, alive, scores)[0]
    assert bool((top_want[4] == float("-inf")).any())                  # the dead picks
    # the flat lists hold the table's children in its order, padding and dead beams left out
    first = flat.user_count.cumsum(0) - flat.user_count
    for b in range(bsz):
        mine = slice(int(first[b]), int(first[b] + flat.user_count[b]))
        assert torch.equal(flat.codes[mine], want_codes[b][valid[b].flatten()])
    live = top_want > float("-inf")                    # dead picks are the caller's to mask
    for children in layouts(index, level, nodes, alive, scores):
        assert torch.equal(children.per_beam, valid.sum(2))
        children.score(log_probs)
        top_key, pick = children.top(keep)
        assert torch.equal(top_key, top_want)                            # bit for bit
        parent, total, next_node, picked = children.take(pick)
        assert torch.equal(parent[live], (pos_want // n_children)[live])
        assert torch.equal(total[live], want_total.gather(1, pos_want)[live])
        assert torch.equal(picked[live], want_codes.gather(1, pos_want[:, :, None].expand(
            -1, -1, n_signals))[live])
        want_next = index.child_next[level][nodes.gather(1, pos_want // n_children),
                                            pos_want % n_children]
        assert torch.equal(next_node[live], want_next[live])


def test_scoring_a_subset_of_users_and_beams_matches_scoring_them_all():
    codes = random_codes(300, 3, 2, 5, seed=4)
    index = PrefixIndex.from_codes(codes)
    nodes, alive, scores = beams_at(index, 2, 6, 9, seed=5)
    log_probs = torch.log_softmax(torch.randn(6, 9, 2, 5, generator=torch.Generator()
                                              .manual_seed(6)), -1)
    users, lo, hi = torch.tensor([4, 1]), 3, 7
    for whole, part in zip(layouts(index, 2, nodes, alive, scores),
                           layouts(index, 2, nodes, alive, scores)):
        whole.score(log_probs)
        part.score(log_probs[:, :3], 0, 3)                                 # round 1: all users
        part.score(log_probs[users, lo:hi], lo, hi, users)                 # round 2: a subset
        scored = torch.zeros(6, 9, dtype=torch.bool)
        scored[:, :3] = True
        scored[users, lo:hi] = True
        key_whole, key_part = whole.key.flatten(), part.key.flatten()
        if isinstance(whole, FlatChildren):
            mask = scored.flatten()[whole.beam]
        else:
            mask = scored[:, :, None].expand_as(whole.key).flatten()
        assert torch.equal(key_part[mask], key_whole[mask])
        assert bool((key_part[~mask] == float("-inf")).all())              # never scored


def test_the_layout_follows_how_full_the_padded_table_is():
    codes = random_codes(400, 3, 3, 6, seed=3)
    index = PrefixIndex.from_codes(codes)
    n_children = index.child_codes[1].shape[1]
    busiest = int(index.child_valid[1].sum(1).argmax())
    sparse = int(index.child_valid[1].sum(1).argmin())
    alive = torch.ones(4, 8, dtype=torch.bool)
    scores = torch.zeros(4, 8)
    ratio = lc.PADDED_MAX_ENTRIES_PER_CANDIDATE
    counts = index.child_valid[1].sum(1)
    assert int(counts[sparse]) * ratio < n_children <= int(counts[busiest]) * ratio
    full = torch.full((4, 8), busiest)
    assert isinstance(lc.level_children(index, 1, full, alive, scores), PaddedChildren)
    assert isinstance(lc.level_children(index, 1, full.fill_(sparse), alive, scores), FlatChildren)
    assert isinstance(lc.level_children(index, 1, full, alive, scores, "padded"), PaddedChildren)
    with pytest.raises(ValueError, match="layout"):
        lc.level_children(index, 1, full, alive, scores, "ragged")


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
    for children in layouts(index, 1, nodes, nodes.bool(), torch.zeros(0, 4)):
        children.score(torch.zeros(0, 4, 2, 4))
        top_key, pick = children.top(3)
        assert top_key.shape == pick.shape == (0, 3)


@pytest.mark.parametrize("ratio", [0.0, 1e9])              # always flat lists / always padded
@pytest.mark.parametrize("n_signals,bonus,quantum", [(3, 8.0, None), (1, 4.0, 0.5), (2, 0.0, None)])
def test_the_search_gives_the_references_result_in_either_layout(monkeypatch, ratio, n_signals,
                                                                 bonus, quantum):
    from bench.reference_beam_search import reference_beam_search
    from recbole_bbqrec.modules.beam_search import constrained_beam_search
    from tests.test_beam_search import knowing, make_step_fn, scaled

    monkeypatch.setattr(lc, "PADDED_MAX_ENTRIES_PER_CANDIDATE", ratio)
    codes = random_codes(150 if n_signals == 1 else 300, 3, n_signals, 6, seed=11)
    index = PrefixIndex.from_codes(codes)
    step = knowing(scaled(make_step_fn(8, 3, n_signals, 6, seed=12), 1.0, quantum), codes, bonus)
    slow = reference_beam_search(step, codes, 8, 30, topk=10)
    for prune in (False, True):
        fast = constrained_beam_search(step, index, 8, 30, topk=10, prune=prune)
        assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1])
