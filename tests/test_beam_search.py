"""Trie-constrained beam search: validity, exactness, batched == reference, padding."""
import pytest
import torch

from recbole_bbqrec.modules import level_candidates
from recbole_bbqrec.modules import tuple_topk as tt
from bench.reference_beam_search import reference_beam_search
from recbole_bbqrec.modules.beam_search import PrefixIndex, constrained_beam_search

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: see conftest


@pytest.fixture(params=[None, 0.0, float("inf")], ids=["auto-layout", "flat", "padded"])
def layout(request, monkeypatch):
    """Levels below the root in the layout the search picks, or forced to flat lists
    (no table is ever small enough) or to the padded table (every table is)."""
    if request.param is not None:
        monkeypatch.setattr(level_candidates, "PADDED_MAX_ENTRIES_PER_CANDIDATE", request.param)


def random_codes(n_items, n_levels, n_signals, n_codes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rows = torch.unique(torch.randint(0, n_codes, (4 * n_items, n_levels * n_signals),
                                      generator=gen), dim=0)
    assert rows.shape[0] >= n_items, "code space too small for the requested catalogue"
    rows = rows[torch.randperm(rows.shape[0], generator=gen)[:n_items]]
    return rows.view(n_items, n_levels, n_signals)


def make_step_fn(bsz, n_levels, n_signals, n_codes, seed=0):
    """A deterministic prefix-dependent model: row-wise ops only, so a beam's output does not
    depend on where it sits in the batch."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(bsz, n_levels, n_signals * n_codes, generator=gen)
    mix = torch.randn(n_levels, n_signals, n_codes, n_signals * n_codes, generator=gen)

    def step(prefix, parent, users=None):
        b, w, level, _ = prefix.shape
        rows = base if users is None else base[users]        # a subset of the batch's users
        logits = rows[:, level, None].expand(b, w, -1)
        for pos in range(level):
            for s in range(n_signals):
                logits = logits + mix[pos, s][prefix[:, :, pos, s]]
        return torch.log_softmax(logits.reshape(b, w, n_signals, n_codes), dim=-1)

    return step


def exhaustive_scores(step_fn, item_codes, bsz):
    """Score every item by summing its per-level tuple log-probs in decoding order."""
    n_items, n_levels, n_signals = item_codes.shape
    codes = item_codes[None].expand(bsz, -1, -1, -1)
    total = torch.zeros(bsz, n_items)
    for level in range(n_levels):
        log_probs = step_fn(codes[:, :, :level], None)                 # [B, n, S, N]
        picked = log_probs.gather(-1, codes[:, :, level, :, None]).squeeze(-1)
        tup = picked[..., 0]
        for s in range(1, n_signals):
            tup = tup + picked[..., s]
        total = total + tup
    return total


def test_prefix_index_reconstructs_catalogue():
    codes = random_codes(60, 3, 2, 4)
    index = PrefixIndex.from_codes(codes)
    assert index.child_codes[0].shape[0] == 1                         # the root
    rebuilt = {}

    def walk(level, node, path):
        valid = index.child_valid[level][node]
        for c in torch.nonzero(valid).flatten().tolist():
            tup = tuple(index.child_codes[level][node, c].tolist())
            nxt = int(index.child_next[level][node, c])
            if level == codes.shape[1] - 1:
                rebuilt[nxt] = path + (tup,)
            else:
                walk(level + 1, nxt, path + (tup,))

    walk(0, 0, ())
    assert sorted(rebuilt) == list(range(60))
    for item, path in rebuilt.items():
        assert [list(t) for t in path] == codes[item].tolist()


def test_duplicate_and_negative_codes_are_rejected():
    codes = random_codes(10, 2, 2, 5)
    codes[7] = codes[3]
    with pytest.raises(ValueError, match=r"items \[3, 7\]"):
        PrefixIndex.from_codes(codes)
    codes = random_codes(10, 2, 2, 5)
    codes[4, 1, 0] = -1
    with pytest.raises(ValueError, match="item row 4"):
        PrefixIndex.from_codes(codes)


def test_returns_valid_distinct_items_sorted():
    codes = random_codes(300, 3, 3, 6)
    step = make_step_fn(5, 3, 3, 6)
    items, scores = constrained_beam_search(step, PrefixIndex.from_codes(codes), 5, 25, topk=20)
    assert items.shape == scores.shape == (5, 20)
    assert items.min() >= 0 and items.max() < 300
    for row in items:
        assert len(set(row.tolist())) == 20
    assert torch.all(scores[:, :-1] >= scores[:, 1:])
    # A beam's score is its item's exhaustive log-likelihood.
    full = exhaustive_scores(step, codes, 5)
    torch.testing.assert_close(scores, full.gather(1, items), atol=1e-5, rtol=0)


@pytest.mark.parametrize("n_levels,n_signals,n_codes,n_items", [(3, 3, 4, 40), (2, 1, 8, 50),
                                                                 (4, 2, 3, 30)])
def test_matches_exhaustive_search_when_beam_covers_catalogue(n_levels, n_signals, n_codes,
                                                              n_items):
    codes = random_codes(n_items, n_levels, n_signals, n_codes, seed=n_levels)
    step = make_step_fn(4, n_levels, n_signals, n_codes, seed=1)
    items, scores = constrained_beam_search(step, PrefixIndex.from_codes(codes), 4, n_items)
    full = exhaustive_scores(step, codes, 4)
    expected_scores, expected_items = full.sort(dim=1, descending=True)
    assert torch.equal(items, expected_items)
    assert torch.equal(scores, expected_scores)        # same addition order -> bit identical


@pytest.mark.parametrize("n_levels,n_signals,n_codes,n_items,beam", [
    (3, 3, 8, 400, 20), (3, 1, 16, 500, 10), (2, 2, 5, 20, 50), (4, 1, 4, 150, 7),
    (3, 3, 256, 2000, 50)])
@pytest.mark.usefixtures("layout")
def test_batched_equals_reference(n_levels, n_signals, n_codes, n_items, beam):
    codes = random_codes(n_items, n_levels, n_signals, n_codes, seed=beam)
    step = make_step_fn(3, n_levels, n_signals, n_codes, seed=beam + 1)
    fast = constrained_beam_search(step, PrefixIndex.from_codes(codes), 3, beam, topk=min(beam, 10))
    slow = reference_beam_search(step, codes, 3, beam, topk=min(beam, 10))
    assert torch.equal(fast[0], slow[0])
    assert torch.equal(fast[1], slow[1])


def test_shared_first_position_exercises_single_node_levels():
    codes = random_codes(30, 3, 2, 4)
    codes[:, 0] = torch.tensor([1, 2])                  # every item shares position 0
    codes = torch.unique(codes, dim=0)
    step = make_step_fn(2, 3, 2, 4)
    index = PrefixIndex.from_codes(codes)
    assert index.child_codes[1].shape[0] == 1
    items, scores = constrained_beam_search(step, index, 2, codes.shape[0])
    expected_scores, expected_items = exhaustive_scores(step, codes, 2).sort(1, descending=True)
    assert torch.equal(items, expected_items) and torch.equal(scores, expected_scores)


def test_beam_smaller_than_topk_raises():
    codes = random_codes(20, 2, 1, 8)
    step = make_step_fn(1, 2, 1, 8)
    with pytest.raises(ValueError, match="beam_size=5 is smaller than topk=10"):
        constrained_beam_search(step, PrefixIndex.from_codes(codes), 1, 5, topk=10)
    with pytest.raises(ValueError, match="beam_size=5 is smaller than topk=10"):
        reference_beam_search(step, codes, 1, 5, topk=10)


@pytest.mark.usefixtures("layout")
def test_catalogue_smaller_than_beam_is_padded():
    codes = random_codes(5, 2, 2, 3)
    step = make_step_fn(2, 2, 2, 3)
    for search in (lambda: constrained_beam_search(step, PrefixIndex.from_codes(codes), 2, 8),
                   lambda: reference_beam_search(step, codes, 2, 8)):
        items, scores = search()
        assert items.shape == (2, 8)
        assert sorted(items[0, :5].tolist()) == list(range(5))
        assert torch.all(items[:, 5:] == -1) and torch.all(torch.isneginf(scores[:, 5:]))
        assert torch.isfinite(scores[:, :5]).all()


def test_step_fn_with_too_few_codes_is_rejected():
    codes = random_codes(20, 2, 1, 8)
    step = make_step_fn(1, 2, 1, 4)                     # scores 4 codes, catalogue uses up to 7
    with pytest.raises(ValueError, match="catalogue uses code"):
        constrained_beam_search(step, PrefixIndex.from_codes(codes), 1, 5)


def scaled(step, scale, quantum=None):
    """step's logits times ``scale`` (peaked or flat), optionally rounded to ``quantum`` so
    that many tuple scores tie exactly."""
    def run(prefix, parent, users=None):
        logits = step(prefix, parent, users) * scale
        if quantum is not None:
            logits = (logits / quantum).round() * quantum
        return torch.log_softmax(logits, dim=-1)
    return run


@pytest.mark.parametrize("n_signals,n_codes,n_items", [(2, 16, 1000), (3, 10, 5000)])
def test_dense_first_position_matches_scan_and_reference(n_signals, n_codes, n_items):
    # Nearly every first tuple is used: the root goes through the cube / group path.
    codes = random_codes(n_items, 2, n_signals, n_codes, seed=n_signals)
    index = PrefixIndex.from_codes(codes)
    assert tt._cube_depth(index, 5) is not None
    for seed, scale, quantum in [(0, 0.2, None), (1, 5.0, None), (2, 1.0, 0.5), (3, 0.05, None)]:
        step = scaled(make_step_fn(16, 2, n_signals, n_codes, seed=seed), scale, quantum)
        fast = constrained_beam_search(step, index, 16, 5)
        slow = reference_beam_search(step, codes, 16, 5)
        assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1])
        log_probs = step(torch.zeros(16, 1, 0, n_signals, dtype=torch.long), None)[:, 0]
        zero = torch.zeros(16, 1)
        got = tt.root_topk(log_probs, index, 5)
        want = tt.scan_topk(log_probs, index.child_codes[0][0], zero, 5)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        # The group path alone, from the cube's floor, for every user (not only the inexact).
        top, _, _ = tt._cube_topk(log_probs, index, 5, tt._cube_depth(index, 5))
        grouped = tt._group_topk(log_probs, index, 5, top[:, -1])
        assert torch.equal(grouped[0], want[0]) and torch.equal(grouped[1], want[1])


def test_root_with_infinite_log_probs_falls_back_to_scan():
    codes = random_codes(1000, 2, 2, 16, seed=2)
    index = PrefixIndex.from_codes(codes)
    log_probs = torch.log_softmax(torch.randn(4, 2, 16), dim=-1)
    log_probs[0, 0, :12] = float("-inf")                # few finite first tuples left
    log_probs[1, 1, 3] = float("-inf")
    got = tt.root_topk(log_probs, index, 5)
    want = tt.scan_topk(log_probs, index.child_codes[0][0], torch.zeros(4, 1), 5)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize("n_levels,n_signals,n_codes,n_items,beam", [
    (3, 3, 4, 300, 20), (3, 1, 8, 300, 10), (2, 2, 6, 200, 12)])
@pytest.mark.usefixtures("layout")
def test_ties_break_alike_in_batched_and_reference(n_levels, n_signals, n_codes, n_items, beam):
    # Logits rounded to 0.5: many equal tuple scores, at the beam cut and inside it.
    codes = random_codes(n_items, n_levels, n_signals, n_codes, seed=beam)
    step = scaled(make_step_fn(6, n_levels, n_signals, n_codes, seed=beam), 1.0, 0.5)
    fast = constrained_beam_search(step, PrefixIndex.from_codes(codes), 6, beam)
    slow = reference_beam_search(step, codes, 6, beam)
    assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1])


def test_stable_topk_orders_ties_by_position():
    key = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0, 3.0]])
    vals, pos = tt.ranked_topk(key, 3)
    assert vals.tolist() == [[3.0, 3.0, 3.0]] and pos.tolist() == [[1, 2, 4]]
    vals, pos = tt.ranked_topk(key, 3, order=torch.tensor([[0, 9, 8, 7, 6, 5]]))
    assert pos.tolist() == [[5, 4, 2]]


def counting(step, n_levels):
    """step, and a list of the beams it scored at the last level, per call."""
    calls = []

    def run(prefix, parent, users=None):
        if prefix.shape[2] == n_levels - 1:
            calls.append(prefix.shape[0] * prefix.shape[1])
        return step(prefix, parent, users)
    return run, calls


def knowing(step, codes, bonus):
    """step's logits plus ``bonus`` on the codes of an item that continues each beam's prefix:
    a model that has learnt the catalogue, as a trained one has (its last tuples are near
    certain), unlike a random one."""
    def run(prefix, parent, users=None):
        logits = step(prefix, parent, users)                                # [B, W, S, N]
        level = prefix.shape[2]
        match = (prefix[:, :, None] == codes[None, None, :, :level]).flatten(3).all(3)
        item = match.float().argmax(2)                                      # [B, W]
        logits = logits + bonus * torch.nn.functional.one_hot(codes[item, level],
                                                              logits.shape[3])
        return torch.log_softmax(logits, dim=-1)
    return run


@pytest.mark.parametrize("n_levels,n_signals,n_codes,n_items,beam,topk,bonus,quantum", [
    (3, 3, 4, 300, 20, 5, 8.0, None),     # knows the catalogue: most last beams skipped
    (3, 3, 4, 300, 20, 5, 0.0, None),     # random: (nearly) every beam needed
    (3, 1, 8, 300, 30, 10, 4.0, 0.5),     # ties at the cut
    (2, 2, 6, 200, 40, 10, 6.0, None),
    (3, 2, 3, 30, 50, 10, 6.0, None),     # fewer items than beams: dead beams, -1 padding
])
@pytest.mark.usefixtures("layout")
def test_pruned_last_level_equals_the_full_search(n_levels, n_signals, n_codes, n_items, beam,
                                                  topk, bonus, quantum):
    codes = random_codes(n_items, n_levels, n_signals, n_codes, seed=beam)
    index = PrefixIndex.from_codes(codes)
    base = knowing(scaled(make_step_fn(8, n_levels, n_signals, n_codes, seed=beam), 1.0, quantum),
                   codes, bonus)
    step, pruned_calls = counting(base, n_levels)
    pruned = constrained_beam_search(step, index, 8, beam, topk=topk, prune=True)
    full_step, full_calls = counting(base, n_levels)
    full = constrained_beam_search(full_step, index, 8, beam, topk=topk)
    slow = reference_beam_search(base, codes, 8, beam, topk=topk)
    for got in (full, slow):
        assert torch.equal(pruned[0], got[0]) and torch.equal(pruned[1], got[1])
    assert sum(pruned_calls) <= sum(full_calls) + 8 * beam  # at worst one row per beam extra
    if bonus > 0 and quantum is None and n_items > beam:
        assert sum(pruned_calls) < 0.6 * sum(full_calls)     # the knowing model skips beams


@pytest.mark.usefixtures("layout")
def test_pruned_last_level_with_infinite_log_probs():
    # -inf log-probs below the root: keys at the dtype's minimum must still beat padding
    # and the floor must not let a skipped beam's valid child drop out.
    codes = random_codes(200, 3, 2, 5, seed=3)
    index = PrefixIndex.from_codes(codes)
    base = scaled(make_step_fn(6, 3, 2, 5, seed=3), 3.0)

    def step(prefix, parent, users=None):
        out = base(prefix, parent, users).clone()
        if prefix.shape[2] == 2:
            out[..., 1, :3] = float("-inf")             # most last tuples impossible
        return out
    pruned = constrained_beam_search(step, index, 6, 30, topk=10, prune=True)
    full = constrained_beam_search(step, index, 6, 30, topk=10)
    assert torch.equal(pruned[0], full[0]) and torch.equal(pruned[1], full[1])


@pytest.mark.usefixtures("layout")
def test_pruned_last_level_equals_the_full_search_on_random_small_cases():
    """A seeded sweep over shapes, peakedness, exact ties and -inf log-probs: an off-by-one
    floor (the (topk-1)-th key) or a skipped second round shows up in a few of these."""
    gen = torch.Generator().manual_seed(7)
    pick = lambda options: options[int(torch.randint(len(options), (1,), generator=gen))]  # noqa: E731
    second_rounds = 0
    for case in range(150):
        n_levels, n_signals, n_codes = pick([2, 3]), pick([1, 2, 3]), pick([2, 3, 4, 5, 6])
        space = n_codes ** (n_levels * n_signals)
        n_items = min(space // 2, pick([20, 60, 150]))
        if n_items < 2:
            continue
        codes = random_codes(n_items, n_levels, n_signals, n_codes, seed=case)
        index = PrefixIndex.from_codes(codes)
        bsz, beam = pick([1, 3, 7]), pick([4, 8, 16, 30])
        topk = pick([k for k in (1, 2, 3, 5, 10) if k < beam])
        base = make_step_fn(bsz, n_levels, n_signals, n_codes, seed=case)
        step = knowing(scaled(base, pick([0.1, 1.0, 4.0]), pick([None, 0.5, 1.0])), codes,
                       pick([0.0, 3.0, 10.0]))
        impossible = torch.rand(bsz, n_levels, n_signals, n_codes, generator=gen) < 0.1

        def with_holes(prefix, parent, users=None, step=step, impossible=impossible):
            rows = impossible if users is None else impossible[users]
            hole = rows[:, prefix.shape[2], None].expand(-1, prefix.shape[1], -1, -1)
            return step(prefix, parent, users).masked_fill(hole, float("-inf"))
        calls = []

        def counted(prefix, parent, users=None):
            if prefix.shape[2] == n_levels - 1:
                calls.append(users is not None)
            return with_holes(prefix, parent, users)
        pruned = constrained_beam_search(counted, index, bsz, beam, topk=topk, prune=True)
        full = constrained_beam_search(with_holes, index, bsz, beam, topk=topk)
        second_rounds += any(calls)
        assert torch.equal(pruned[0], full[0]), case
        assert torch.equal(pruned[1], full[1]), case
    assert second_rounds >= 10                        # the second round is exercised


def test_pruned_last_level_keeps_the_step_functions_dtype():
    codes = random_codes(300, 3, 3, 4, seed=20)
    index = PrefixIndex.from_codes(codes)
    base = make_step_fn(8, 3, 3, 4, seed=20)
    step = lambda p, parent, users=None: base(p, parent, users).double()  # noqa: E731
    pruned = constrained_beam_search(step, index, 8, 20, topk=5, prune=True)
    full = constrained_beam_search(step, index, 8, 20, topk=5)
    assert pruned[1].dtype == torch.float64
    assert torch.equal(pruned[0], full[0]) and torch.equal(pruned[1], full[1])
