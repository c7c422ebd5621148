"""Stage 1's per-signal code-usage term (``code_usage_weight``): items with the same content
vote once, the term enters the loss, and trained in it spreads a signal over more of the
shared codebook, on real ml-100k (genre multi-hots: 1,682 items, 216 distinct genre sets)."""

import pytest
import torch

from recbole_bbqrec.tokenizers.diagnostics import usage_per_signal
from recbole_bbqrec.tokenizers.trainer import TokenizerTrainer, seed_everything
from tests.test_tokenizers import ml100k, small_bbq  # noqa: F401  (module-scoped real data)

pytestmark = pytest.mark.usefixtures("single_thread")


def test_items_with_the_same_content_vote_once(ml100k):
    tok = small_bbq(ml100k, usage_weight=1.0)
    genre = ml100k["features"]["genre"]
    items = torch.arange(200)
    picked = tok._distinct_contents("genre", items)
    # one position per distinct genre set among the 200 items, each the set's first item
    assert len(picked) == len(torch.unique(genre[items], dim=0))
    assert len(torch.unique(genre[items[picked]], dim=0)) == len(picked)
    # the ID signal's items are all distinct; text rows of ml-100k titles are too
    assert torch.equal(tok._distinct_contents("id", items), items)


def test_usage_term_enters_the_loss_only_when_weighted(ml100k):
    batch = {"items": torch.arange(64)}
    for weight in (0.0, 2.0):
        seed_everything(0)
        tok = small_bbq(ml100k, usage_weight=weight, use_rec=False)
        tok.init_codebooks()
        parts = tok.loss(batch)
        if weight == 0:
            assert float(parts["usage"]) == 0.0
        else:
            assert float(parts["usage"]) > 0.0
            rest = parts["recon"] + parts["rq"] + tok.alpha * parts["mim"] + tok.whiteness_weight * parts["white"]
            total = float(parts["loss"].detach())
            assert total == pytest.approx(float(rest + weight * parts["usage"]), rel=1e-5)


def _level1_usage(data, weight):
    seed_everything(3)
    tok = small_bbq(data, code_dim=16, n_levels=2, codebook_size=128, usage_weight=weight)
    trainer = TokenizerTrainer(tok, epochs=3, batch_size=128, lr=3e-3, id_lr=1e-2, seed=3,
                               n_negatives=256, kmeans_redo_epoch=1)
    trainer.fit(data["features"], data["masks"], data["sequences"])
    codes = tok.encode_all().codes
    return usage_per_signal(codes, tok.signal_names, 128)


def test_trained_in_usage_term_spreads_each_signal_over_more_codes(ml100k):
    plain, spread = _level1_usage(ml100k, 0.0), _level1_usage(ml100k, 1.0)
    for signal in plain:
        assert spread[signal][0] >= plain[signal][0], (signal, plain, spread)
    assert spread["genre"][0] > plain["genre"][0] + 0.05, (plain, spread)
