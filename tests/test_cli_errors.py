"""Fail early, in one line (issue 11, section 5): every CLI turns an expected error into
``error: ...`` on stderr and exit 2 (tracebacks only for bugs); damaged and foreign
checkpoints get their own messages."""

import os
import subprocess
import sys

import pytest
import torch

from recbole_bbqrec import recommend
from recbole_bbqrec.experiments import ablation, compare, report
from recbole_bbqrec.cli import run_cli
from recbole_bbqrec.errors import CheckpointError
from recbole_bbqrec.preprocess import __main__ as preprocess_cli
from recbole_bbqrec.checkpoints import load_model_checkpoint, load_model_weights

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run_recbole_bbqrec.py and run_hyper.py live at the root

import run_hyper  # noqa: E402
import run_recbole_bbqrec  # noqa: E402


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.fixture
def saved_checkpoint(tmp_path) -> str:
    path = tmp_path / "good.pth"
    torch.save({"config": {"model": "GRU4Rec"}, "state_dict": {"w": torch.zeros(64, 8)}}, path)
    return str(path)


def test_truncated_or_random_checkpoint_is_corrupt_not_unpickling(saved_checkpoint, tmp_path):
    data = open(saved_checkpoint, "rb").read()
    truncated, noise = tmp_path / "cut.pth", tmp_path / "noise.pth"
    truncated.write_bytes(data[: len(data) // 2])
    noise.write_bytes(os.urandom(4096))
    for path in (truncated, noise):
        with pytest.raises(CheckpointError, match="corrupt or not a checkpoint") as caught:
            load_model_checkpoint(str(path))
        assert "unpickl" not in str(caught.value)
    assert load_model_checkpoint(saved_checkpoint)["config"]["model"] == "GRU4Rec"


def test_checkpoint_of_another_model_names_both(saved_checkpoint):
    class SASRec(torch.nn.Module):  # the class name is what the check compares
        pass

    with pytest.raises(CheckpointError, match="holds a GRU4Rec model, not SASRec"):
        load_model_weights(SASRec(), saved_checkpoint)


@pytest.mark.parametrize("main, argv, expected", [
    (run_recbole_bbqrec.main, ["--epoch=1"], "'epoch' (did you mean 'epochs'?)"),
    (run_recbole_bbqrec.main, ["--run_tag=../x"], "run_tag='../x' cannot be used"),
    (run_recbole_bbqrec.main, ["--epochs=0"], "epochs must be an integer >= 1, got 0"),
    (run_recbole_bbqrec.main, ["--stage=generator"], "stage=generator does not exist"),
    (run_recbole_bbqrec.main, ["--onednn_inference=no"],
     "onednn_inference must be True or False, got 'no'"),
    (recommend.main, ["--run", "missing.json", "--history", "1"], "missing.json"),
    (compare.main, ["no/such/folder"], "No results folder no/such/folder"),
    (report.main, ["--dataset=../etc"], "dataset='../etc' cannot be used"),
    (ablation.main, ["--dataset=ml-100k", "--epoch=1"], "did you mean 'epochs'?"),
    (run_hyper.main, ["--space", "missing.yaml"], "Search space file not found: missing.yaml"),
    (preprocess_cli.main, ["--dataset", "../x"], "dataset='../x' cannot be used"),
])
def test_every_cli_turns_expected_errors_into_one_line_and_exit_2(main, argv, expected,
                                                                   capsys, tmp_path,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written into the checkout
    with pytest.raises(SystemExit) as caught:
        run_cli(main, argv)
    assert caught.value.code == 2
    line = one_error_line(capsys)
    assert expected in line, line
    assert os.listdir(tmp_path) == []  # refused before any work


def test_a_bug_keeps_its_traceback():
    def buggy(argv):
        return {}["no such key"]  # a KeyError from code, not from a config

    with pytest.raises(KeyError):
        run_cli(buggy, [])


def test_command_line_entry_point_exits_2_with_one_line(tmp_path):
    noise = tmp_path / "noise.pth"
    noise.write_bytes(os.urandom(1024))
    done = subprocess.run([sys.executable, "-m", "recbole_bbqrec.recommend", "--run", str(noise),
                           "--history", "1"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [f"error: {noise} is corrupt or not a checkpoint (not a complete torch "
                     f"archive: truncated by an interrupted copy, or another kind of file). "
                     f"Use another checkpoint or re-train."]


def test_cli_entry_passes_key_values_and_prints_the_result_path(ml100k_root, tmp_path,
                                                                capsys, monkeypatch):
    import json

    monkeypatch.chdir(tmp_path)  # RecBole's logger writes ./log/
    path = run_cli(run_recbole_bbqrec.main, [
        "--model=SASRec", "--dataset=ml-100k", f"--data_path={ml100k_root}", "--epochs=1",
        "--n_layers=1", "--n_heads=1", "--hidden_size=16", "--inner_size=32",
        "--train_batch_size=1024", "--eval_batch_size=1024", "--show_progress=False",
        "--state=WARNING", "--torch_threads=1", f"--checkpoint_dir={tmp_path / 'saved'}",
        f"--results_dir={tmp_path / 'results'}", "--topk=[5, 10]"])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == path and os.path.isfile(path)  # the last line is the results JSON
    with open(path) as f:
        config = json.load(f)["config"]
    assert config["hidden_size"] == 16 and config["epochs"] == 1 and config["topk"] == [5, 10]
    assert config["show_progress"] is False and config["data_path"].startswith(ml100k_root)


@pytest.mark.parametrize("path", ["run_recbole_bbqrec.py", "run_hyper.py",
                                  "recbole_bbqrec/recommend.py", "recbole_bbqrec/experiments/compare.py",
                                  "recbole_bbqrec/experiments/report.py",
                                  "recbole_bbqrec/experiments/ablation.py",
                                  "recbole_bbqrec/preprocess/__main__.py"])
def test_every_command_line_entry_goes_through_run_cli(path):
    # The in-process tests above call run_cli(main); this keeps each script's own
    # `if __name__ == "__main__":` block on the same path.
    source = open(os.path.join(REPO, path)).read()
    entry = source[source.index('if __name__ == "__main__":'):]
    assert "run_cli(main)" in entry, entry


@pytest.mark.parametrize("argv", [["--epochs", "5"], ["--out", "x.json"], ["stray"]])
def test_a_config_key_without_equals_is_refused_not_dropped(argv, capsys, tmp_path, monkeypatch):
    """RecBole's Config only warns about an argument that is not --key=value and runs on with
    the defaults (a bench once wrote into results/ that way); every entry point refuses it."""
    from bench import train_speed

    monkeypatch.chdir(tmp_path)
    for main, required in ((run_recbole_bbqrec.main, []), (train_speed.main, []),
                           (ablation.main, ["--dataset=ml-100k"])):
        with pytest.raises(SystemExit) as caught:
            run_cli(main, required + argv)
        assert caught.value.code == 2
        err = capsys.readouterr().err
        assert "unrecognized arguments: " + " ".join(argv) in err and "--key=value" in err, err
    assert os.listdir(tmp_path) == []


def test_flags_of_the_entry_point_itself_may_take_a_space():
    import argparse

    from recbole_bbqrec.cli import parse_with_config_keys

    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", "-d", default="ml-100k")
    args, keys = parse_with_config_keys(parser, ["--dataset", "Beauty", "--epochs=2"])
    assert args.dataset == "Beauty" and keys == ["--epochs=2"]
    args, keys = parse_with_config_keys(parser, ["-d", "Sports"])
    assert args.dataset == "Sports" and keys == []
    # A prefix of a flag is not that flag (argparse would otherwise take --data for --dataset).
    with pytest.raises(SystemExit):
        parse_with_config_keys(parser, ["--data", "Beauty"])


def test_run_script_hands_config_its_flags_as_key_value_pairs(monkeypatch, caplog, capsys):
    """``--dataset Beauty`` (space form) is used, so Config must not warn that it is not."""
    from recbole_bbqrec.quick_start import build_config

    seen = {}
    monkeypatch.setattr(run_recbole_bbqrec, "run", lambda **kw: seen.update(kw) or {})
    run_recbole_bbqrec.main(["-m", "SASRec", "--dataset", "ml-100k", "--epochs=2"])
    assert (seen["model"], seen["dataset"]) == ("SASRec", "ml-100k")
    assert seen["argv"] == ["--model=SASRec", "--dataset=ml-100k", "--epochs=2"]
    run_recbole_bbqrec.main([])                                   # the defaults, nothing typed
    assert (seen["model"], seen["dataset"], seen["argv"]) == ("BBQRec", "ml-100k", [])
    # Given twice with two values: refused, as Config refuses a key given twice.
    with pytest.raises(SystemExit) as caught:
        run_recbole_bbqrec.main(["-d", "Beauty", "--dataset=ml-100k"])
    assert caught.value.code == 2
    assert ("--dataset is given twice with different values ('Beauty', 'ml-100k')"
            in capsys.readouterr().err)
    run_recbole_bbqrec.main(["-d", "ml-100k", "--dataset=ml-100k"])       # the same value: fine
    caplog.set_level("WARNING")
    config = build_config("SASRec", "ml-100k", None, None,
                          ["--model=SASRec", "--dataset=ml-100k", "--epochs=2"])
    assert config["epochs"] == 2
    assert "will not be used" not in caplog.text
