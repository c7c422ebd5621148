"""The raw McAuley formats end to end: reviews JSON(.gz) / ratings CSV, Python-literal and
JSON metadata, the binary image features, and the bad-input paths."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from recbole_bbqrec.preprocess import (
    FeatureWidthError,
    MalformedInputError,
    RawDataNotFoundError,
    dataset_ready,
    preprocess_dataset,
)
from recbole_bbqrec.preprocess.image_features import write_image_features

USERS = [f"A{u}USER" for u in range(6)]
ITEMS = [f"B00000000{i}" for i in range(6)]  # 10-character ASINs
TITLES = ["Red Nail Polish", "Pink Nail Polish", "Face Cream", "Eye Shadow Palette",
          "Hair Dryer", "Lip Balm"]


def grid_reviews():
    """Every user reviews every item: a 6x6 grid survives 5-core; item 0 is reviewed last."""
    rows = []
    for u, user in enumerate(USERS):
        for i, item in enumerate(ITEMS):
            when = 1_400_000_000 + 86_400 * ((i - 1) % 6) + u
            rows.append({"reviewerID": user, "asin": item, "unixReviewTime": when,
                         "overall": 5.0, "reviewText": "fine", "reviewTime": "05 13, 2014"})
    # A user and an item with too few interactions, which 5-core must drop.
    rows += [{"reviewerID": "ASPARSE", "asin": ITEMS[0], "unixReviewTime": 1}]
    rows += [{"reviewerID": USERS[0], "asin": "B0SPARSE00", "unixReviewTime": 2}]
    return rows


def meta_records(skip_last: bool = True):
    records = []
    for i, (item, title) in enumerate(zip(ITEMS, TITLES)):
        if skip_last and i == len(ITEMS) - 1:
            continue  # this item has reviews but no metadata
        records.append({"asin": item, "title": title, "brand": "Acme",
                        "description": f"A very good {title.lower()} &amp; more.",
                        "categories": [["Beauty", "Makeup", "Nail Polish" if i < 2 else "Other Things"]],
                        "price": 3.5, "related": {"also_bought": ["X"]}})
    return records


def write_reviews_gz(path, rows, bad_lines=()):
    lines = [json.dumps(r) for r in rows]
    for at, text in bad_lines:
        lines.insert(at, text)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def write_literal_meta_gz(path, records, bad_lines=()):
    lines = [repr(r) for r in records]  # McAuley's original dump: Python dict literals
    for at, text in bad_lines:
        lines.insert(at, text)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


@pytest.fixture
def raw_beauty(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_reviews_gz(raw / "reviews_Beauty_5.json.gz", grid_reviews())
    write_literal_meta_gz(raw / "meta_Beauty.json.gz", meta_records())
    assert "'asin'" in gzip.open(raw / "meta_Beauty.json.gz", "rt").readline()
    return raw


def read_table(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[0], [line.split("\t") for line in lines[1:]]


def test_reviews_gz_and_literal_meta(raw_beauty, tmp_path):
    out = tmp_path / "out"
    stats = preprocess_dataset("Beauty", str(out), str(raw_beauty), text_model="hash:32", show_progress=False)
    assert (stats["users"], stats["items"], stats["interactions"]) == (6, 6, 36)
    assert stats["raw_interactions"] == 38 and stats["kcore_passes"] == 2
    assert stats["items_without_metadata"] == 1 and stats["dropped_malformed_lines"] == 0
    assert stats["coverage"] == {"text": pytest.approx(5 / 6, abs=1e-6), "category": pytest.approx(5 / 6, abs=1e-6)}
    assert dataset_ready("Beauty", str(out))

    header, rows = read_table(out / "Beauty" / "Beauty.inter")
    assert header == "user_id:token\titem_id:token\ttimestamp:float"
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)
    first_user = [r for r in rows if r[0] == USERS[0]]
    assert [r[1] for r in first_user] == ITEMS[1:] + ITEMS[:1]  # chronological, not file order
    assert [float(r[2]) for r in first_user] == sorted(float(r[2]) for r in first_user)

    folder = out / "Beauty"
    ids = (folder / "Beauty.item_ids.txt").read_text().splitlines()
    assert ids == sorted(ITEMS)
    text, mask = np.load(folder / "Beauty.text.npy"), np.load(folder / "Beauty.text.mask.npy")
    assert text.dtype == np.float32 and text.shape == (6, 32) and mask.dtype == np.bool_
    missing_row = ids.index(ITEMS[-1])
    assert not mask[missing_row] and not text[missing_row].any()
    assert mask.sum() == 5 and np.all(np.linalg.norm(text[mask], axis=1) > 0.99)
    # The two nail polishes share words, so their hashed texts are the closest pair.
    sims = text @ text.T
    assert sims[0, 1] > max(sims[0, 2], sims[0, 3], sims[0, 4])

    header, item_rows = read_table(folder / "Beauty.item")
    assert header == "item_id:token\tcategories:token_seq"
    assert item_rows[0] == [ITEMS[0], "Nail_Polish"] and item_rows[-1] == [ITEMS[-1], ""]


def test_ratings_csv_and_json_meta(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    lines = [f"{r['reviewerID']},{r['asin']},5.0,{r['unixReviewTime']}" for r in grid_reviews()]
    (raw / "ratings_Beauty.csv").write_text("\n".join(lines) + "\n")
    (raw / "meta_Beauty.json").write_text("\n".join(json.dumps(m) for m in meta_records(False)) + "\n")
    stats = preprocess_dataset("Beauty", str(tmp_path / "out"), str(raw), text_model="hash:16", show_progress=False)
    assert stats["source_format"] == "ratings"
    assert (stats["users"], stats["items"], stats["interactions"]) == (6, 6, 36)
    assert stats["coverage"] == {"text": 1.0, "category": 1.0} and stats["items_without_metadata"] == 0


def test_image_features_binary(raw_beauty, tmp_path):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(4, 4096)).astype(np.float32)
    asins = [ITEMS[2], "B0NOTINSET", ITEMS[0], ITEMS[4]]
    write_image_features(raw_beauty / "image_features_Beauty.b", asins, feats)
    assert (raw_beauty / "image_features_Beauty.b").stat().st_size == 4 * (10 + 4 * 4096)
    out = tmp_path / "out"
    stats = preprocess_dataset("Beauty", str(out), str(raw_beauty), text_model="hash:16", show_progress=False)
    assert stats["coverage"]["image"] == 0.5 and stats["feature_dims"]["image"] == 4096
    folder = out / "Beauty"
    ids = (folder / "Beauty.item_ids.txt").read_text().splitlines()
    image, mask = np.load(folder / "Beauty.image.npy"), np.load(folder / "Beauty.image.mask.npy")
    assert image.shape == (6, 4096) and mask.tolist() == [True, False, True, False, True, False]
    np.testing.assert_array_equal(image[ids.index(ITEMS[2])], feats[0])
    np.testing.assert_array_equal(image[ids.index(ITEMS[4])], feats[3])
    assert not image[ids.index(ITEMS[1])].any()


@pytest.mark.parametrize("true_dim, image_dim, problem", [
    (4000, None, "not a multiple"),      # a file of 4000-float records read as Amazon's 4096
    (4096, 2048, "not a multiple"),      # explicit --image_dim that the file contradicts
    (4096, 583, "does not start with an ASIN"),  # widths divide the size, ASINs misplaced
])
def test_image_width_mismatch_names_both_widths(raw_beauty, tmp_path, true_dim, image_dim, problem):
    n = 2 if image_dim == 583 else 4  # 2 x 16394 bytes = 14 x (10 + 4 * 583)
    feats = np.random.default_rng(1).normal(size=(n, true_dim)).astype(np.float32)
    write_image_features(raw_beauty / "image_features_Beauty.b", ITEMS[:n], feats)
    with pytest.raises(FeatureWidthError) as err:
        preprocess_dataset("Beauty", str(tmp_path / "out"), str(raw_beauty), text_model="hash:8",
                           show_progress=False, image_dim=image_dim)
    message = str(err.value)
    assert problem in message
    assert f"expected {image_dim or 4096} floats" in message and f"looks like {true_dim} floats" in message


def test_malformed_lines_skipped_then_abort_past_threshold(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    rows = grid_reviews()  # 38 good lines; one bad one is 2.6%
    write_reviews_gz(raw / "reviews_Beauty_5.json.gz", rows, bad_lines=[(3, '{"reviewerID": "A0USER", "asin": ')])
    write_literal_meta_gz(raw / "meta_Beauty.json.gz", meta_records(), bad_lines=[(1, "{'asin': 'B000000001', 'title': }")])
    with pytest.raises(MalformedInputError) as err:
        preprocess_dataset("Beauty", str(tmp_path / "out"), str(raw), text_model="hash:8", show_progress=False)
    message = str(err.value)
    assert "reviews_Beauty_5.json.gz" in message and "1 of 39 lines" in message and "first bad line 4" in message
    assert not (tmp_path / "out" / "Beauty" / "Beauty.inter").exists()

    stats = preprocess_dataset("Beauty", str(tmp_path / "out"), str(raw), text_model="hash:8",
                               show_progress=False, max_bad_fraction=0.2)
    assert stats["dropped_malformed_lines"] == 2 and stats["interactions"] == 36
    assert stats["items_without_metadata"] == 1


def test_never_evaluates_code_in_meta(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_reviews_gz(raw / "reviews_Beauty_5.json.gz", grid_reviews())
    marker = tmp_path / "pwned"
    evil = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    write_literal_meta_gz(raw / "meta_Beauty.json.gz", meta_records(), bad_lines=[(0, evil)])
    stats = preprocess_dataset("Beauty", str(tmp_path / "out"), str(raw), text_model="hash:8",
                               show_progress=False, max_bad_fraction=0.5)
    assert not marker.exists() and stats["dropped_malformed_lines"] == 1


def test_missing_raw_files_name_expected_paths(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RawDataNotFoundError) as err:
        preprocess_dataset("Beauty", str(tmp_path / "out"), str(empty), text_model="hash:8")
    assert isinstance(err.value, FileNotFoundError)
    message = str(err.value)
    for expected in ("reviews_Beauty_5.json.gz", "meta_Beauty.json.gz", "Beauty.seq.txt", "Beauty.meta.jsonl"):
        assert str(empty / expected) in message
    assert "--raw_dir" not in message  # it was given

    with pytest.raises(RawDataNotFoundError, match="does not exist"):
        preprocess_dataset("Beauty", str(tmp_path / "out"), str(tmp_path / "nowhere"), text_model="hash:8")

    write_reviews_gz(empty / "reviews_Beauty_5.json.gz", grid_reviews())
    with pytest.raises(RawDataNotFoundError, match="no metadata file"):
        preprocess_dataset("Beauty", str(tmp_path / "out"), str(empty), text_model="hash:8")


def test_sports_alias_finds_mcauley_file_names(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_reviews_gz(raw / "reviews_Sports_and_Outdoors_5.json.gz", grid_reviews())
    (raw / "meta_Sports_and_Outdoors.json").write_text(
        "\n".join(json.dumps({"asin": a, "title": t}) for a, t in zip(ITEMS, TITLES)) + "\n")
    stats = preprocess_dataset("Sports", str(tmp_path / "out"), str(raw), text_model="hash:8", show_progress=False)
    assert stats["items"] == 6 and stats["coverage"] == {"text": 1.0}  # no categories -> no category modality
    header, _ = read_table(tmp_path / "out" / "Sports" / "Sports.item")
    assert header == "item_id:token"
