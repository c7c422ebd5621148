"""LETTER end to end on real ml-100k (issue 11, 7): a 1-epoch SASRec gives the collaborative
item table (``letter_cf_checkpoint``), LETTER's stage 1 aligns its RQ-VAE codes with it, and
TIGER's generator is trained and tested on those IDs through RecBole's evaluator."""

from __future__ import annotations

import math
import os
import shutil

import pytest
import torch

from recbole_bbqrec.quick_start import run
from recbole_bbqrec.utils import repo_root

LETTER_YAML = os.path.join(repo_root(), "properties", "overrides", "letter.yaml")

# Both runs on the same data (histories cut to 5 items), so the SASRec table has a row for
# every item LETTER tokenizes.
TINY = {
    "epochs": 1, "show_progress": False, "state": "WARNING", "MAX_ITEM_LIST_LENGTH": 5,
    "train_batch_size": 1024, "eval_batch_size": 1024,
}
TINY_SASREC = {"hidden_size": 32, "inner_size": 64, "n_layers": 1, "n_heads": 2}
# N=64: with 1,349 items and a barely trained RQ-VAE, N=32 can exhaust a prefix's codes.
TINY_LETTER = {
    "codebook_size": 64, "code_dim": 16, "n_levels": 3, "tokenizer_hidden": [64],
    "tokenizer_epochs": 2, "tokenizer_steps_per_epoch": 6, "tokenizer_batch_size": 256,
    "d_model": 32, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1, "d_ff": 64,
    "n_buckets": 10, "beam_size": 10, "valid_beam_size": 10,
}


def paths(tmp_path, name: str) -> dict:
    return {"checkpoint_dir": str(tmp_path / name / "saved"),
            "results_dir": str(tmp_path / name / "results")}


@pytest.fixture(scope="module")
def data_root(ml100k_root, tmp_path_factory) -> str:
    """A private copy of the data: LETTER's stage-1 files land beside the dataset."""
    root = tmp_path_factory.mktemp("letter_data")
    shutil.copytree(os.path.join(ml100k_root, "ml-100k"), root / "ml-100k")
    return str(root)


@pytest.fixture(scope="module")
def sasrec_checkpoint(data_root, tmp_path_factory) -> str:
    record = run(model="SASRec", dataset="ml-100k",
                 config_dict={**TINY, **TINY_SASREC, "data_path": data_root,
                              **paths(tmp_path_factory.mktemp("sasrec"), "sasrec")})
    assert os.path.isfile(record["checkpoint"])
    return record["checkpoint"]


def letter_config(data_root: str, tmp_path, checkpoint: str | None, **extra) -> dict:
    return {**TINY, **TINY_LETTER, "data_path": data_root, "letter_cf_checkpoint": checkpoint,
            **paths(tmp_path, "letter"), **extra}


def test_letter_ids_from_a_sasrec_checkpoint_train_tiger_end_to_end(data_root, sasrec_checkpoint,
                                                                     tmp_path):
    record = run(model="TIGER", dataset="ml-100k", config_file_list=[LETTER_YAML],
                 config_dict=letter_config(data_root, tmp_path, sasrec_checkpoint))
    assert record["label"] == "TIGER-LETTER"  # run_tag from letter.yaml
    stage1 = record["stage1"]
    assert stage1["tokenizer"] == "letter" and stage1["signals"] == ["text"]
    assert stage1["collisions"] == 0
    table = torch.load(sasrec_checkpoint, weights_only=True)["state_dict"]["item_embedding.weight"]
    assert stage1["n_items"] == table.shape[0] - 1  # one SASRec row per item, plus padding
    # the alignment with SASRec's item table ran: its InfoNCE is logged, finite, and falls
    aligned = [epoch["cf_align"] for epoch in stage1["history"]]
    assert len(aligned) == 2 and all(math.isfinite(a) for a in aligned)
    assert aligned[1] < aligned[0], aligned
    # the generator learned something from these IDs through RecBole's evaluator
    random_recall = 10 / stage1["n_items"]
    assert record["test"]["recall@10"] > 2 * random_recall, record["test"]


def test_letter_without_a_checkpoint_says_which_key_to_set(data_root, tmp_path):
    # another seed: a stage-1 hash with no IDs on disk yet (the hash ignores the checkpoint)
    with pytest.raises(ValueError, match="letter_cf_checkpoint"):
        run(model="TIGER", dataset="ml-100k", config_file_list=[LETTER_YAML],
            config_dict=letter_config(data_root, tmp_path, None, stage="tokenizer", seed=5))


def test_another_sasrec_checkpoint_gives_new_letter_ids(data_root, sasrec_checkpoint, tmp_path):
    checkpoint = str(tmp_path / "sasrec.pth")
    shutil.copyfile(sasrec_checkpoint, checkpoint)
    first = run(model="TIGER", dataset="ml-100k", config_file_list=[LETTER_YAML],
                config_dict=letter_config(data_root, tmp_path, checkpoint, stage="tokenizer"))
    # the same file name, another collaborative table (as after retraining SASRec in place)
    blob = torch.load(checkpoint, weights_only=True)
    table = blob["state_dict"]["item_embedding.weight"]
    blob["state_dict"]["item_embedding.weight"] = torch.flip(table, dims=[1])
    torch.save(blob, checkpoint)
    second = run(model="TIGER", dataset="ml-100k", config_file_list=[LETTER_YAML],
                 config_dict=letter_config(data_root, tmp_path, checkpoint, stage="tokenizer"))
    assert not second["stage1"]["reused"]
    assert second["stage1"]["hash"] != first["stage1"]["hash"]
