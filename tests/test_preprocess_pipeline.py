"""Pipeline behaviour on the sequence form, ml-100k and the real Beauty data: 5-core fixed
point, atomic outputs, readiness, the embedding cache, the CLI and RecBole loading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recbole_bbqrec.data.item_features import align_to_recbole, load_item_features
from recbole_bbqrec.preprocess import dataset_ready, preprocess_dataset
from recbole_bbqrec.preprocess import text_encoders as features_module
from recbole_bbqrec.preprocess import writer
from recbole_bbqrec.preprocess.__main__ import main as cli_main
from recbole_bbqrec.atomic_io import atomic_path
from recbole_bbqrec.preprocess.kcore import kcore_filter

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "amazon2014"


def write_sequence_form(folder: Path, name: str, sequences: dict[str, list[str]], meta: dict[str, dict]):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.seq.txt").write_text("".join(f"{u} {' '.join(s)}\n" for u, s in sequences.items()))
    (folder / f"{name}.meta.jsonl").write_text("".join(json.dumps({"asin": a, **m}) + "\n" for a, m in meta.items()))


def grid_sequences(n_users=6, n_items=6):
    items = [f"I{i}" for i in range(n_items)]
    return {f"U{u}": items[u % 2:] + items[:u % 2] for u in range(n_users)}, items


def test_kcore_needs_several_passes_to_reach_fixed_point():
    # U5 has 5 items, but one of them (I5) has only 4 users: the first pass drops I5 (and
    # its one-item users U6-U8), which pushes U5 down to 4 -- only a second pass sees that.
    rows = [(f"U{u}", f"I{i}") for u in range(5) for i in range(5)]  # dense 5x5 core
    rows += [("U5", "I5"), ("U5", "I4"), ("U5", "I3"), ("U5", "I2"), ("U5", "I1")]
    rows += [("U6", "I5"), ("U7", "I5"), ("U8", "I5")]
    frame = pd.DataFrame(rows, columns=["user", "item"])
    filtered, passes = kcore_filter(frame, 5)
    assert passes >= 3
    assert set(filtered["user"]) == {f"U{u}" for u in range(5)}
    assert set(filtered["item"]) == {f"I{i}" for i in range(5)} and len(filtered) == 25
    users = filtered["user"].value_counts()
    items = filtered["item"].value_counts()
    assert users.min() >= 5 and items.min() >= 5
    single = frame[(frame["user"].map(frame["user"].value_counts()) >= 5)
                   & (frame["item"].map(frame["item"].value_counts()) >= 5)]
    assert len(single) > len(filtered)  # a single pass leaves violators behind


def test_sequence_form_positions_are_timestamps(tmp_path):
    seqs, items = grid_sequences()
    seqs["U9"] = ["I0", "I1"]  # too short: removed by 5-core
    meta = {i: {"title": f"Title {i}", "categories": [["Cat", f"Leaf {i}"]]} for i in items}
    write_sequence_form(tmp_path / "raw", "Toy", seqs, meta)
    stats = preprocess_dataset("Toy", str(tmp_path / "out"), str(tmp_path / "raw"), text_model="hash:8", show_progress=False)
    assert (stats["users"], stats["items"], stats["interactions"]) == (6, 6, 36)
    inter = pd.read_csv(tmp_path / "out" / "Toy" / "Toy.inter", sep="\t", dtype=str)
    u1 = inter[inter["user_id:token"] == "U1"]
    assert u1["item_id:token"].tolist() == seqs["U1"] and u1["timestamp:float"].tolist() == [str(i) for i in range(6)]
    item_lines = (tmp_path / "out" / "Toy" / "Toy.item").read_text().splitlines()
    assert item_lines[1] == "I0\tLeaf_I0"


def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "x.npy"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []

    seqs, items = grid_sequences()
    write_sequence_form(tmp_path / "raw", "Toy", seqs, {i: {"title": i} for i in items})
    out = tmp_path / "out"
    preprocess_dataset("Toy", str(out), str(tmp_path / "raw"), text_model="hash:8", show_progress=False)
    assert dataset_ready("Toy", str(out))

    real_write_lines = writer.atomic_write_lines

    def dies_while_writing_inter(target, lines):
        if str(target).endswith(".inter"):
            with atomic_path(target) as tmp:
                tmp.write_text("user_id:token\titem_id:token\n U0\t")  # half a file, then a crash
                raise KeyboardInterrupt
        real_write_lines(target, lines)

    (out / "Toy" / "Toy.inter").unlink()  # so only a half-written file could create it
    monkeypatch.setattr(writer, "atomic_write_lines", dies_while_writing_inter)
    with pytest.raises(KeyboardInterrupt):
        preprocess_dataset("Toy", str(out), str(tmp_path / "raw"), text_model="hash:8", show_progress=False)
    folder = out / "Toy"
    assert not (folder / "Toy.inter").exists() and not (folder / "Toy.stats.json").exists()
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert not dataset_ready("Toy", str(out))


def test_dataset_ready_detects_mismatch(tmp_path):
    seqs, items = grid_sequences()
    write_sequence_form(tmp_path / "raw", "Toy", seqs, {i: {"title": i} for i in items})
    out = tmp_path / "out"
    assert not dataset_ready("Toy", str(out))
    preprocess_dataset("Toy", str(out), str(tmp_path / "raw"), text_model="hash:8", show_progress=False)
    assert dataset_ready("Toy", str(out))
    np.save(out / "Toy" / "Toy.text.npy", np.zeros((5, 8), dtype=np.float32))
    assert not dataset_ready("Toy", str(out))


def test_embedding_cache_reused_and_keyed_by_texts(tmp_path, monkeypatch):
    seqs, items = grid_sequences()
    raw = tmp_path / "raw"
    write_sequence_form(raw, "Toy", seqs, {i: {"title": f"item {i}"} for i in items})
    out = tmp_path / "out"
    first = preprocess_dataset("Toy", str(out), str(raw), text_model="hash:8", show_progress=False)
    cached = list((out / "Toy" / ".cache").glob("emb-*.npy"))
    assert len(cached) == 1
    before = np.load(out / "Toy" / "Toy.text.npy")

    def no_encoding(self, texts, show_progress=False):
        raise AssertionError("should have come from the cache")

    monkeypatch.setattr(features_module.HashingTextEncoder, "encode", no_encoding)
    second = preprocess_dataset("Toy", str(out), str(raw), text_model="hash:8", show_progress=False)
    np.testing.assert_array_equal(np.load(out / "Toy" / "Toy.text.npy"), before)
    assert first["items"] == second["items"]

    write_sequence_form(raw, "Toy", seqs, {i: {"title": f"changed {i}"} for i in items})
    with pytest.raises(AssertionError, match="cache"):  # new texts -> new key -> re-encode
        preprocess_dataset("Toy", str(out), str(raw), text_model="hash:8", show_progress=False)


def test_cli_prints_stats_as_last_line(tmp_path, capsys):
    seqs, items = grid_sequences()
    write_sequence_form(tmp_path / "raw", "Toy", seqs, {i: {"title": i} for i in items[:-1]})
    code = cli_main(["--dataset", "Toy", "--raw_dir", str(tmp_path / "raw"), "--out_dir", str(tmp_path / "out"),
                     "--text_model", "hash:8", "--no_progress"])
    assert code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    stats = json.loads(last)
    assert stats == json.loads((tmp_path / "out" / "Toy" / "Toy.stats.json").read_text())
    assert stats["items_without_metadata"] == 1 and stats["coverage"]["text"] == pytest.approx(5 / 6, abs=1e-6)
    for key in ("users", "items", "interactions", "coverage", "dropped_malformed_lines", "text_model"):
        assert key in stats

    assert cli_main(["--dataset", "Nope", "--raw_dir", str(tmp_path / "none"), "--text_model", "hash:8",
                     "--out_dir", str(tmp_path / "out")]) == 2  # never the checkout's dataset/
    assert "Nope.seq.txt" in capsys.readouterr().err


def test_ml100k_from_recbole_wheel(tmp_path):
    from recbole_bbqrec.preprocess.movielens import read_ml100k

    raw, meta, _ = read_ml100k()
    assert (raw["user"].nunique(), raw["item"].nunique(), len(raw)) == (943, 1682, 100000)
    assert len(meta) == 1682 and meta["1"].text().startswith("Toy Story (1995)")
    stats = preprocess_dataset("ml-100k", str(tmp_path), text_model="hash:16", show_progress=False)
    # 5-core is not a no-op on ml-100k: 333 movies have < 5 ratings (checked independently).
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1349, 99287)
    assert stats["coverage"] == {"text": 1.0}
    keep_all = preprocess_dataset("ml-100k", str(tmp_path / "all"), text_model="hash:16", show_progress=False, kcore=0)
    assert (keep_all["users"], keep_all["items"], keep_all["interactions"]) == (943, 1682, 100000)


def test_recbole_loads_outputs_and_alignment(tmp_path):
    from recbole.config import Config
    from recbole.data import create_dataset

    seqs, items = grid_sequences(n_users=7)
    meta = {i: {"title": f"item {i}", "categories": [["Root", f"Leaf {i}"], ["Root", "Shared Leaf"]]} for i in items}
    write_sequence_form(tmp_path / "raw", "Toy", seqs, meta)
    out = tmp_path / "out"
    preprocess_dataset("Toy", str(out), str(tmp_path / "raw"), text_model="hash:8", show_progress=False)
    config = Config(model="SASRec", dataset="Toy", config_dict={
        "data_path": str(out), "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "categories"]},
        "show_progress": False, "train_neg_sample_args": None, "loss_type": "CE"})
    dataset = create_dataset(config)
    assert dataset.user_num == 8 and dataset.item_num == 7 and dataset.inter_num == 42  # +[PAD]
    id_tokens = dataset.field2id_token["item_id"]
    cats = dataset.field2id_token["categories"]
    assert {"Leaf_I0", "Shared_Leaf"} <= set(cats.tolist())

    feats = load_item_features(str(out / "Toy"), "Toy", "text", expected_dim=8)
    matrix, mask = align_to_recbole(feats, id_tokens)
    assert matrix.shape == (7, 8) and not mask[0] and not matrix[0].any() and mask[1:].all()
    for rid, token in enumerate(id_tokens[1:], start=1):
        np.testing.assert_array_equal(matrix[rid], feats.matrix[feats.item_tokens.index(token)])


@pytest.mark.skipif(not (SHARED / "Beauty" / "Beauty.seq.txt").is_file(), reason="real Beauty data not present")
def test_real_beauty_counts(tmp_path):
    stats = preprocess_dataset("Beauty", str(tmp_path), str(SHARED / "Beauty"), text_model="hash:32", show_progress=False)
    assert (stats["users"], stats["items"], stats["interactions"]) == (22363, 12101, 198502)
    assert stats["coverage"] == {"text": 1.0, "category": 1.0}
    assert stats["items_without_metadata"] == 0 and stats["dropped_malformed_lines"] == 0
    inter = pd.read_csv(tmp_path / "Beauty" / "Beauty.inter", sep="\t", dtype=str)
    first = (SHARED / "Beauty" / "Beauty.seq.txt").read_text().split("\n", 1)[0].split()
    user_rows = inter[inter["user_id:token"] == first[0]]
    assert user_rows["item_id:token"].tolist() == first[1:]
