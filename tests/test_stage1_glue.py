"""Stage 1 on a RecBole dataset: training sequences come from the training split only."""

import numpy as np
from recbole.data import data_preparation

from recbole_bbqrec.config import Config
from recbole_bbqrec.tokenizers.stage1 import stage1_identity, training_sequences
from recbole_bbqrec.utils import create_dataset


def test_training_sequences_hold_no_validation_or_test_item(ml100k_root):
    config = Config(model="BBQRec", dataset="ml-100k",
                    config_dict={"data_path": ml100k_root, "state": "WARNING"})
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    sequences = training_sequences(train_data._dataset)

    # The full chronological history of every user, from the atomic file itself.
    import pandas as pd

    inter = pd.read_csv(f"{ml100k_root}/ml-100k/ml-100k.inter", sep="\t")
    inter.columns = ["user", "item", "time"]
    token_to_id = {tok: i for i, tok in enumerate(dataset.field2id_token["item_id"])}
    full = {user: [token_to_id[str(i)] for i in group.sort_values("time", kind="stable")["item"]]
            for user, group in inter.groupby("user")}

    assert len(sequences) == len(full) == 943
    lengths = sorted(len(s) for s in sequences)
    assert lengths == sorted(len(v) - 2 for v in full.values())  # last two: valid + test
    by_first_items = {tuple(v[:-2]) for v in full.values()}
    assert all(tuple(s.tolist()) in by_first_items for s in sequences)

    # The validation and test targets are exactly the items the sequences leave out.
    valid_targets = valid_data._dataset.inter_feat["item_id"].numpy()
    test_targets = test_data._dataset.inter_feat["item_id"].numpy()
    assert len(valid_targets) == len(test_targets) == 943
    assert sorted(np.concatenate([valid_targets, test_targets]).tolist()) == sorted(
        x for v in full.values() for x in v[-2:])


def test_stage1_hash_changes_with_config_and_not_with_stage2_keys(ml100k_root):
    def identity(**extra):
        config = Config(model="BBQRec", dataset="ml-100k",
                        config_dict={"data_path": ml100k_root, "state": "WARNING", **extra})
        dataset = create_dataset(config)
        return stage1_identity(config, dataset)[0]

    base = identity()
    assert identity(d_model=64, n_buckets=10, learning_rate=0.01) == base  # stage-2 keys
    assert identity(code_dim=32) != base and identity(use_mim=False) != base
    assert identity(enable_amp=False) == base  # fp32 IDs cached before amp was hashed
    assert identity(enable_amp=True) != base  # bf16 training gives other IDs


def test_standardize_gives_unit_variance_and_keeps_missing_rows_zero(ml100k_root):
    import torch

    from recbole_bbqrec.data.item_features import load_item_features
    from recbole_bbqrec.tokenizers.stage1 import standardize

    features = load_item_features(ml100k_root, "ml-100k", "text")
    matrix = torch.from_numpy(features.matrix)
    mask = torch.ones(len(matrix), dtype=torch.bool)
    mask[:5] = False  # pretend five items lack the modality
    z = standardize(matrix, mask)
    kept = z[mask]
    varying = matrix[mask].std(0) > 1e-6  # hashed features leave some dimensions constant
    assert torch.allclose(kept.mean(0), torch.zeros_like(kept[0]), atol=1e-4)
    assert torch.allclose(kept.std(0)[varying], torch.ones(int(varying.sum())), atol=1e-3)
    assert torch.count_nonzero(z[:5]) == 0
    assert torch.isfinite(z).all()


def test_id_signal_init_uses_stage1_training_items_only(ml100k_root, monkeypatch):
    import numpy as np
    import pytest

    from recbole_bbqrec.tokenizers import stage1
    from recbole_bbqrec.tokenizers.stage1 import id_signal_init, stage1_identity

    config = Config(model="BBQRec", dataset="ml-100k",
                    config_dict={"data_path": ml100k_root, "state": "WARNING"})
    dataset = create_dataset(config)
    seen = {}

    def spy(sequences, n_items, dim, window, seed):
        seen["items"] = np.concatenate(sequences)
        return np.zeros((n_items, dim))

    import recbole_bbqrec.tokenizers.collaborative as collaborative
    monkeypatch.setattr(collaborative, "cooccurrence_embeddings", spy)
    sequences = [np.array([0, 1, 2, 3]), np.array([4, 5, 6])]
    id_signal_init(config, 10, sequences)
    # each sequence's last item is stage 1's validation target: the SVD never sees it
    assert sorted(seen["items"].tolist()) == [0, 1, 2, 4, 5]

    with pytest.raises(ValueError, match="id_init must be one of"):
        id_signal_init(Config(model="BBQRec", dataset="ml-100k", config_dict={
            "data_path": ml100k_root, "state": "WARNING", "id_init": "svd"}), 10, sequences)
    with pytest.raises(ValueError, match="needs id_init_checkpoint"):
        id_signal_init(Config(model="BBQRec", dataset="ml-100k", config_dict={
            "data_path": ml100k_root, "state": "WARNING", "id_init": "checkpoint"}), 10, sequences)
    base = stage1_identity(config, dataset)[0]
    other = Config(model="BBQRec", dataset="ml-100k",
                   config_dict={"data_path": ml100k_root, "state": "WARNING", "id_init": "random"})
    assert stage1_identity(other, dataset)[0] != base
    assert stage1.ID_INITS == ("cooc", "checkpoint", "random")


def test_ids_that_cannot_hold_the_catalogue_are_refused_before_training(ml100k_root):
    import glob
    import os

    import pytest

    from recbole_bbqrec.tokenizers.stage1 import prepare_stage1

    config = Config(model="BBQRec", dataset="ml-100k", config_dict={
        "data_path": ml100k_root, "state": "WARNING", "n_levels": 1, "codebook_size": 4,
        "signals": ["id", "text"]})
    dataset = create_dataset(config)
    before = set(glob.glob(os.path.join(ml100k_root, "ml-100k", "*.stage1.*")))
    with pytest.raises(ValueError, match=r"at most 16 distinct semantic IDs, fewer than the \d+ items"):
        prepare_stage1(config, dataset)
    assert set(glob.glob(os.path.join(ml100k_root, "ml-100k", "*.stage1.*"))) == before
