"""Same seed, same thread count -> the same semantic IDs, weights and metrics (issue 11, 6).

With two torch threads the backward pass of advanced indexing (``table[index]``) adds into
the gradient from both threads at once, so without torch's deterministic mode the order of
the float additions, and so the last bits of the result, follow thread scheduling. Stage 1
is full of such lookups (codebooks, the ID table, the step's item vectors), and those bits
grew into different semantic IDs and test metrics between two runs of one seed."""

from __future__ import annotations

import glob
import os
import shutil

import numpy as np
import pytest
import torch

from recbole_bbqrec.quick_start import run
from recbole_bbqrec.checkpoints import load_model_checkpoint
from recbole_bbqrec.utils import init_seed_and_determinism

# Stage 1 (with its k-means refit after epoch 1) and one stage-2 epoch, small enough to run
# twice in ~30 s on 2 cores: the ml-100k users with at most 35 ratings, histories of 5.
TINY_TWICE = {
    "epochs": 1, "show_progress": False, "state": "WARNING",
    "user_inter_num_interval": "[0,35]", "MAX_ITEM_LIST_LENGTH": 5,
    "train_batch_size": 1024, "eval_batch_size": 1024,
    "codebook_size": 32, "code_dim": 16, "n_levels": 3, "tokenizer_hidden": [64],
    "tokenizer_epochs": 2, "tokenizer_steps_per_epoch": 4, "tokenizer_batch_size": 256,
    "d_model": 32, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1, "d_ff": 64,
    "n_buckets": 10, "beam_size": 10, "valid_beam_size": 10,
    "torch_threads": 2, "seed": 7,
}


@pytest.fixture
def restore_torch_state():
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
    torch.utils.deterministic.fill_uninitialized_memory = fill


def indexing_gradient(seed: int) -> torch.Tensor:
    """Gradient of a codebook-style lookup with many repeated rows (a stage-1 step's shape)."""
    gen = torch.Generator().manual_seed(seed)
    table = torch.randn(1500, 64, generator=gen, requires_grad=True)  # [n_items, D]
    index = torch.randint(0, 1500, (20000,), generator=gen)  # [P] positions -> items
    weight = torch.randn(20000, 64, generator=gen)
    (table[index] * weight).sum().backward()
    return table.grad


def test_reproducibility_switches_torch_to_deterministic_kernels(restore_torch_state):
    torch.set_num_threads(2)
    init_seed_and_determinism(3, reproducibility=True)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()  # never refuses an op
    # not the NaN fill of new tensors: it does nothing for determinism and costs 10x on SASRec
    assert not torch.utils.deterministic.fill_uninitialized_memory
    first = indexing_gradient(3)
    assert all(torch.equal(first, indexing_gradient(3)) for _ in range(10))
    # reproducibility=False (RecBole's key) gives the faster, scheduling-dependent kernels back
    init_seed_and_determinism(3, reproducibility=False)
    assert not torch.are_deterministic_algorithms_enabled()


def run_once(data_root: str, work) -> dict:
    """One BBQRec run (stage 1 + stage 2) in its own copy of the data (no reused IDs)."""
    data = work / "data"
    shutil.copytree(data_root, data)
    record = run(model="BBQRec", dataset="ml-100k",
                 config_dict={**TINY_TWICE, "data_path": str(data),
                              "checkpoint_dir": str(work / "saved"),
                              "results_dir": str(work / "results")})
    assert not record["stage1"]["reused"]
    folder = os.path.join(data, "ml-100k")
    # the shared data folder may already hold other tests' IDs: take this run's hash
    stem = f"{folder}/ml-100k.{record['stage1']['hash']}"
    (sid,), (zq,) = glob.glob(f"{stem}.sid"), glob.glob(f"{stem}.zq.npy")
    with open(sid, "rb") as f:
        record["sid_bytes"] = f.read()
    record["zq_array"] = np.load(zq)
    record["weights"] = load_model_checkpoint(record["checkpoint"])["state_dict"]
    with np.load(record["result_file"].replace(".json", ".users.npz")) as users:
        record["per_user"] = {k: users[k] for k in users.files}
    return record


def test_two_runs_of_one_seed_give_identical_ids_weights_and_metrics(ml100k_root, tmp_path,
                                                                      restore_torch_state):
    first = run_once(ml100k_root, tmp_path / "first")
    second = run_once(ml100k_root, tmp_path / "second")
    assert first["stage1"]["hash"] == second["stage1"]["hash"]
    # stage 1: the same semantic IDs, bit for bit the same quantized vectors
    assert first["sid_bytes"] == second["sid_bytes"]
    assert first["stage1"]["raw_collisions"] == second["stage1"]["raw_collisions"]
    assert np.array_equal(first["zq_array"], second["zq_array"])
    # stage 2: the same weights, the same per-user and averaged metrics
    assert first["weights"].keys() == second["weights"].keys()
    differing = [k for k, v in first["weights"].items() if not torch.equal(v, second["weights"][k])]
    assert not differing, f"stage-2 weights differ between two runs of one seed: {differing}"
    assert first["valid"] == second["valid"] and first["test"] == second["test"]
    for key, values in first["per_user"].items():
        assert np.array_equal(values, second["per_user"][key]), key
