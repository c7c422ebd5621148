"""SemanticIDGenerator: shapes, learning, scoring consistency, decoding, similarity switch."""
import pytest
import torch

from bench.reference_beam_search import reference_beam_search
from recbole_bbqrec.modules.beam_search import PrefixIndex, constrained_beam_search
from recbole_bbqrec.modules.generator import SemanticIDGenerator

L, S, N, T, DZ = 3, 3, 16, 6, 12



pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: see conftest

def make_model(use_similarity=True, dropout=0.0, seed=0, n_layers=2):
    torch.manual_seed(seed)
    return SemanticIDGenerator(n_levels=L, n_signals=S, codebook_size=N, d_model=32, n_heads=4,
                               n_encoder_layers=n_layers, n_decoder_layers=n_layers, d_ff=64,
                               dropout=dropout,
                               max_history=T, n_buckets=10, use_similarity=use_similarity)


@pytest.fixture(scope="module")
def catalogue():
    gen = torch.Generator().manual_seed(0)
    codes = torch.unique(torch.randint(0, N, (400, L * S), generator=gen), dim=0)[:200]
    codes = codes[torch.randperm(codes.shape[0], generator=gen)].view(-1, L, S)
    zq = torch.randn(codes.shape[0], DZ, generator=gen)
    return codes, zq


def make_batch(catalogue, bsz=6, seed=1):
    codes, zq = catalogue
    gen = torch.Generator().manual_seed(seed)
    items = torch.randint(0, codes.shape[0], (bsz, T), generator=gen)
    mask = torch.ones(bsz, T, dtype=torch.bool)
    mask[0, 3:] = False
    mask[1, 1:] = False
    hist = codes[items].masked_fill(~mask[:, :, None, None], 0)
    target = codes[torch.randint(0, codes.shape[0], (bsz,), generator=gen)]
    return hist, mask, zq[items], target


def test_shapes(catalogue):
    model = make_model().eval()
    hist, mask, zq, target = make_batch(catalogue)
    assert model(hist, mask, zq, target).shape == (6, L, S, N)
    assert model.loss(hist, mask, zq, target).dim() == 0
    assert model.score_items(hist, mask, zq, catalogue[0][:7][None].expand(6, -1, -1, -1)).shape == (6, 7)
    memory = model.encode(hist, mask, zq)
    assert memory.shape == (6, T, 32)
    assert model.step_log_probs(memory, mask, target[:, None, :2]).shape == (6, 1, S, N)
    assert model.step_log_probs(memory, mask, target[:, :1]).shape == (6, S, N)


def test_loss_falls_when_overfitting(catalogue):
    model = make_model(dropout=0.1, n_layers=1)
    hist, mask, zq, target = make_batch(catalogue, bsz=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(50):
        loss = model.loss(hist, mask, zq, target)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        final = float(model.loss(hist, mask, zq, target))
    assert first > 2.5 and final < 0.3 * first


def test_score_items_matches_teacher_forced_logits(catalogue):
    model = make_model().eval()
    hist, mask, zq, target = make_batch(catalogue)
    log_probs = torch.log_softmax(model(hist, mask, zq, target), dim=-1)
    expected = log_probs.gather(-1, target[..., None]).squeeze(-1).sum((1, 2))
    got = model.score_items(hist, mask, zq, target[:, None])[:, 0]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # Stateless step-by-step log-probs agree with teacher forcing too.
    memory = model.encode(hist, mask, zq)
    for level in range(L):
        step = model.step_log_probs(memory, mask, target[:, :level])
        torch.testing.assert_close(step, log_probs[:, level], atol=1e-5, rtol=1e-5)


def test_padding_does_not_change_outputs(catalogue):
    model = make_model().eval()
    hist, mask, zq, target = make_batch(catalogue)
    hist2, zq2 = hist.clone(), zq.clone()
    hist2[~mask] = torch.randint(0, N, (int((~mask).sum()), L, S))
    zq2[~mask] = torch.randn(int((~mask).sum()), DZ)
    torch.testing.assert_close(model(hist, mask, zq, target), model(hist2, mask, zq2, target),
                               atol=1e-5, rtol=1e-5)


def test_generate_returns_real_items_scored_like_score_items(catalogue):
    codes, _ = catalogue
    model = make_model().eval()
    hist, mask, zq, _ = make_batch(catalogue)
    index = PrefixIndex.from_codes(codes)
    items, scores = model.generate(hist, mask, zq, index, beam_size=20, topk=10)
    assert items.shape == scores.shape == (6, 10)
    assert items.min() >= 0 and items.max() < codes.shape[0]
    assert all(len(set(row.tolist())) == 10 for row in items)
    torch.testing.assert_close(scores, model.score_items(hist, mask, zq, codes[items]),
                               atol=1e-4, rtol=1e-5)
    # The cached step function gives the same search result as the stateless one.
    memory = model.encode(hist, mask, zq)
    stateless = constrained_beam_search(lambda p, _: model.step_log_probs(memory, mask, p),
                                        index, 6, 20, topk=10)
    assert torch.equal(stateless[0], items)
    torch.testing.assert_close(stateless[1], scores, atol=1e-5, rtol=1e-5)
    # A beam as wide as the catalogue is exhaustive: every item, ranked by its likelihood.
    all_scores = model.score_items(hist, mask, zq, codes[None].expand(6, -1, -1, -1))
    every, every_scores = model.generate(hist, mask, zq, index, beam_size=codes.shape[0])
    assert torch.equal(every.sort(1).values, torch.arange(codes.shape[0]).expand(6, -1))
    torch.testing.assert_close(every_scores, all_scores.gather(1, every), atol=1e-4, rtol=1e-5)
    assert torch.all(every_scores[:, :-1] >= every_scores[:, 1:])
    with pytest.raises(ValueError, match="smaller than topk"):
        model.generate(hist, mask, zq, index, beam_size=5, topk=10)


def test_generate_in_user_chunks_matches_one_chunk(catalogue, monkeypatch):
    """generate decodes users in chunks of DECODE_ROWS_CPU // beam_size; with 2 users per chunk
    (and a shorter last one) it returns the items one chunk of all 6 users returns, with the
    same scores up to the rounding of a matmul over fewer rows."""
    from recbole_bbqrec.modules import generator as generator_module

    codes, _ = catalogue
    model = make_model().eval()
    hist, mask, zq, _ = make_batch(catalogue)
    index = PrefixIndex.from_codes(codes)
    whole = model.generate(hist, mask, zq, index, beam_size=20, topk=10)
    for rows in (40, 80):                    # 2 and 4 users per chunk at beam 20
        monkeypatch.setattr(generator_module, "DECODE_ROWS_CPU", rows)
        chunked = model.generate(hist, mask, zq, index, beam_size=20, topk=10)
        assert torch.equal(chunked[0], whole[0])
        torch.testing.assert_close(chunked[1], whole[1], atol=1e-5, rtol=1e-6)


def test_generate_skips_last_level_beams_that_cannot_reach_the_top_k(catalogue):
    """A model sure of every item's last tuple (as a trained one is): only the best ~topk beams
    can reach the top, so the pruned search (what generate runs) sends few of them through
    the decoder and returns the full search's items and scores."""
    codes = catalogue[0].clone()
    codes[:, L - 1] = 0                                   # every last tuple (0, 0, 0) ...
    assert torch.unique(codes, dim=0).shape[0] == codes.shape[0]
    model = make_model().eval()
    with torch.no_grad():
        model.head_bias.view(L, S, N)[L - 1, :, 0] = 30.0  # ... and the model is sure of it
    hist, mask, zq, _ = make_batch(catalogue)
    index = PrefixIndex.from_codes(codes)
    memory = model.encode(hist, mask, zq)
    scored = []

    def counted(step):
        def run(prefix, parent, users=None):
            if prefix.shape[2] == L - 1:
                scored.append(prefix.shape[0] * prefix.shape[1])
            return step(prefix, parent, users)
        return run
    with torch.no_grad():
        pruned = constrained_beam_search(counted(model.make_batched_step_fn(memory, mask)),
                                         index, 6, 30, topk=5, prune=True)
        full = constrained_beam_search(model.make_batched_step_fn(memory, mask), index, 6, 30,
                                       topk=5)
        plain = reference_beam_search(model.make_step_fn(memory, mask), codes, 6, 30, topk=5)
    assert sum(scored) <= 6 * 8 < 6 * 30            # round 1 only: ceil(1.5 * 5) beams a user
    for other in (full, plain, model.generate(hist, mask, zq, index, beam_size=30, topk=5)):
        assert torch.equal(pruned[0], other[0])
        torch.testing.assert_close(pruned[1], other[1], atol=1e-5, rtol=1e-5)
    # A call for some users at the last level continues the cached prefix; out of sequence,
    # with no cache for those users, it is refused.
    step = model.make_batched_step_fn(memory, mask)
    with pytest.raises(ValueError, match="must follow the previous level"):
        step(codes[:4, :2][None].expand(2, -1, -1, -1), torch.zeros(2, 4, dtype=torch.long),
             torch.tensor([0, 3]))


def test_similarity_switch(catalogue):
    hist, mask, zq, target = make_batch(catalogue)
    off = make_model(use_similarity=False).eval()
    assert not any("sim" in name for name, _ in off.named_parameters())
    out = off(hist, mask, None, target)
    torch.testing.assert_close(out, off(hist, mask, zq, target))   # zq ignored
    on = make_model(use_similarity=True)
    names = [n for n, _ in on.named_parameters() if "sim_embedding" in n]
    assert len(names) == 2                                         # one table per encoder layer
    on.loss(hist, mask, zq, target).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for n, p in on.named_parameters() if "sim_embedding" in n)
    with pytest.raises(ValueError, match="needs hist_zq"):
        on(hist, mask, None, target)


def test_bad_codes_and_inherit_codebooks(catalogue):
    model = make_model().eval()
    hist, mask, zq, target = make_batch(catalogue)
    bad = target.clone()
    bad[0, 1, 2] = N
    with pytest.raises(ValueError, match="codebook_size is 16"):
        model(hist, mask, zq, bad)
    before = model(hist, mask, zq, target)
    model.inherit_codebooks(torch.randn(L, N, 8))                  # shared, D=8 != d_model
    table = model.code_embedding.weight.view(L, S, N, 32)
    torch.testing.assert_close(table[:, 0], table[:, 2])           # shared across signals
    assert (model(hist, mask, zq, target) - before).abs().max() > 1e-3
    with pytest.raises(ValueError, match="do not match"):
        model.inherit_codebooks(torch.randn(L + 1, N, 8))


def test_batched_step_fn_matches_plain_step_fn(catalogue):
    codes, _ = catalogue
    model = make_model().eval()
    hist, mask, zq, _ = make_batch(catalogue)
    index = PrefixIndex.from_codes(codes)
    memory = model.encode(hist, mask, zq)
    with torch.no_grad():
        # Tiny chunks (2 beams) so that every step crosses chunk boundaries.
        for rows in (2, 512):
            fast = constrained_beam_search(model.make_batched_step_fn(memory, mask, rows), index,
                                           6, 20, topk=10)
            plain = reference_beam_search(model.make_step_fn(memory, mask), codes, 6, 20, topk=10)
            assert torch.equal(fast[0], plain[0])
            torch.testing.assert_close(fast[1], plain[1], atol=1e-5, rtol=1e-5)
        # Called out of sequence (a fresh prefix of length 2), it rebuilds its cache.
        step = model.make_batched_step_fn(memory, mask, rows_per_chunk=4)
        prefix = codes[:5, :2][None].expand(6, -1, -1, -1)                 # [B, 5, 2, S]
        step(prefix[:, :1, :0], None)
        torch.testing.assert_close(step(prefix, None),
                                   model.step_log_probs(memory, mask, prefix),
                                   atol=1e-5, rtol=1e-5)
        # In sequence, with a parent reordering: level 1 from 5 beams, then level 2.
        step(prefix[:, :1, :0], None)
        first = codes[:5, :1][None].expand(6, -1, -1, -1)
        step(first, torch.zeros(6, 5, dtype=torch.long))
        parent = torch.tensor([4, 0, 2, 2, 1]).expand(6, -1)
        second = torch.cat([first.gather(1, parent[:, :, None, None].expand(-1, -1, 1, S)),
                            codes[5:10, 1:2][None].expand(6, -1, -1, -1)], dim=2)
        torch.testing.assert_close(step(second, parent),
                                   model.step_log_probs(memory, mask, second),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("use_similarity", [True, False])
def test_inference_encoder_computes_only_each_length_groups_real_positions(
        catalogue, monkeypatch, use_similarity):
    """Without autograd ``encode`` runs users sorted by history extent in groups cut to their
    longest history (``length_groups``): real positions match the full-width encoder (run
    with autograd) up to rounding, and so do the searches and scores that read the memory."""
    from recbole_bbqrec.modules import length_groups

    codes, _ = catalogue
    model = make_model(use_similarity=use_similarity).eval()
    hist, mask, zq, _ = make_batch(catalogue, bsz=8, seed=3)
    mask[2:5, 4:] = False                    # extents: 3, 1, 4, 4, 4, then:
    mask[5] = True                           # 6
    mask[6] = torch.tensor([False, False, True, True, False, True])    # 6, with holes
    mask[7] = False                          # no real item: full width, as with autograd
    hist = hist.masked_fill(~mask[:, :, None, None], 0)
    zq = zq if use_similarity else None
    widths = []
    rows = model._encode_rows

    def spy(hist_codes, hist_mask, hist_zq):
        widths.append(tuple(hist_codes.shape[:2]))
        return rows(hist_codes, hist_mask, hist_zq)
    monkeypatch.setattr(model, "_encode_rows", spy)
    monkeypatch.setattr(length_groups, "ENCODE_GROUP_USERS", 3)
    full = model.encode(hist, mask, zq).detach()                          # autograd on
    assert widths == [(8, T)]
    widths.clear()
    with torch.no_grad():
        grouped = model.encode(hist, mask, zq)
    assert widths == [(3, 4), (5, T)]        # users 1, 0, 2 | 3, 4, 5, 6, 7 (two 6-wide merged)
    torch.testing.assert_close(grouped[mask], full[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grouped[7], full[7], atol=1e-5, rtol=1e-5)   # empty: all of it
    assert grouped[:3, 4:].abs().sum() == 0 and grouped[:3, :4].abs().sum() > 0
    index = PrefixIndex.from_codes(codes)
    with torch.no_grad():
        ours = model.decode(grouped, mask, index, 20, topk=10)
        theirs = model.decode(full, mask, index, 20, topk=10)
        scored = model.score_items(hist, mask, zq, codes[ours[0]])
    assert torch.equal(ours[0], theirs[0])
    torch.testing.assert_close(ours[1], theirs[1], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(scored, model.score_items(hist, mask, zq, codes[ours[0]]).detach(),
                               atol=1e-4, rtol=1e-5)                     # autograd on: full
    # nothing to cut: one call on the batch as given
    widths.clear()
    with torch.no_grad():
        model.encode(hist[5:7], mask[5:7], None if zq is None else zq[5:7])
    assert widths == [(2, T)]
