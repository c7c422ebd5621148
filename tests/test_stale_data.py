"""Preprocessed data is never silently stale or mixed (issue 11, section 3): provenance in
the stats, ensure_dataset stopping on changed inputs, shape checks, the writer's lock, and
the temp files of a killed writer."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from recbole_bbqrec.errors import StaleDatasetError
from recbole_bbqrec.preprocess import dataset_ready, preprocess_dataset
from recbole_bbqrec.preprocess.provenance import FORMAT_VERSION
from recbole_bbqrec.quick_start import ensure_dataset

REPO = Path(__file__).resolve().parents[1]
ITEMS = [f"I{i}" for i in range(6)]


def write_toy(raw: Path, n_users: int = 8) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "Toy.seq.txt").write_text("".join(f"U{u} {' '.join(ITEMS)}\n" for u in range(n_users)))
    (raw / "Toy.meta.jsonl").write_text("".join(json.dumps({"asin": i, "title": f"T {i}"}) + "\n"
                                                for i in ITEMS))


def config_for(tmp_path, **extra) -> dict:
    """The keys ensure_dataset reads, as a run's config would give them."""
    return {"dataset": "Toy", "data_path": str(tmp_path / "out" / "Toy"), "stage": "all",
            "raw_dir": str(tmp_path / "raw"), "text_model": "hash:8", "show_progress": False,
            "min_meta_coverage": 0.8, **extra}


@pytest.fixture
def built(tmp_path):
    write_toy(tmp_path / "raw")
    stats = preprocess_dataset("Toy", str(tmp_path / "out"), str(tmp_path / "raw"),
                               text_model="hash:8", show_progress=False)
    return tmp_path, stats


def test_stats_record_what_produced_the_files(built):
    tmp_path, stats = built
    provenance = stats["provenance"]
    assert provenance["format_version"] == FORMAT_VERSION and provenance["text_model"] == "hash:8"
    assert provenance["kcore"] == 5
    seq_file = str((tmp_path / "raw" / "Toy.seq.txt").resolve())
    recorded = provenance["raw_files"][seq_file]
    assert recorded["size"] == os.path.getsize(seq_file) and len(recorded["sha256"]) == 64


def test_ensure_dataset_stops_on_another_text_model_or_changed_raw_files(built):
    tmp_path, _stats = built
    assert ensure_dataset(config_for(tmp_path)) is None  # unchanged: reused
    assert ensure_dataset(config_for(tmp_path, text_model=None)) is None  # "as built"
    with pytest.raises(StaleDatasetError, match=r"text model 'hash:8' \(asked for 'hash:16'\)"):
        ensure_dataset(config_for(tmp_path, text_model="hash:16"))
    write_toy(tmp_path / "raw", n_users=9)  # the raw file was edited
    with pytest.raises(StaleDatasetError, match=r"Toy.seq.txt changed since.*--stage=preprocess"):
        ensure_dataset(config_for(tmp_path))
    stats = ensure_dataset(config_for(tmp_path, stage="preprocess"))  # rebuilds
    assert stats["users"] == 9 and ensure_dataset(config_for(tmp_path)) is None


def test_a_matrix_of_another_width_is_not_ready(built):
    tmp_path, _stats = built
    assert dataset_ready("Toy", tmp_path / "out")
    # What two writers with different text models used to leave: stats of one, matrix of the other.
    np.save(tmp_path / "out" / "Toy" / "Toy.text.npy", np.zeros((len(ITEMS), 16), np.float32))
    assert not dataset_ready("Toy", tmp_path / "out")


def test_a_second_writer_waits_for_the_first(tmp_path, caplog):
    write_toy(tmp_path / "raw")
    folder = tmp_path / "out" / "Toy"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from pathlib import Path\n"
         "from recbole_bbqrec.preprocess.provenance import writer_lock\n"
         "with writer_lock(Path(sys.argv[1]), 'Toy'):\n"
         "    print('locked', flush=True)\n"
         "    time.sleep(2)\n", str(folder)],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with caplog.at_level(logging.WARNING):
            preprocess_dataset("Toy", str(tmp_path / "out"), str(tmp_path / "raw"),
                               text_model="hash:8", show_progress=False)
        assert time.monotonic() - started > 1.0  # it waited for the holder
        assert "another process is writing" in caplog.text
    finally:
        holder.wait(timeout=30)
    assert dataset_ready("Toy", tmp_path / "out")


def test_temp_files_of_a_killed_writer_are_removed_on_the_next_run(tmp_path, caplog):
    write_toy(tmp_path / "raw")
    folder = tmp_path / "out" / "Toy"
    folder.mkdir(parents=True)
    # A real kill (SIGKILL) half-way through an atomic write: no cleanup code can run.
    killed = subprocess.run(
        [sys.executable, "-c", "import os, signal, sys\n"
         "from recbole_bbqrec.atomic_io import atomic_path\n"
         "with atomic_path(sys.argv[1]) as tmp:\n"
         "    tmp.write_bytes(b'half')\n"
         "    os.kill(os.getpid(), signal.SIGKILL)\n", str(folder / "Toy.inter")],
        cwd=REPO)
    assert killed.returncode == -9
    left = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and left[0].startswith(".Toy.inter.") and not (folder / "Toy.inter").exists()
    other = folder / ".Toy.0123abcd.sid.x1y2.tmp"  # another writer's (stage 1) temp file
    other.write_text("in flight")
    with caplog.at_level(logging.WARNING):
        preprocess_dataset("Toy", str(tmp_path / "out"), str(tmp_path / "raw"),
                           text_model="hash:8", show_progress=False)
    assert not (folder / left[0]).exists() and other.exists()
    assert "removed 1 temp file(s) left by an interrupted run" in caplog.text
    assert (folder / "Toy.inter").read_text().startswith("user_id:token")
