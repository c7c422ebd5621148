"""A run that did not train is never a result (issue 11, section 2): strict results JSON,
failed runs recorded as failed, and compare/report listing every file they cannot use."""

import json
import os

import numpy as np
import pytest

from recbole_bbqrec.experiments import compare, report, tables
from recbole_bbqrec.errors import ConfigError, RunFailedError
from recbole_bbqrec.quick_start import run
from recbole_bbqrec.recommend import Recommender
from recbole_bbqrec.results import load_per_user, scan_results, write_result

pytestmark = pytest.mark.usefixtures("single_thread")

METRICS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")


def good_record(model: str, level: float, stamp: str = "2026-01-01T00:00:00") -> dict:
    return {"model": model, "label": model, "dataset": "Toy", "command": f"python x --model={model}",
            "config": {}, "valid": {"ndcg@10": level / 2}, "best_valid_score": level / 2,
            "test": {m: level for m in METRICS}, "train_s": 1.0, "eval_s": 0.5,
            "epochs_trained": 2, "finished_at": stamp}


@pytest.fixture
def damaged_folder(tmp_path):
    """Two good runs and one file of each kind of damage, beside other (non-result) JSON."""
    results = tmp_path / "results"
    write_result(str(results), good_record("SASRec", 0.05))
    write_result(str(results), good_record("BBQRec", 0.04))
    folder = results / "Toy"
    nan = good_record("GRU4Rec", 0.9)
    (folder / "GRU4Rec-nan.json").write_text(json.dumps(nan).replace("0.9", "NaN", 1))
    text = json.dumps(good_record("BERT4Rec", 0.9))
    (folder / "BERT4Rec-truncated.json").write_text(text[: len(text) // 2])
    stringy = good_record("NOVA", 0.9)
    stringy["test"]["recall@10"] = "0.99"
    (folder / "NOVA-string.json").write_text(json.dumps(stringy))
    failed = dict(good_record("TIGER", 0.9), status="failed", failure="no validation score")
    (folder / "TIGER-failed.json").write_text(json.dumps(failed))
    (folder / "bench-decode.json").write_text(json.dumps({"rows": [{"beam": 50}]}))
    return results, folder


def test_compare_lists_every_unusable_file_and_never_picks_it_as_best(damaged_folder, capsys):
    results, folder = damaged_folder
    text = compare.main([str(folder)])
    assert "| SASRec |" in text and "| BBQRec |" in text
    for model in ("GRU4Rec", "BERT4Rec", "NOVA", "TIGER"):
        assert f"| {model} |" not in text  # not in any table ...
    note = text[text.index("Skipped 4 result file(s)"):]  # ... but named with the reason
    assert "GRU4Rec-nan.json`: contains NaN" in note
    assert "BERT4Rec-truncated.json`: not valid JSON, truncated or damaged" in note
    assert "NOVA-string.json`: test recall@10 is '0.99', not a finite number" in note
    assert "TIGER-failed.json`: the run failed: no validation score" in note
    assert "bench-decode" not in note  # other JSON beside results is not a result file
    best = [line for line in text.splitlines() if line.startswith("| R@10 |")][0]
    assert "**0.0500**" in best  # SASRec, the best usable run, not a NaN or a string


def test_report_shows_the_skipped_files(damaged_folder, tmp_path):
    results, _folder = damaged_folder
    path = report.build_report("Toy", results_dir=str(results), out_dir=str(tmp_path / "reports"),
                               ray_results=str(tmp_path / "none"), target="BBQRec")
    text = open(path).read()
    assert "## Skipped result files" in text and "Skipped 4 result file(s)" in text
    assert "contains NaN" in text and "not valid JSON" in text


def test_ranking_never_picks_nan_as_best():
    records = [dict(good_record("A", 0.1), _path="a"), dict(good_record("B", 0.2), _path="b"),
               dict(good_record("BBQRec", 0.15), _path="c")]
    records[1]["test"]["recall@10"] = float("nan")
    table = tables.paper_table(records, target="BBQRec")
    row = next(r for r in table["rows"] if r[0] == "R@10")
    assert row[3] == "**0.1500**" and row[1] == "<u>0.1000</u>"
    assert row[2] == "nan"  # shown as it is, never bold or underlined
    assert row[4] == "+50.00%"  # against A, the best finite column


def test_results_json_is_strict_and_a_nan_metric_is_a_failure(tmp_path):
    record = good_record("SASRec", 0.05)
    record["test"]["ndcg@10"] = float("nan")
    record["best_valid_score"] = float("-inf")
    path = write_result(str(tmp_path), record)
    with open(path) as f:
        on_disk = json.load(f, parse_constant=lambda name: pytest.fail(f"{name} in {path}"))
    assert on_disk["status"] == "failed" and on_disk["test"]["ndcg@10"] is None
    assert "test ndcg@10 is nan" in on_disk["failure"]
    assert scan_results(str(tmp_path)).records == []


def test_a_run_without_a_validation_score_is_recorded_as_failed(ml100k_root, tmp_path,
                                                                monkeypatch):
    from recbole_bbqrec.trainer import SafeCheckpointMixin

    # A trainer whose validation never produced a score (as eval_step > epochs did).
    monkeypatch.setattr(SafeCheckpointMixin, "fit",
                        lambda self, *args, **kwargs: (float("-inf"), None), raising=False)
    config = {"epochs": 1, "show_progress": False, "state": "WARNING", "data_path": ml100k_root,
              "n_layers": 1, "n_heads": 1, "hidden_size": 16, "inner_size": 32,
              "checkpoint_dir": str(tmp_path / "saved"), "results_dir": str(tmp_path / "results")}
    with pytest.raises(RunFailedError, match="without a validation score") as caught:
        run(model="SASRec", dataset="ml-100k", config_dict=config)
    files = os.listdir(tmp_path / "results" / "ml-100k")
    assert len(files) == 1 and str(caught.value).count(files[0]) == 1
    text = open(tmp_path / "results" / "ml-100k" / files[0]).read()
    on_disk = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} written"))
    assert on_disk["status"] == "failed" and on_disk["best_valid_score"] is None
    assert "test" not in on_disk
    assert scan_results(str(tmp_path / "results")).records == []
    with pytest.raises(ValueError, match="records a failed run .*no validation score"):
        Recommender.from_result(str(tmp_path / "results" / "ml-100k" / files[0]))


@pytest.mark.parametrize("extra, match", [
    ({"epochs": 0}, "epochs must be an integer >= 1, got 0"),
    ({"epochs": -2}, "epochs must be an integer >= 1, got -2"),
])
def test_a_run_that_would_not_train_stops_before_any_work(tmp_path, extra, match):
    config = {"data_path": str(tmp_path / "nothing-here"), "results_dir": str(tmp_path / "r"),
              "checkpoint_dir": str(tmp_path / "saved"), **extra}
    with pytest.raises(ConfigError, match=match):
        run(model="SASRec", dataset="ml-100k", config_dict=config)
    assert not (tmp_path / "r").exists() and not (tmp_path / "saved").exists()
    assert not (tmp_path / "nothing-here").exists()  # not even preprocessing started


def test_a_damaged_per_user_file_gives_na_with_the_reason(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {m: rng.random(30).astype(np.float32) for m in METRICS}
    for model, level in (("SASRec", 0.05), ("BBQRec", 0.06)):
        write_result(str(tmp_path), good_record(model, level), per_user=arrays)
    folder = tmp_path / "Toy"
    npz = sorted(folder.glob("BBQRec-*.users.npz"))[0]
    npz.write_bytes(npz.read_bytes()[:100])  # cut off, as an interrupted copy leaves it
    text = compare.main([str(folder)])
    assert "| R@10 |" in text and f"{npz} is damaged" in text  # a note, not a crash
    record = json.loads(sorted(folder.glob("SASRec-*.json"))[0].read_text())
    record["per_user_file"] = "../../outside.npz"
    record["_path"] = str(folder / "x.json")
    with pytest.raises(ValueError, match="not a file name beside the record"):
        load_per_user(record)


def test_train_speed_bench_keeps_the_rows_it_did_not_time(tmp_path):
    import json

    from bench.train_speed import merged_rows

    path = tmp_path / "bench-train_speed.json"
    path.write_text(json.dumps([{"model": "SASRec", "step_s": 0.05},
                                {"model": "BBQRec", "step_s": 0.3}]), encoding="utf-8")
    rows = merged_rows(str(path), [{"model": "BBQRec", "config_files": [], "flags": [],
                                    "step_s": 0.2},
                                   {"model": "BBQRec", "config_files": ["cpu_budget.yaml"],
                                    "flags": [], "step_s": 0.19}])
    assert [(r["model"], r["step_s"]) for r in rows] == [("SASRec", 0.05), ("BBQRec", 0.2),
                                                        ("BBQRec", 0.19)]
