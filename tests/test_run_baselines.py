"""End to end on real ml-100k: RecBole baselines through the plugin pipeline, safe checkpoints,
results JSON and the compare table."""

import json
import os
import pickle
from fractions import Fraction

import pytest
import torch

from recbole_bbqrec.experiments import compare
from recbole_bbqrec.errors import CheckpointError
from recbole_bbqrec.quick_start import run
from recbole_bbqrec.checkpoints import load_model_checkpoint
from recbole_bbqrec.trainer import TrainingDivergedError

SMALL_SASREC = {"n_layers": 1, "n_heads": 1, "hidden_size": 32, "inner_size": 64}


@pytest.fixture(scope="module")
def sasrec_record(ml100k_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sasrec")
    config = {"epochs": 1, "show_progress": False, "state": "WARNING", "data_path": ml100k_root,
              "train_batch_size": 512, "eval_batch_size": 512,
              "checkpoint_dir": str(tmp / "saved"), "results_dir": str(tmp / "results"),
              **SMALL_SASREC}
    return run(model="SASRec", dataset="ml-100k", config_dict=config)


def test_one_epoch_sasrec_on_ml100k_is_evaluated_by_recbole(sasrec_record):
    record = sasrec_record
    assert set(record["test"]) == {"recall@5", "recall@10", "ndcg@5", "ndcg@10"}
    assert 0.0 < record["test"]["recall@10"] <= 1.0
    # Recall@10 >= Recall@5 and NDCG <= Recall: invariants of RecBole's metrics.
    assert record["test"]["recall@10"] >= record["test"]["recall@5"]
    assert record["test"]["ndcg@10"] <= record["test"]["recall@10"]
    # One epoch of SASRec is far better than random ranking over 1,682 items (10/1682 = 0.006).
    assert record["test"]["recall@10"] > 0.02
    with open(record["result_file"]) as f:
        on_disk = json.load(f)
    for key in ("model", "dataset", "config", "valid", "test", "train_s", "eval_s", "peak_rss_mb"):
        assert key in on_disk
    assert on_disk["config"]["MAX_ITEM_LIST_LENGTH"] == 20
    assert on_disk["peak_rss_mb"] > 0


def test_pop_whose_loss_is_a_one_element_vector_trains_and_is_evaluated(ml100k_root, tmp_path):
    # RecBole's Pop returns a [1] loss, not a scalar: the training loop must take both
    config = {"epochs": 1, "show_progress": False, "state": "WARNING", "data_path": ml100k_root,
              "checkpoint_dir": str(tmp_path / "saved"), "results_dir": str(tmp_path / "results")}
    record = run(model="Pop", dataset="ml-100k", config_dict=config)
    assert 0.0 < record["test"]["recall@10"] < 0.2 and record["epochs_trained"] == 1


def test_checkpoint_is_weights_only_loadable(sasrec_record):
    checkpoint = torch.load(sasrec_record["checkpoint"], weights_only=True)
    assert checkpoint["config"]["model"] == "SASRec"
    assert any(k.endswith("item_embedding.weight") for k in checkpoint["state_dict"])


def test_pickled_checkpoint_is_refused(tmp_path):
    path = tmp_path / "evil.pth"  # a Fraction needs its class's code to unpickle
    torch.save({"config": Fraction(1, 3), "state_dict": {}}, path,
               pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_model_checkpoint(str(path))


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_model_checkpoint(str(tmp_path / "nope.pth"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(sasrec_record, ml100k_root, tmp_path):
    from recbole.data import data_preparation

    from recbole_bbqrec.config import Config
    from recbole_bbqrec.trainer import get_trainer
    from recbole_bbqrec.utils import create_dataset, get_model

    config = Config(model="SASRec", dataset="ml-100k", config_dict={
        "data_path": ml100k_root, "checkpoint_dir": str(tmp_path), "show_progress": False,
        "state": "WARNING", "train_batch_size": 512, **SMALL_SASREC})
    from recbole.utils import init_logger

    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, _ = data_preparation(config, dataset)
    model = get_model("SASRec")(config, train_data._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], "SASRec")(config, model)
    trainer._save_checkpoint(0, verbose=False)
    good = open(trainer.saved_model_file, "rb").read()
    with torch.no_grad():
        model.item_embedding.weight.fill_(float("nan"))
    with pytest.raises(TrainingDivergedError, match="last good checkpoint"):
        trainer.fit(train_data, valid_data, saved=True)
    assert open(trainer.saved_model_file, "rb").read() == good


def test_compare_prints_a_row_per_model(sasrec_record, tmp_path, capsys):
    folder = os.path.dirname(sasrec_record["result_file"])
    csv_path = tmp_path / "table.csv"
    text = compare.main([folder, "--csv", str(csv_path)])
    assert "| SASRec |" in text and "test recall@10" in text
    assert f"{sasrec_record['test']['recall@10']:.4f}" in text
    assert csv_path.read_text().splitlines()[0].startswith("model,test recall@5")


def _sasrec_trainer(ml100k_root, tmp_path, model_name="SASRec", **extra):
    from recbole.data import data_preparation

    from recbole_bbqrec.config import Config
    from recbole_bbqrec.trainer import get_trainer
    from recbole_bbqrec.utils import create_dataset, get_model

    config = Config(model=model_name, dataset="ml-100k", config_dict={
        "data_path": ml100k_root, "checkpoint_dir": str(tmp_path), "show_progress": False,
        "state": "WARNING", "train_batch_size": 512, "eval_batch_size": 512, **extra})
    dataset = create_dataset(config)
    train_data, valid_data, _ = data_preparation(config, dataset)
    model = get_model(model_name)(config, train_data._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], model_name)(config, model)
    return trainer, train_data, valid_data


def test_resume_checkpoint_continues_after_the_saved_epoch(sasrec_record, ml100k_root, tmp_path):
    trainer, train_data, valid_data = _sasrec_trainer(ml100k_root, tmp_path, epochs=2,
                                                      **SMALL_SASREC)
    resumed = str(tmp_path / "resumed.pth")
    with open(sasrec_record["checkpoint"], "rb") as src, open(resumed, "wb") as dst:
        dst.write(src.read())  # fit() overwrites the file it resumed from
    saved = load_model_checkpoint(resumed)
    trainer.resume_checkpoint(resumed)
    assert trainer.start_epoch == saved["epoch"] + 1 == 1
    assert trainer.best_valid_score == saved["best_valid_score"]
    weight = trainer.model.item_embedding.weight
    assert torch.equal(weight, saved["state_dict"]["item_embedding.weight"])
    trainer.fit(train_data, valid_data, saved=True)
    assert list(trainer.train_loss_dict) == [1]  # only the epoch after the saved one ran
    assert trainer.saved_model_file == resumed  # resuming keeps writing the same file


def test_resume_from_another_models_checkpoint_names_both(sasrec_record, ml100k_root, tmp_path):
    from recbole_bbqrec.errors import CheckpointError

    trainer, _train, _valid = _sasrec_trainer(ml100k_root, tmp_path, model_name="GRU4Rec",
                                              embedding_size=32, hidden_size=32)
    with pytest.raises(CheckpointError, match="holds a SASRec model, not GRU4Rec"):
        trainer.resume_checkpoint(sasrec_record["checkpoint"])
