"""Config layering, plugin lookup with RecBole fallback, explicit argv, unknown-key warning."""

import logging
import sys

import pytest
import torch

from recbole_bbqrec.config import Config, known_config_keys
from recbole_bbqrec.utils import get_model, get_trainer


def test_builtin_model_falls_back_to_recbole_and_anomaly_detection_is_off():
    from recbole.model.sequential_recommender.sasrec import SASRec

    torch.autograd.set_detect_anomaly(True)
    assert get_model("SASRec") is SASRec
    assert not torch.is_anomaly_enabled()


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="NoSuchModel"):
        get_model("NoSuchModel")


def test_recbole_trainers_are_wrapped_with_safe_checkpoints():
    from recbole.trainer import Trainer
    from recbole.utils import ModelType

    from recbole_bbqrec.trainer import SafeCheckpointMixin

    cls = get_trainer(ModelType.SEQUENTIAL, "SASRec")
    assert issubclass(cls, Trainer) and issubclass(cls, SafeCheckpointMixin)
    assert get_trainer(ModelType.SEQUENTIAL, "GRU4Rec") is cls  # cached, not re-created


def test_layering_plugin_defaults_user_dict_and_argv(tmp_path):
    user_file = tmp_path / "user.yaml"
    user_file.write_text("learning_rate: 0.005\nepochs: 7\n")
    config = Config(model="SASRec", dataset="Beauty", config_file_list=[str(user_file)],
                    config_dict={"epochs": 3}, argv=["--epochs=5", "-x"])
    assert config["MAX_ITEM_LIST_LENGTH"] == 20          # plugin overall.yaml over RecBole's 50
    assert config["topk"] == [5, 10] and config["valid_metric"] == "NDCG@10"
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"}
    assert config["learning_rate"] == 0.005               # user file
    assert config["epochs"] == 5                          # argv beats dict beats file
    assert config["normalize_all"] is False               # feature embeddings never rescaled


def test_sys_argv_is_ignored_unless_passed(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest", "--epochs=99", "--learning_rate=1"])
    config = Config(model="SASRec", dataset="Beauty")
    assert config["epochs"] != 99 and config["learning_rate"] != 1


def test_ml100k_reads_the_preprocessed_copy_not_the_wheel(tmp_path):
    config = Config(model="SASRec", dataset="ml-100k", config_dict={"data_path": str(tmp_path)})
    assert config["data_path"] == str(tmp_path / "ml-100k")


def test_unknown_key_warns(caplog):
    with caplog.at_level(logging.WARNING):
        config = Config(model="SASRec", dataset="Beauty", config_dict={"lerning_rate": 0.1})
    assert config.unknown_keys == ["lerning_rate"]
    assert "lerning_rate" in caplog.text
    assert "learning_rate" in known_config_keys()


def test_duplicate_argv_with_different_values_is_an_error():
    with pytest.raises(SyntaxError, match="epochs"):
        Config(model="SASRec", dataset="Beauty", argv=["--epochs=1", "--epochs=2"])
