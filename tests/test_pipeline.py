"""``quick_start.build_run``: the one place a run's pieces are built, used by every caller."""

import torch

from recbole_bbqrec import quick_start
from recbole_bbqrec.experiments import tune
from recbole_bbqrec.quick_start import build_config, build_run

SMALL_SASREC = {"n_layers": 1, "n_heads": 1, "hidden_size": 16, "inner_size": 32,
                "train_batch_size": 1024, "eval_batch_size": 1024}


def _spy(monkeypatch):
    calls = []

    def recording_build_run(config, *args, **kwargs):
        parts = build_run(config, *args, **kwargs)
        calls.append((config["model"], args, kwargs, parts))
        return parts

    monkeypatch.setattr(quick_start, "build_run", recording_build_run)
    return calls


def test_run_and_a_tune_trial_build_through_build_run(monkeypatch, tiny_run_config):
    calls = _spy(monkeypatch)
    config = {**tiny_run_config, **SMALL_SASREC}
    record = quick_start.run(model="SASRec", dataset="ml-100k", config_dict=config)
    assert len(calls) == 1 and calls[0][0] == "SASRec"
    parts = calls[0][3]
    assert record["checkpoint"] == parts.trainer.saved_model_file  # the pieces run() used
    assert parts.model is parts.trainer.model

    reports = []
    final = tune.run_trial({}, {"model": "SASRec", "dataset": "ml-100k", "config_file_list": None,
                                "config_dict": config, "argv": [], "cpus": 1},
                           report=reports.append)
    assert len(calls) == 2 and final["finished"] == 1 and reports[-1] is final


def test_the_same_config_builds_the_same_model_and_inference_skips_the_split(tiny_run_config):
    config = build_config("SASRec", "ml-100k", config_dict={**tiny_run_config, **SMALL_SASREC})
    first, second = build_run(config), build_run(config)
    for (name, a), (_, b) in zip(first.model.state_dict().items(),
                                 second.model.state_dict().items()):
        assert torch.equal(a, b), name  # seeded in the same order: the same initial weights
    assert first.trainer is not None and first.train_data is not None

    bare = build_run(config, split=False, trainer=False)
    assert bare.train_data is None and bare.trainer is None and bare.stage1 is None
    assert bare.model.n_items == first.model.n_items
    assert torch.equal(bare.model.item_embedding.weight, first.model.item_embedding.weight)
