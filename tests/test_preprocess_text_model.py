"""The real default text model (packaged all-MiniLM-L6-v2, offline) on a handful of titles."""

from __future__ import annotations

import numpy as np

from recbole_bbqrec.preprocess.text_encoders import default_text_model, embed_texts_cached, make_text_encoder


def test_minilm_embeds_offline_and_similar_titles_are_closer(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = [
        "OPI Nail Lacquer, Red, 0.5 Fluid Ounce",
        "Essie Nail Polish, Ballet Slippers Pink",
        "Cordless Electric Drill with 2 Batteries",
        "Hydrating Face Moisturizer Cream with SPF 30",
    ]
    encoder = make_text_encoder(None)
    assert str(encoder.path) == str(default_text_model())
    emb, from_cache = embed_texts_cached(encoder, texts, tmp_path, show_progress=False)
    assert not from_cache and emb.shape == (4, 384) and emb.dtype == np.float32
    assert np.isfinite(emb).all()
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims = unit @ unit.T
    assert sims[0, 1] > sims[0, 2] + 0.1 and sims[0, 1] > sims[1, 2] + 0.1
    again, from_cache = embed_texts_cached(encoder, texts, tmp_path, show_progress=False)
    assert from_cache
    np.testing.assert_array_equal(again, emb)
