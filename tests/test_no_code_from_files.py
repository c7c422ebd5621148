"""Nothing read from a file or the command line is ever executed (issue 11, section 1).

RecBole 1.2.1's ``Config`` passes every string of the command line and of ``config_dict``
through ``eval``; ``recommend`` feeds it the config recorded in a results JSON or a
checkpoint. Each test plants a payload that would create a marker file if it ran.
"""

import json
import os

import pytest
import torch

from recbole_bbqrec.config import Config, literal_value
from recbole_bbqrec.errors import ConfigError
from recbole_bbqrec.quick_start import run
from recbole_bbqrec.recommend import Recommender, main
from recbole_bbqrec.checkpoints import load_model_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")

MARKER = "pwned"  # created in the test's working directory if a payload runs
# No '/' and no '..', so the run_tag path check does not refuse it before Config would eval it.
PAYLOAD = f"__import__('pathlib').Path('{MARKER}').touch()"


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def sasrec_record(single_thread, ml100k_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("payload")
    config = {"epochs": 1, "show_progress": False, "state": "WARNING", "torch_threads": 1,
              "train_batch_size": 1024, "eval_batch_size": 1024, "data_path": ml100k_root,
              "n_layers": 1, "n_heads": 1, "hidden_size": 16, "inner_size": 32,
              "checkpoint_dir": str(tmp / "saved"), "results_dir": str(tmp / "results")}
    return run(model="SASRec", dataset="ml-100k", config_dict=config)


def test_command_line_and_config_dict_strings_are_literals_never_code(in_tmp):
    config = Config(model="SASRec", dataset="Beauty",
                    config_dict={"text_model": PAYLOAD, "learning_rate": "1e-4"},
                    argv=[f"--run_tag={PAYLOAD}", "--epochs=3", "--topk=[5, 10]",
                          "--show_progress=false", "--raw_dir=None"])
    assert not (in_tmp / MARKER).exists()
    assert config["run_tag"] == PAYLOAD and config["text_model"] == PAYLOAD  # plain strings
    assert config["epochs"] == 3 and config["topk"] == [5, 10]
    assert config["show_progress"] is False and config["raw_dir"] is None
    assert config["learning_rate"] == 1e-4
    # Only literals are converted; names, calls, sets and complex numbers stay text.
    assert literal_value("{'LS': 'valid_and_test'}") == {"LS": "valid_and_test"}
    for text in ("SASRec", "all", "1+2j", "{1, 2}", "os.system('x')"):
        assert literal_value(text) == text


def test_a_key_recbole_itself_evaluates_must_be_a_bare_name(in_tmp):
    # KD_DAGFM builds its teacher with eval(config['teacher']) when the model is created.
    assert Config(model="KD_DAGFM", dataset="ml-100k")["teacher"] == "CrossNet"
    with pytest.raises(ConfigError, match="teacher=.* must be a bare model name"):
        Config(model="KD_DAGFM", dataset="ml-100k", config_dict={"teacher": PAYLOAD})
    assert not (in_tmp / MARKER).exists()


def test_yaml_with_python_tags_is_refused(in_tmp):
    config_file = in_tmp / "evil.yaml"
    config_file.write_text("run_tag: !!python/name:os.system\n")
    with pytest.raises(ConfigError, match="evil.yaml"):
        Config(model="SASRec", dataset="Beauty", config_file_list=[str(config_file)])


def test_results_json_with_a_payload_never_runs_it(sasrec_record, in_tmp, capsys):
    record = json.loads(open(sasrec_record["result_file"]).read())
    for key in ("raw_dir", "text_model", "run_tag"):  # keys recommend does not need
        record["config"][key] = PAYLOAD
    record["checkpoint"] = os.path.abspath(sasrec_record["checkpoint"])
    path = in_tmp / "evil.json"
    path.write_text(json.dumps(record))
    main(["--run", str(path), "--history", "1,50", "--k", "3"])
    assert not (in_tmp / MARKER).exists()
    assert "| 1 |" in capsys.readouterr().out  # the payload was a plain, unused string


def test_checkpoint_with_a_payload_never_runs_it(sasrec_record, in_tmp):
    checkpoint = load_model_checkpoint(sasrec_record["checkpoint"])
    checkpoint["config"]["text_model"] = PAYLOAD
    checkpoint["config"]["run_tag"] = PAYLOAD
    path = in_tmp / "evil.pth"
    torch.save(checkpoint, path)
    assert torch.load(path, weights_only=True)["config"]["run_tag"] == PAYLOAD  # loads "safely"
    recommender = Recommender.from_checkpoint(str(path))
    assert not (in_tmp / MARKER).exists()
    assert recommender.config["text_model"] == PAYLOAD
    assert len(recommender.recommend(["1", "50"], k=3).items) == 3
