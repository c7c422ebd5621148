"""bench/beam_reach.py: the beams above each level's cut, against a brute force that scores
the beams the full search sends to its last level."""
import pytest
import torch

from bench.beam_reach import beams_in_reach
from recbole_bbqrec.modules.beam_search import PrefixIndex, constrained_beam_search
from tests.test_beam_search import knowing, make_step_fn, random_codes, scaled

pytestmark = pytest.mark.usefixtures("single_thread")


def prefix_scores(step, prefix):
    """Sum of the tuple log-probs along each prefix [B, W, l, S] (a stateless step)."""
    total = torch.zeros(prefix.shape[:2])
    for level in range(prefix.shape[2]):
        picked = step(prefix[:, :, :level], None).gather(-1, prefix[:, :, level, :, None])
        total = total + picked.squeeze(-1).sum(-1)
    return total


@pytest.mark.parametrize("n_signals,n_codes,bonus,quantum", [
    (3, 4, 8.0, None),     # knows the catalogue
    (3, 4, 0.0, None),     # random
    (1, 8, 4.0, 0.5),      # quantized logits
    (1, 8, 200.0, None),   # certain last codes (log-prob 0): beams tie the cut exactly
])
def test_last_level_reach_matches_a_brute_force(n_signals, n_codes, bonus, quantum):
    n_levels, users, beam, topk = 4, 8, 20, 5
    codes = random_codes(300, n_levels, n_signals, n_codes, seed=1)
    step = knowing(scaled(make_step_fn(users, n_levels, n_signals, n_codes, seed=1), 1.0,
                          quantum), codes, bonus)
    counts = beams_in_reach(lambda: step, codes, users, beam, topk)
    assert len(counts) == n_levels - 1 and all(c.shape == (users,) for c in counts)

    seen = {}

    def recording(prefix, parent, users=None):
        seen[prefix.shape[2]] = prefix          # the beams each level scores, in rank order
        return step(prefix, parent, users)
    _, final = constrained_beam_search(recording, PrefixIndex.from_codes(codes), users, beam,
                                       topk=topk)
    for level in range(1, n_levels):            # the beams of `level` against the next cut
        beam_scores = prefix_scores(step, seen[level])                      # [B, W]
        if level < n_levels - 1:                # inner: the beam-th best child, kept as a beam
            cut = prefix_scores(step, seen[level + 1]).min(1).values
        else:                                   # last: the topk-th item
            cut = final[:, topk - 1]
        expected = (beam_scores >= cut[:, None]).sum(1)
        assert torch.equal(counts[level - 1], expected), level
    if bonus == 8.0:   # a model that knows the catalogue leaves few beams in reach at the end
        assert counts[-1].float().mean() < beam / 2 < counts[0].float().mean()


def test_dead_beams_are_never_in_reach():
    # 30 items, beam 50: fewer live beams than the beam width, and fewer final items than the
    # cut of an inner level (its cut is -inf): only live beams count.
    codes = random_codes(30, 3, 2, 3, seed=2)
    step = make_step_fn(4, 3, 2, 3, seed=2)
    counts = beams_in_reach(lambda: step, codes, 4, 50, 10)
    live = [torch.unique(codes[:, :level + 1], dim=0).shape[0] for level in range(2)]
    for count, n_live in zip(counts, live):
        assert (count <= n_live).all() and (count > 0).all()
    assert (counts[0] == live[0]).all()        # inner cut -inf: every live beam is in reach
