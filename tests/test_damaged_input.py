"""Damaged input is reported, not patched over (issue 11, section 4): undecodable bytes,
metadata that covers too little of the catalogue, and duplicate ASINs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from recbole_bbqrec.preprocess import MalformedInputError, preprocess_dataset
from recbole_bbqrec.preprocess.errors import LowCoverageError

N_USERS, N_ITEMS = 40, 8


def write_toy(raw: Path, bad_user_lines: int = 0, meta_items: int = N_ITEMS,
              duplicate_meta: bool = False) -> list[str]:
    """Sequence form: every user saw every item (5-core keeps all); ``bad_user_lines`` extra
    users whose ID holds a byte that is not UTF-8; metadata for the first ``meta_items``."""
    raw.mkdir(parents=True, exist_ok=True)
    items = [f"I{i}" for i in range(N_ITEMS)]
    lines = [f"U{u} {' '.join(items)}\n".encode() for u in range(N_USERS)]
    lines += [b"U\xff" + str(k).encode() + b" " + " ".join(items).encode() + b"\n"
              for k in range(bad_user_lines)]
    (raw / "Toy.seq.txt").write_bytes(b"".join(lines))
    meta = [{"asin": i, "title": f"Title {i}", "categories": [["Cat", f"Leaf {i}"]]}
            for i in items[:meta_items]]
    if duplicate_meta:
        meta += [{"asin": "I0", "title": "A second record for I0"},
                 {"asin": "I0", "title": "A third record for I0"}]
    (raw / "Toy.meta.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    return items


def build(tmp_path, **kwargs) -> dict:
    return preprocess_dataset("Toy", str(tmp_path / "out"), str(tmp_path / "raw"),
                              text_model="hash:8", show_progress=False, **kwargs)


def test_undecodable_lines_are_counted_with_their_numbers_not_patched(tmp_path, caplog):
    write_toy(tmp_path / "raw", bad_user_lines=1)  # 1 of 41 lines: under a 5% tolerance
    with caplog.at_level(logging.WARNING):
        stats = build(tmp_path, max_bad_fraction=0.05)
    assert stats["dropped_malformed_lines"] == 1 and stats["users"] == N_USERS
    seq_file = str(tmp_path / "raw" / "Toy.seq.txt")
    assert stats["malformed_line_numbers"] == {seq_file: [N_USERS + 1]}
    inter = pd.read_csv(tmp_path / "out" / "Toy" / "Toy.inter", sep="\t", dtype=str)
    assert not inter["user_id:token"].str.contains("\ufffd").any()  # no U+FFFD user
    assert f"lines {N_USERS + 1})" in caplog.text and "Toy.seq.txt: 1 of 41" in caplog.text


def test_too_many_undecodable_lines_stop_the_run_naming_file_and_line(tmp_path):
    write_toy(tmp_path / "raw", bad_user_lines=3)
    with pytest.raises(MalformedInputError, match=rf"Toy.seq.txt: 3 of 43 lines .*first bad "
                                                  rf"line {N_USERS + 1}: .*undecodable bytes"):
        build(tmp_path)  # default max_bad_fraction 1%
    assert not (tmp_path / "out" / "Toy" / "Toy.inter").exists()


def test_metadata_cut_in_half_stops_with_the_numbers(tmp_path):
    write_toy(tmp_path / "raw", meta_items=N_ITEMS // 2)
    with pytest.raises(LowCoverageError, match=r"only 4 of 8 items \(50.0%\) have metadata, "
                                               r"below min_meta_coverage 80%"):
        build(tmp_path)
    assert not (tmp_path / "out" / "Toy" / "Toy.inter").exists()
    stats = build(tmp_path, min_meta_coverage=0.5)  # explicitly accepted: counted in the stats
    assert stats["metadata_coverage"] == 0.5 and stats["items_without_metadata"] == 4


def test_duplicate_asins_warn_with_the_count_and_the_rule(tmp_path, caplog):
    write_toy(tmp_path / "raw", duplicate_meta=True)
    with caplog.at_level(logging.WARNING):
        stats = build(tmp_path)
    assert stats["duplicate_meta_records"] == 2
    assert "1 item(s) have more than one metadata record (2 extra records" in caplog.text
    assert "the first record of each is used" in caplog.text
