"""Stage 2 under torch.distributed on CPU: two gloo ranks on ml-100k through the CLI's --nproc.

Stage 1 trains once (rank 0), every test user is evaluated exactly once across the ranks (the
per-user metrics hold each user once and their mean is the reported metric), and only rank 0
writes: one result file, one checkpoint, in the single-process layout."""

import glob
import importlib.util
import json
import os
import shutil

import numpy as np
import pytest
import yaml

from recbole_bbqrec.launcher import free_port, wants_distributed
from recbole_bbqrec.utils import create_run_dirs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_cli():
    """run_recbole_bbqrec.py from the checkout (the repo root need not be on sys.path)."""
    spec = importlib.util.spec_from_file_location(
        "run_recbole_bbqrec", os.path.join(REPO, "run_recbole_bbqrec.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

TINY_DDP = {
    "epochs": 1, "show_progress": False, "state": "WARNING",
    "train_batch_size": 512, "eval_batch_size": 512, "torch_threads": 1,
    "codebook_size": 32, "code_dim": 16, "n_levels": 3, "tokenizer_hidden": [64],
    "tokenizer_epochs": 1, "tokenizer_steps_per_epoch": 4, "tokenizer_batch_size": 256,
    "tokenizer_valid_users": 200,
    "d_model": 32, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1, "d_ff": 64,
    "n_buckets": 10, "beam_size": 10, "valid_beam_size": 10,
}


def test_only_nproc_above_one_or_a_world_size_is_distributed():
    assert not wants_distributed(["--dataset=Beauty"])
    assert not wants_distributed(["--nproc=1"])
    assert wants_distributed(["--nproc=2"])
    assert wants_distributed(["--nproc=1", "--world_size=8", "--offset=4"])  # a node of several


def test_folders_every_rank_or_trial_makes_are_created_race_free(tmp_path, monkeypatch):
    # RecBole's ensure_dir checks then creates; two ranks racing on it killed CI on 12-02
    monkeypatch.chdir(tmp_path)
    config = {"checkpoint_dir": str(tmp_path / "saved" / "deep"), "model": "BBQRec"}
    made = create_run_dirs(config)
    assert (tmp_path / "saved" / "deep").is_dir() and (tmp_path / "log" / "BBQRec").is_dir()
    assert create_run_dirs(config) == made  # a second process finds them and does not fail


def test_two_gloo_ranks_train_once_evaluate_each_user_once_and_write_once(ml100k_root, tmp_path):
    data = tmp_path / "data"  # a copy: stage-1 artifacts of other tests must not be reused
    shutil.copytree(os.path.join(ml100k_root, "ml-100k"), data / "ml-100k",
                    ignore=shutil.ignore_patterns("*.sid", "*.zq.npy", "*.stage1.*", ".*"))
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump({**TINY_DDP, "data_path": str(data),
                                           "checkpoint_dir": str(tmp_path / "saved"),
                                           "results_dir": str(tmp_path / "results")}))
    path = load_cli().main(["--model=BBQRec", "--dataset=ml-100k", "--nproc=2",
                                    f"--port={free_port()}", "--use_gpu=False",
                                    f"--config_files={config_file}"])

    results = glob.glob(str(tmp_path / "results" / "ml-100k" / "*.json"))
    assert results == [path]  # one result file, written by rank 0
    assert len(glob.glob(str(tmp_path / "saved" / "*.pth"))) == 1  # one checkpoint
    assert len(glob.glob(str(data / "ml-100k" / "*.sid"))) == 1  # stage 1 once
    with open(path) as f:
        record = json.load(f)
    assert record["status"] == "ok" and os.path.isfile(record["checkpoint"])
    assert record["stage1"]["reused"] is False  # rank 0 trained stage 1 (the others reused it)
    assert record["config"]["nproc"] == 2 and record["config"]["world_size"] == 2
    assert set(record["test"]) == {"recall@5", "recall@10", "ndcg@5", "ndcg@10"}

    # every one of ml-100k's 943 test users exactly once, and the reported metric is their mean
    per_user = np.load(path[:-len(".json")] + ".users.npz")
    assert per_user["recall@10"].shape == (943,)
    assert record["test"]["recall@10"] == pytest.approx(float(per_user["recall@10"].mean()),
                                                        abs=1e-4)
    # trained weights rank the held-out item well above chance (10 / 1349 items)
    assert record["test"]["recall@10"] > 2 * 10 / 1349
