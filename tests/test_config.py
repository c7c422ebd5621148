"""Config layering, plugin lookup with RecBole fallback, explicit argv, unknown keys refused,
impossible values refused before any work (issue 11, sections 2 and 5)."""

import logging
import re
import sys

import pytest
import torch

from recbole_bbqrec.config import Config, known_config_keys
from recbole_bbqrec.errors import ConfigError
from recbole_bbqrec.trainer import get_trainer
from recbole_bbqrec.utils import get_model


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


def test_unknown_key_is_an_error_naming_the_closest_known_key():
    with pytest.raises(ConfigError, match=r"'epoch' \(did you mean 'epochs'\?\)"):
        Config(model="SASRec", dataset="Beauty", argv=["--epoch=1"])
    with pytest.raises(ConfigError, match="'lerning_rate' .*'learning_rate'.*allow_unknown_keys"):
        Config(model="SASRec", dataset="Beauty", config_dict={"lerning_rate": 0.1})
    assert "learning_rate" in known_config_keys()


def test_unknown_keys_are_a_warning_with_the_opt_out(caplog):
    with caplog.at_level(logging.WARNING):
        config = Config(model="SASRec", dataset="Beauty",
                        config_dict={"lerning_rate": 0.1, "allow_unknown_keys": True})
    assert config.unknown_keys == ["lerning_rate"] and config["lerning_rate"] == 0.1
    assert "lerning_rate" in caplog.text and "allow_unknown_keys" in caplog.text


def test_every_key_of_the_project_yaml_files_is_known():
    import glob
    import os

    import yaml

    from recbole_bbqrec.config import properties_dir

    known = known_config_keys()
    root = properties_dir()
    for path in glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True):
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        if path.endswith("compare_sets.yaml"):
            keys = {k for entries in data["compare_sets"].values() for e in entries
                    for k in (e.get("config") or {})}
        elif path.endswith("ablations.yaml"):
            keys = {k for e in data["ablations"] for k in (e.get("config") or {})}
        elif os.sep + "hyper" + os.sep in path:
            keys = (set(data) - {"fixed", "one_at_a_time"}) | set(data.get("fixed") or {})
        else:
            keys = set(data)
        assert keys <= known, (path, keys - known)


def test_duplicate_argv_with_different_values_is_an_error():
    with pytest.raises(ConfigError, match="epochs"):
        Config(model="SASRec", dataset="Beauty", argv=["--epochs=1", "--epochs=2"])


@pytest.mark.parametrize("argv, match", [
    (["--epochs=0"], "epochs must be an integer >= 1, got 0"),
    (["--epochs=-3"], "epochs must be an integer >= 1"),
    (["--train_batch_size=-1"], "train_batch_size must be an integer >= 1"),
    (["--MAX_ITEM_LIST_LENGTH=2.5"], "MAX_ITEM_LIST_LENGTH must be an integer"),
    (["--learning_rate=fast"], "learning_rate must be a number > 0"),
    (["--learning_rate=0"], "learning_rate must be a finite number > 0"),
    (["--epochs=1", "--eval_step=2"], "eval_step=2 > epochs=1"),
    (["--eval_step=0"], "eval_step must be an integer >= 1"),
    (["--run_tag=../../etc"], "run_tag='../../etc' cannot be used"),
    (["--run_tag=a/b"], "run_tag='a/b' cannot be used"),
    (["--id_layout=interleaved"], "id_layout must be one of ('tuple', 'flat')"),
    (["--code_usage_weight=-1"], "code_usage_weight must be a finite number >= 0"),
    (["--code_usage_temperature=0"], "code_usage_temperature must be a finite number > 0"),
])
def test_impossible_values_are_refused_before_any_work(argv, match):
    with pytest.raises(ConfigError, match=re.escape(match)):
        Config(model="SASRec", dataset="Beauty", argv=argv)


def test_beam_narrower_than_topk_and_unsafe_dataset_names_are_refused():
    with pytest.raises(ConfigError, match=re.escape("beam_size=5 is smaller than max(topk)=10")):
        Config(model="BBQRec", dataset="Beauty", argv=["--beam_size=5"])
    with pytest.raises(ConfigError, match="dataset='../Beauty' cannot be used"):
        Config(model="SASRec", dataset="../Beauty")
    # New size keys of a model YAML are checked by name, without being listed anywhere.
    with pytest.raises(ConfigError, match="d_model must be an integer >= 1, got -8"):
        Config(model="BBQRec", dataset="Beauty", config_dict={"d_model": -8})
