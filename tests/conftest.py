"""Shared fixtures: real data, small configs, no stray command-line flags."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# bench/ helpers (the reference beam search) are imported as ``bench.<module>`` from the checkout
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
SHARED_DATA = REPO.parent / "shared" / "data" / "amazon2014"

torch.set_num_threads(2)

# Small but real settings for end-to-end runs on ml-100k (2 CPU cores).
TINY_RUN = {
    "epochs": 1,
    "show_progress": False,
    "state": "WARNING",
    "train_batch_size": 512,
    "eval_batch_size": 512,
    "checkpoint_dir": None,  # filled per test
    "results_dir": None,
}


@pytest.fixture(scope="session")
def ml100k_root(tmp_path_factory) -> str:
    """ml-100k preprocessed once per session into a temp data folder (hash text encoder)."""
    from recbole_bbqrec.preprocess import preprocess_dataset

    root = tmp_path_factory.mktemp("data")
    preprocess_dataset("ml-100k", out_dir=str(root), text_model="hash:64", show_progress=False)
    return str(root)


@pytest.fixture
def tiny_run_config(ml100k_root, tmp_path) -> dict:
    config = dict(TINY_RUN)
    config.update(data_path=ml100k_root, checkpoint_dir=str(tmp_path / "saved"),
                  results_dir=str(tmp_path / "results"))
    return config


@pytest.fixture(scope="module")
def single_thread():
    """One torch thread for modules of tiny tensors: on a busy 2-core box the OpenMP barrier
    of a second thread costs more than it saves (opt in with ``pytestmark``)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def shared_dataset_dir(name: str) -> Path:
    """``../shared/data/amazon2014/<name>``, or skip the test when it is absent."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data not present at {path}")
    return path


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch):
    # RecBole's own Config reads sys.argv; ours must not, and tests must not depend on it.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
