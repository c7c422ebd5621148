import os

import numpy as np
import pytest

from recbole_bbqrec.layout import stage1_files
from recbole_bbqrec.tokenizers.semantic_ids import (
    count_collisions,
    fingerprint_array,
    load_zq,
    make_unique,
    read_sid_file,
    save_zq,
    stage1_hash,
    write_sid_file,
)


def random_case(n=200, levels=2, signals=2, n_codes=16, seed=0):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 3, size=(n, levels, signals))  # few codes used: many collisions
    distances = rng.random((n, signals, n_codes)).astype(np.float32)
    return codes, distances


def test_count_collisions_counts_items_in_shared_ids():
    codes = np.array([[[1, 2]], [[1, 2]], [[1, 3]], [[4, 4]], [[4, 4]], [[4, 4]]])  # [6, L=1, S=2]
    assert count_collisions(codes) == 5
    assert count_collisions(codes[[0, 2, 3]]) == 0
    assert count_collisions(np.zeros((0, 2, 1), dtype=np.int64)) == 0
    with pytest.raises(ValueError, match=r"\[n_items, L, S\]"):
        count_collisions(np.zeros((3, 2)))


def test_make_unique_removes_collisions_and_changes_only_the_last_level():
    codes, distances = random_case()
    assert count_collisions(codes) > 50
    fixed = make_unique(codes, distances)
    assert count_collisions(fixed) == 0
    assert np.array_equal(fixed[:, :-1], codes[:, :-1])
    changed = (fixed != codes).any(axis=(1, 2))
    # exactly one signal's last code moves per changed item
    assert ((fixed != codes).sum(axis=(1, 2))[changed] == 1).all()
    # each original ID is still held by exactly one item (the best-fitting one keeps it)
    groups = {}
    for i, row in enumerate(codes.reshape(len(codes), -1)):
        groups.setdefault(tuple(row), []).append(i)
    for members in groups.values():
        assert sum(not changed[i] for i in members) == 1
    assert not changed[[m[0] for m in groups.values() if len(m) == 1]].any()
    assert np.array_equal(codes, random_case()[0])  # input untouched


def test_make_unique_picks_the_cheapest_free_code():
    codes = np.array([[[0, 1]], [[0, 1]]])  # two items, L=1, S=2, same ID
    distances = np.full((2, 2, 4), 10.0, dtype=np.float32)
    distances[:, 0, 0] = 0.0  # current codes are the closest ones
    distances[:, 1, 1] = 0.0
    distances[0, 0, 0] = 0.5  # item 1 fits better, so item 1 keeps [0, 1]
    distances[0, 1, 3] = 2.0  # item 0's cheapest move: signal 1 -> code 3
    distances[0, 0, 2] = 3.0
    fixed = make_unique(codes, distances)
    assert fixed.tolist() == [[[0, 3]], [[0, 1]]]


def test_make_unique_reports_an_exhausted_prefix():
    codes = np.zeros((4, 2, 1), dtype=np.int64)  # 4 items share prefix [0] with only 3 codes
    with pytest.raises(ValueError, match="larger codebook_size N or more levels L"):
        make_unique(codes, np.random.default_rng(0).random((4, 1, 3)))
    with pytest.raises(ValueError, match="last_distances must be"):
        make_unique(codes, np.zeros((4, 2, 3)))


def test_sid_file_round_trip_and_zq(tmp_path):
    codes, _ = random_case(n=20, levels=3, signals=3)
    tokens = [f"item{i}" for i in range(20)]
    path = tmp_path / "Beauty.abc123.sid"
    write_sid_file(path, tokens, codes, ["id", "text", "image"])
    header = path.read_text().splitlines()[0].split("\t")
    assert header[:5] == ["item_id:token", "l1_id", "l1_text", "l1_image", "l2_id"]
    read_tokens, read_codes, names = read_sid_file(path)
    assert read_tokens == tokens and names == ["id", "text", "image"]
    assert np.array_equal(read_codes, codes)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind
    zq = np.random.default_rng(0).random((20, 6)).astype(np.float32)
    zq_path = stage1_files(tmp_path, "Beauty", "abc123")["zq"]
    assert os.path.basename(zq_path) == "Beauty.abc123.zq.npy"
    save_zq(zq_path, zq)
    assert np.array_equal(load_zq(zq_path, n_items=20), zq)
    with pytest.raises(ValueError, match="expected"):
        load_zq(zq_path, n_items=21)


@pytest.mark.parametrize(
    "body, message",
    [
        ("item_id:token\tl1_id\tl1_text\nA\t1\n", ":2: 2 fields, expected 3"),
        ("item_id:token\tl1_id\tl1_text\nA\t1\tx\n", ":2: codes must be integers"),
        ("item_id:token\tl1_id\tl1_text\nA\t1\t-2\n", ":2: negative code"),
        ("item\tl1_id\nA\t1\n", "header must start with 'item_id:token'"),
        ("item_id:token\tl1_id\tl2_text\nA\t1\t2\n", "do not form|are not"),
        ("item_id:token\tl1_id\nA\t1\nA\t2\n", "duplicate item tokens"),
    ],
)
def test_read_sid_file_rejects_malformed_files(tmp_path, body, message):
    path = tmp_path / "bad.sid"
    path.write_text(body)
    with pytest.raises(ValueError, match=message):
        read_sid_file(path)


def test_write_sid_file_validates_inputs(tmp_path):
    codes = np.zeros((2, 1, 1), dtype=np.int64)
    with pytest.raises(ValueError, match="disagree"):
        write_sid_file(tmp_path / "x.sid", ["a"], codes, ["id"])
    with pytest.raises(ValueError, match="tabs"):
        write_sid_file(tmp_path / "x.sid", ["a\tb", "c"], codes, ["id"])
    with pytest.raises(FileNotFoundError, match="run stage 1"):
        read_sid_file(tmp_path / "missing.sid")


def test_stage1_hash_is_canonical_and_sensitive():
    base = {"model": "BBQ", "L": 3, "N": 256, "signals": ["id", "text"], "text": fingerprint_array(np.ones(3))}
    same = dict(reversed(list(base.items())))
    assert stage1_hash(base) == stage1_hash(same) and len(stage1_hash(base)) == 12
    assert stage1_hash({**base, "N": 128}) != stage1_hash(base)
    assert stage1_hash({**base, "N": np.int64(256)}) == stage1_hash(base)
    assert fingerprint_array(np.ones(3)) != fingerprint_array(np.ones(4))
    assert fingerprint_array(np.ones(3)) != fingerprint_array(np.ones(3, dtype=np.float32))
    with pytest.raises(TypeError, match="fingerprint"):
        stage1_hash({"features": object()})
