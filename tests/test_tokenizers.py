"""Stage-1 tokenizers on real ml-100k data (RecBole's wheel ships it)."""

import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest
import recbole
import torch

from recbole_bbqrec.tokenizers.bbq import BBQTokenizer
from recbole_bbqrec.tokenizers.letter import LETTERTokenizer
from recbole_bbqrec.tokenizers.rqvae import RQVAETokenizer
from recbole_bbqrec.tokenizers.semantic_ids import CollisionError
from recbole_bbqrec.tokenizers.collaborative import cooccurrence_embeddings
from recbole_bbqrec.tokenizers.diagnostics import code_predictability
from recbole_bbqrec.tokenizers.trainer import (TokenizerTrainer, load_tokenizer_checkpoint, seed_everything,
                                               sequence_batches, user_sequences)

ML100K = Path(recbole.__file__).parent / "dataset_example" / "ml-100k"
TEXT_DIM = 48


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: see conftest


def _bucket(word: str) -> int:
    return int(hashlib.md5(word.encode()).hexdigest(), 16) % TEXT_DIM


@pytest.fixture(scope="module")
def ml100k():
    """Real features and sequences: hashed bag of words of title + genres ('text'), genre
    multi-hot ('genre'), user sequences sorted by time, as 0-based item indices."""
    rows = [line.rstrip("\n").split("\t") for line in (ML100K / "ml-100k.item").read_text(encoding="latin-1").splitlines()[1:]]
    tokens = [r[0] for r in rows]
    index = {t: i for i, t in enumerate(tokens)}
    genres = sorted({g for r in rows for g in r[3].split()})
    text = np.zeros((len(rows), TEXT_DIM), dtype=np.float32)
    genre = np.zeros((len(rows), len(genres)), dtype=np.float32)
    for i, r in enumerate(rows):
        for word in (r[1] + " " + r[3]).lower().split():
            text[i, _bucket(word)] += 1.0
        for g in r[3].split():
            genre[i, genres.index(g)] = 1.0
    text /= np.linalg.norm(text, axis=1, keepdims=True).clip(1e-6)
    inter = np.loadtxt(ML100K / "ml-100k.inter", skiprows=1, dtype=np.int64, usecols=(0, 1, 3))
    inter = inter[np.lexsort((inter[:, 2], inter[:, 0]))]
    users, starts = np.unique(inter[:, 0], return_index=True)
    items = np.array([index[str(t)] for t in inter[:, 1]])
    sequences = np.split(items, starts[1:])
    features = {"text": torch.from_numpy(text), "genre": torch.from_numpy(genre)}
    masks = {"text": torch.ones(len(rows), dtype=torch.bool), "genre": torch.from_numpy(genre.sum(1) > 0)}
    return {"tokens": tokens, "features": features, "masks": masks, "sequences": sequences}


def small_bbq(data, **overrides):
    kwargs = dict(
        n_items=len(data["tokens"]), modality_dims={"text": TEXT_DIM, "genre": data["features"]["genre"].shape[1]},
        code_dim=16, n_levels=2, codebook_size=32, hidden_dims=(64,), dropout=0.0,
        seq_layers=1, seq_heads=2, max_len=20, seq_dropout=0.0, club_hidden=32, kmeans_iters=5,
    )
    kwargs.update(overrides)
    tok = BBQTokenizer(**kwargs)
    tok.set_features(data["features"], data["masks"])
    return tok


def seq_batch(data, n_items, rng, size=64):
    rows, _ = user_sequences(data["sequences"][:200], n_items, 10)
    seq, lengths = sequence_batches(rows, size, 10, rng)[0]
    return {
        "items": torch.as_tensor(rng.choice(n_items, 32, replace=False)),
        "sequence": seq,
        "sequence_len": lengths,
        "negatives": torch.as_tensor(rng.choice(n_items, 64, replace=False)),
    }


def test_bbq_loss_falls_on_real_data(ml100k):
    torch.manual_seed(0)
    tok = small_bbq(ml100k)
    tok.init_codebooks()
    rng = np.random.default_rng(0)
    batches = [seq_batch(ml100k, tok.n_items, rng) for _ in range(4)]
    before = [tok.loss(b) for b in batches]
    opt = torch.optim.Adam(tok.main_parameters(), lr=3e-3)
    mim_opt = torch.optim.Adam(tok.mim_parameters(), lr=3e-3)
    for step in range(30):
        parts = tok.loss(batches[step % 4])
        opt.zero_grad()
        parts["loss"].backward()
        opt.step()
        mim_opt.zero_grad()
        tok.mim_learning_loss().backward()
        mim_opt.step()
    after = [tok.loss(b) for b in batches]
    mean = lambda runs, key: float(sum(p[key].detach() for p in runs)) / len(runs)  # noqa: E731
    assert mean(after, "loss") < 0.9 * mean(before, "loss")
    assert mean(after, "rec") < mean(before, "rec")
    assert mean(after, "recon") < 0.7 * mean(before, "recon")
    assert set(before[0]) >= {"loss", "recon", "rq", "mim", "mim_raw", "rec"}


@pytest.mark.parametrize(
    "overrides, signals",
    [
        ({}, ["id", "text", "genre"]),
        ({"use_mim": False}, ["id", "text", "genre"]),
        ({"use_rec": False}, ["text", "genre"]),
        ({"shared_codebook": False}, ["id", "text", "genre"]),
        ({"signals": ["text", "genre"]}, ["text", "genre"]),  # no ID
        ({"signals": ["id", "genre"]}, ["id", "genre"]),  # no text
        ({"signals": ["id", "text"]}, ["id", "text"]),  # no second modality
        ({"club_sampled": True}, ["id", "text", "genre"]),
    ],
)
def test_every_ablation_builds_steps_and_encodes(ml100k, overrides, signals):
    torch.manual_seed(0)
    tok = small_bbq(ml100k, **overrides)
    assert tok.signal_names == signals
    tok.init_codebooks()
    batch = seq_batch(ml100k, tok.n_items, np.random.default_rng(1), size=32)
    parts = tok.loss(batch)
    assert torch.isfinite(parts["loss"])
    torch.optim.SGD(tok.main_parameters(), lr=1e-3).zero_grad()
    parts["loss"].backward()
    enc = tok.encode_all()
    assert enc.codes.shape == (tok.n_items, 2, len(signals))
    assert enc.zq.shape == (tok.n_items, 16 * len(signals))
    assert enc.last_distances.shape == (tok.n_items, len(signals), 32)
    if not tok.use_mim:
        assert tok.mim_parameters() == [] and float(parts["mim"]) == 0.0
    if not tok.use_rec:
        assert float(parts["rec"]) == 0.0 and not hasattr(tok, "seq_encoder")
    expected_sets = 1 if overrides.get("shared_codebook", True) else len(signals)
    assert tok.quantizer.n_codebook_sets == expected_sets


def test_bad_signal_configs_are_rejected(ml100k):
    with pytest.raises(ValueError, match="use_rec=False drops it"):
        small_bbq(ml100k, use_rec=False, signals=["id", "text"])
    with pytest.raises(ValueError, match="subset"):
        small_bbq(ml100k, signals=["id", "image"])


def test_items_lacking_a_modality_are_left_out_of_its_reconstruction(ml100k):
    torch.manual_seed(0)
    tok = small_bbq(ml100k, signals=["genre"], use_rec=False, use_mim=False)
    mask = ml100k["masks"]["genre"].clone()
    no_genre = torch.arange(0, 40, 2)
    mask[no_genre] = False  # pretend these movies have no genre row
    tok.set_features(ml100k["features"], {"genre": mask})
    assert float(tok.loss({"items": no_genre})["recon"]) == 0.0
    assert float(tok.loss({"items": torch.arange(10)})["recon"]) > 0.0


def test_tiger_and_letter_train_and_give_unique_ids(ml100k):
    n = len(ml100k["tokens"])
    # a real collaborative table for LETTER: truncated SVD of the user-item matrix
    ui = torch.zeros(len(ml100k["sequences"]), n)
    for u, seq in enumerate(ml100k["sequences"]):
        ui[u, torch.as_tensor(seq)] = 1.0
    torch.manual_seed(0)
    _, _, v = torch.svd_lowrank(ui, q=16)
    cf = v  # [n_items, 16]
    feats = {"text": ml100k["features"]["text"]}
    for cls, extra in [(RQVAETokenizer, {}), (LETTERTokenizer, {"cf_embeddings": cf})]:
        seed_everything(0)
        tok = cls(n_items=n, input_dim=TEXT_DIM, code_dim=8, n_levels=3, codebook_size=64,
                  hidden_dims=(32,), kmeans_iters=5, **extra)
        assert tok.mim_parameters() == []
        result = TokenizerTrainer(tok, epochs=3, batch_size=256, lr=3e-3, seed=0).fit(feats)
        assert result.codes.shape == (n, 3, 1) and result.zq.shape == (n, 8)
        assert result.raw_collisions > 0  # content-only IDs collide on ml-100k; make_unique fixed them
        assert np.array_equal(result.raw_codes[:, :-1], result.codes[:, :-1])  # only the last level moved
        moved = (result.raw_codes != result.codes).any(axis=(1, 2)).sum()
        assert 0 < moved < result.raw_collisions  # one item per colliding group keeps its ID
        assert result.collisions == 0 and result.raw_collisions >= 0
        assert result.valid_metric == "neg_recon_rq" and np.isfinite(result.best_valid)
        assert result.history[-1]["loss"] < result.history[0]["loss"]
        if cls is LETTERTokenizer:
            assert {"cf_align", "diversity"} <= set(result.history[0])


def test_ids_too_short_for_the_catalogue_raise_with_the_table5_count(ml100k):
    # L=1 with 4 codes cannot hold 1,349 items: the error keeps the raw collision count
    n = len(ml100k["tokens"])
    seed_everything(0)
    tok = RQVAETokenizer(n_items=n, input_dim=TEXT_DIM, code_dim=8, n_levels=1, codebook_size=4,
                         hidden_dims=(32,), kmeans_iters=2)
    with pytest.raises(CollisionError, match=r"use a larger codebook_size.*items collided") as err:
        TokenizerTrainer(tok, epochs=1, batch_size=256, steps_per_epoch=2, seed=0).fit(
            {"text": ml100k["features"]["text"]})
    assert err.value.n_items == n
    assert n - 4 <= err.value.raw_collisions <= n  # at most 4 distinct IDs among n items


def test_letter_rejects_misaligned_cf_table():
    with pytest.raises(ValueError, match="cf_embeddings must be"):
        LETTERTokenizer(n_items=10, input_dim=4, cf_embeddings=torch.zeros(9, 3))


def train_bbq(data, tmp_path=None, epochs=2, **trainer_kwargs):
    seed_everything(7)
    tok = small_bbq(data)
    trainer = TokenizerTrainer(
        tok, epochs=epochs, batch_size=128, steps_per_epoch=6, lr=3e-3, seed=7,
        checkpoint_path=(tmp_path / "stage1.pth") if tmp_path else None, **trainer_kwargs,
    )
    return tok, trainer.fit(data["features"], data["masks"], data["sequences"])


def test_trainer_same_seed_same_ids_and_checkpoint(ml100k, tmp_path):
    tok, first = train_bbq(ml100k, tmp_path)
    _, second = train_bbq(ml100k)
    assert np.array_equal(first.codes, second.codes)
    assert np.allclose(first.zq, second.zq)
    n = len(ml100k["tokens"])
    assert first.codes.shape == (n, 2, 3) and first.zq.shape == (n, 48)
    assert first.collisions == 0 and first.valid_metric == "recall@10"
    assert 0.0 <= first.best_valid <= 1.0 and first.epochs_run == 2
    assert set(first.code_usage) == {"shared"} and len(first.code_usage["shared"]) == 2
    # the checkpoint is weights only and restores the best state
    meta = load_tokenizer_checkpoint(tmp_path / "stage1.pth", tok)
    assert meta["signals"] == ["id", "text", "genre"] and meta["metric"] == "recall@10"


def test_nan_loss_names_the_step_and_keeps_the_checkpoint(ml100k, tmp_path, monkeypatch):
    seed_everything(7)
    tok = small_bbq(ml100k)
    real_loss, calls = tok.loss, {"n": 0}

    def poisoned(batch):
        calls["n"] += 1
        parts = real_loss(batch)
        if calls["n"] == 9:  # epoch 2, step 2 (6 steps per epoch)
            parts["loss"] = parts["loss"] * float("nan")
        return parts

    monkeypatch.setattr(tok, "loss", poisoned)
    path = tmp_path / "stage1.pth"
    trainer = TokenizerTrainer(tok, epochs=3, batch_size=64, steps_per_epoch=6, checkpoint_path=path, seed=7)
    with pytest.raises(FloatingPointError, match=r"epoch 2 step 2.*stage1\.pth"):
        trainer.fit(ml100k["features"], ml100k["masks"], ml100k["sequences"])
    blob = torch.load(path, weights_only=True)
    assert blob["meta"]["epoch"] == 1


def test_collapse_is_reported(ml100k, caplog):
    """A real collapse warns; a healthy run at the same threshold does not."""
    n = len(ml100k["tokens"])
    same = {"text": torch.ones(n, TEXT_DIM)}  # every item alike: one code per level is all there is
    seed_everything(0)
    tok = RQVAETokenizer(n_items=n, input_dim=TEXT_DIM, code_dim=8, n_levels=1, codebook_size=16,
                         hidden_dims=(16,), kmeans_iters=2)
    with caplog.at_level(logging.WARNING):
        with pytest.raises(CollisionError):  # identical items cannot get distinct IDs either
            TokenizerTrainer(tok, epochs=1, batch_size=256, seed=0, collapse_threshold=0.1).fit(same)
    assert "codebook collapse" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _, result = train_bbq(ml100k, epochs=1, collapse_threshold=0.1)
    assert "codebook collapse" not in caplog.text
    assert all(0.1 <= u <= 1 for u in result.code_usage["shared"])
