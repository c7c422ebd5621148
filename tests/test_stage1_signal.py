"""Stage 1 must learn behavior, not just produce unique codes: collaborative ID start,
contrastive rows, per-signal codebook sharing and code predictability, on real ml-100k."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recbole_bbqrec.tokenizers.collaborative import (cooccurrence_embeddings, cooccurrence_matrix,
                                                     fit_width, ppmi)
from recbole_bbqrec.tokenizers.diagnostics import code_predictability, usage_per_signal
from recbole_bbqrec.tokenizers.trainer import (TokenizerTrainer, seed_everything, sequence_batches,
                                               user_sequences)
from tests.test_tokenizers import ml100k, small_bbq  # noqa: F401  (module-scoped real data)

pytestmark = pytest.mark.usefixtures("single_thread")


def test_cooccurrence_counts_are_symmetric_and_distance_weighted():
    counts = cooccurrence_matrix([np.array([0, 1, 2]), np.array([2, 2, 3])], n_items=4, window=2).toarray()
    assert np.allclose(counts, counts.T) and np.allclose(np.diag(counts), 0.0)
    assert counts[0, 1] == 1.0 and counts[0, 2] == 0.5  # neighbours 1, two apart 1/2
    assert counts[2, 3] == 1.0 + 0.5  # 2 -> 3 at distances 1 and 2; the repeated 2 adds nothing
    with pytest.raises(ValueError, match=r"in \[0, 4\)"):
        cooccurrence_matrix([np.array([0, 4])], n_items=4)


def test_ppmi_keeps_only_positive_associations():
    counts = sp.csr_matrix(np.array([[0, 9, 1], [9, 0, 1], [1, 1, 0]], dtype=float))
    values = ppmi(counts).toarray()
    assert values[0, 1] > 0 and values.min() >= 0.0
    assert values[0, 2] == 0.0  # rarer than chance: dropped


def test_cooccurrence_embeddings_put_neighbours_close(ml100k):
    seqs, n = ml100k["sequences"], len(ml100k["tokens"])
    emb = cooccurrence_embeddings(seqs, n, dim=16, seed=0)
    assert emb.shape == (n, 16) and torch.isfinite(emb).all()
    assert torch.allclose(emb, cooccurrence_embeddings(seqs, n, dim=16, seed=0))  # deterministic
    unit = torch.nn.functional.normalize(emb, dim=1)
    prev = torch.as_tensor(np.concatenate([s[:-1] for s in seqs]))
    nxt = torch.as_tensor(np.concatenate([s[1:] for s in seqs]))
    neighbours = (unit[prev] * unit[nxt]).sum(1).mean()
    random_pairs = (unit[prev] * unit[nxt[torch.randperm(len(nxt))]]).sum(1).mean()
    assert neighbours > random_pairs + 0.1


def test_fit_width_projects_and_pads():
    table = torch.randn(50, 32)
    assert fit_width(table, 8).shape == (50, 8) and fit_width(table, 64).shape == (50, 64)
    assert torch.isclose(fit_width(table, 8).norm(dim=1).mean(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="n_items, width"):
        fit_width(torch.zeros(5), 4)


def test_user_rows_hold_out_the_last_item_and_batches_crop_long_ones():
    seqs = [np.arange(30), np.array([3, 4]), np.array([5, 6, 7])]
    rows, valid = user_sequences(seqs, n_items=40, max_len=5)
    assert [len(r) for r in rows] == [29, 2]  # the 2-item user only validates
    assert valid["target"].tolist() == [29, 4, 7]
    assert valid["history"][0].tolist() == [24, 25, 26, 27, 28] and valid["history_len"].tolist() == [5, 1, 2]
    batches = sequence_batches(rows, batch_size=1, max_len=5, rng=np.random.default_rng(0))
    lengths = sorted(int(lens[0]) for _, lens in batches)
    assert lengths == [2, 6]  # the 29-item row became a window of max_len + 1
    window = next(seq[0] for seq, lens in batches if int(lens[0]) == 6)
    assert (np.diff(window.numpy()) == 1).all()  # a contiguous window, in order


def test_predictability_separates_behavior_from_noise():
    rng = np.random.default_rng(0)
    # items 0..99 in 10 "genres" (code = item // 10); users mostly stay within a genre
    seqs = []
    for _ in range(400):
        genre = rng.integers(10)
        seqs.append(genre * 10 + rng.integers(0, 10, size=8))
    codes = np.arange(100) // 10
    result = code_predictability(codes, seqs, n_codes=10)
    assert result["bits"] > 1.0 and result["shuffled_bits"] < 0.2
    noise = code_predictability(rng.integers(0, 10, 100), seqs, n_codes=10)
    assert noise["bits"] < 0.2


def _train(data, id_init, epochs=3):
    seed_everything(3)
    tok = small_bbq(data, code_dim=16, n_levels=2, codebook_size=32, id_init=id_init)
    trainer = TokenizerTrainer(tok, epochs=epochs, batch_size=128, lr=3e-3, id_lr=1e-2, seed=3,
                               n_negatives=256, kmeans_redo_epoch=1)
    return tok, trainer.fit(data["features"], data["masks"], data["sequences"])


def test_trained_id_codes_follow_behavior_and_signals_share_the_codebook(ml100k):
    n = len(ml100k["tokens"])
    held_out_free = [s[:-1] for s in ml100k["sequences"]]  # what stage1.py feeds the SVD
    tok, result = _train(ml100k, cooccurrence_embeddings(held_out_free, n, 16, seed=3))
    report = result.signal_report
    ident = report["id"]["level1_predictability"]
    # the ID code of an item is predictable from the previous item's, far beyond shuffled codes
    assert ident["bits"] > ident["shuffled_bits"] + 0.15, report
    # a shared codebook that is shared: every signal uses at least half of the codes at level 1
    for signal, info in report.items():
        assert info["usage"][0] >= 0.5, (signal, report)
    assert result.collisions == 0 and result.best_valid > 0.02
    # the loop learned: the contrastive loss fell
    assert result.history[-1]["rec"] < result.history[0]["rec"]


def test_untrained_random_id_codes_fail_the_predictability_check(ml100k):
    """The check above can fail: ID codes of a random table carry no behavior."""
    seed_everything(3)
    tok = small_bbq(ml100k, code_dim=16, n_levels=2, codebook_size=32)
    tok.init_codebooks()
    codes = tok.encode_all().codes
    ident = code_predictability(codes[:, 0, 0], ml100k["sequences"], 32)
    assert ident["bits"] < ident["shuffled_bits"] + 0.15
    usage = usage_per_signal(codes, tok.signal_names, 32)
    assert set(usage) == {"id", "text", "genre"} and all(len(v) == 2 for v in usage.values())
