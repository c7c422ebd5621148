"""compare.py (paper Table-2 layout, relative gain, paired t-test) and report.py on small
hand-written result files with per-user arrays."""

import csv
import json
import os

import numpy as np
import pytest
from scipy.stats import ttest_rel

from recbole_bbqrec.experiments import compare, report
from recbole_bbqrec.results import write_result
from recbole_bbqrec.experiments.sweep_results import plot_sweep
from recbole_bbqrec.experiments.search_space import SearchSpace

METRICS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")
N_USERS = 60


def per_user(seed: int, level: float) -> dict:
    """Per-user metrics shaped like RecBole's: recall is 0/1, ndcg in [0, recall]."""
    rng = np.random.default_rng(seed)
    hit10 = (rng.random(N_USERS) < level).astype(np.float32)
    hit5 = hit10 * (rng.random(N_USERS) < 0.7)
    ndcg10 = hit10 * rng.uniform(0.3, 1.0, N_USERS).astype(np.float32)
    ndcg5 = np.minimum(ndcg10, hit5)
    return {"recall@5": hit5, "recall@10": hit10, "ndcg@5": ndcg5, "ndcg@10": ndcg10}


def write_run(results_dir, model, arrays, run_tag=None, keep_npz=True, stamp="2026-01-01T00:00:00"):
    label = f"{model}-{run_tag}" if run_tag else model
    record = {"model": model, "label": label, "dataset": "Toy",
              "command": f"python run_recbole_bbqrec.py --model={model} --dataset=Toy",
              "config": {"run_tag": run_tag}, "valid": {"ndcg@10": 0.05},
              "test": {m: float(np.round(arrays[m].mean(), 4)) for m in METRICS},
              "train_s": 1.5, "eval_s": 0.5, "epochs_trained": 3, "finished_at": stamp}
    path = write_result(str(results_dir), record, per_user=arrays if keep_npz else None)
    return record, path


@pytest.fixture
def toy(tmp_path):
    results = tmp_path / "results"
    arrays = {"GRU4Rec": per_user(1, 0.3), "SASRec": per_user(2, 0.45), "BBQRec": per_user(3, 0.6)}
    for model, values in arrays.items():
        write_run(results, model, values)
    return results, arrays


def row_of(text: str, name: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_table2_layout_gain_and_paired_ttest(toy, tmp_path):
    results, arrays = toy
    csv_path = tmp_path / "out.csv"
    text = compare.main([str(results / "Toy"), "--csv", str(csv_path)])
    # Paper layout: metrics are rows, models columns (table2 order, target last).
    assert "| Metric | GRU4Rec | SASRec | BBQRec | Improv. | p-value |" in text
    for metric, short in zip(METRICS, ("R@5", "R@10", "N@5", "N@10")):
        cells = row_of(text, short)
        means = {m: float(np.round(arrays[m][metric].mean(), 4)) for m in arrays}
        best_base = max(("GRU4Rec", "SASRec"), key=lambda m: means[m])
        gain = (means["BBQRec"] - means[best_base]) / means[best_base] * 100
        assert cells[4] == f"{gain:+.2f}%"
        p = ttest_rel(arrays["BBQRec"][metric], arrays[best_base][metric]).pvalue
        assert cells[5] == (f"{p:.2e}" if p < 1e-3 else f"{p:.4f}")
        ranked = sorted(arrays, key=lambda m: -means[m])
        assert cells[1 + list(arrays).index(ranked[0])] == f"**{means[ranked[0]]:.4f}**"
        assert cells[1 + list(arrays).index(ranked[1])] == f"<u>{means[ranked[1]]:.4f}</u>"
    # The per-run table (timings + command) is still there, and its CSV unchanged.
    assert "| SASRec |" in text and "`python run_recbole_bbqrec.py --model=SASRec" in text
    assert csv_path.read_text().splitlines()[0].startswith("model,test recall@5")
    with open(tmp_path / "out-table2.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["Metric", "GRU4Rec", "SASRec", "BBQRec", "Improv.", "p-value"]
    # compare.py tests the float32 arrays from the .npz in float64.
    p_n10 = ttest_rel(arrays["BBQRec"]["ndcg@10"].astype(np.float64),
                      arrays["SASRec"]["ndcg@10"].astype(np.float64)).pvalue
    assert float(rows[4][5]) == pytest.approx(p_n10, rel=1e-12)


def test_missing_per_user_file_gives_na_with_a_note(tmp_path):
    results = tmp_path / "results"
    write_run(results, "SASRec", per_user(2, 0.45), keep_npz=False)
    write_run(results, "BBQRec", per_user(3, 0.6))
    text = compare.main([str(results / "Toy")])
    assert row_of(text, "N@10")[-1] == "n/a"
    assert row_of(text, "N@10")[-2].endswith("%")  # the gain needs no per-user data
    assert "no per-user ndcg@10 for SASRec" in text


def test_models_filter_target_and_no_target(toy):
    results, _ = toy
    text = compare.main([str(results / "Toy"), "--models", "SASRec,GRU4Rec"])
    assert "| Metric | SASRec | GRU4Rec | BBQRec | Improv. | p-value |" in text
    text = compare.main([str(results / "Toy"), "--target", "TIGER"])
    assert row_of(text, "R@5")[-2:] == ["n/a", "n/a"] and "no run labelled 'TIGER'" in text


def test_run_set_skips_unavailable_models_and_forwards_settings(toy, tmp_path, capsys):
    results, _ = toy
    sets = tmp_path / "sets.yaml"
    sets.write_text("compare_sets:\n  mine:\n    - {model: NoSuchModel}\n"
                    "    - {model: TIGER, config_files: [properties/overrides/letter.yaml]}\n"
                    "    - {model: SASRec, config_files: [missing.yaml]}\n")
    calls = []
    outcome = compare.run_set("mine", "Toy", str(results), argv=["--epochs=1"],
                              sets_path=str(sets), runner=lambda **kw: calls.append(kw))
    assert [status.split(":")[0] for _, status in outcome] == ["skipped", "ok", "skipped"]
    assert outcome[1][0] == "TIGER-LETTER"  # run_tag read from letter.yaml
    assert calls[0]["config_dict"]["results_dir"] == str(results)
    assert calls[0]["config_file_list"][0].endswith("properties/overrides/letter.yaml")
    assert calls[0]["argv"] == ["--epochs=1"]
    assert "skip NoSuchModel" in capsys.readouterr().out
    # Through the CLI: only unavailable entries, so nothing trains; the table still prints.
    sets.write_text("compare_sets:\n  none:\n    - {model: NoSuchModel}\n")
    text = compare.main([str(results / "Toy"), "--run", "none", "--sets", str(sets),
                         "--epochs=1"])
    assert "| Metric | GRU4Rec | SASRec | BBQRec |" in text
    with pytest.raises(SystemExit):
        compare.main([str(results / "Toy"), "--epochs=1"])  # config keys only with --run


def test_report_assembles_tables_figures_and_commands(toy, tmp_path):
    results, arrays = toy
    write_run(results, "BBQRec", per_user(4, 0.5), run_tag="ablation-noMIM")
    folder = results / "Toy"
    (folder / "stage1-BBQRec.json").write_text(json.dumps(
        [{"signal": "text", "collision_rate": 0.012, "codebook_use": 0.93,
          "command": "python run_recbole_bbqrec.py --stage=tokenizer"}]))
    (folder / "bench-decode.json").write_text(json.dumps({"users_per_s": 812.5, "beam": 50}))
    sweep_dir = tmp_path / "ray_results" / "BBQRec-Toy-lndk"
    space = SearchSpace("lndk.yaml", {"n_levels": {"kind": "grid", "args": [1, 2],
                                                   "values": [1, 2]}}, {}, False)
    plot_sweep([{"n_levels": 1, "ndcg@10": 0.03}, {"n_levels": 2, "ndcg@10": 0.05}], space,
               str(sweep_dir / "sweep.png"))
    (sweep_dir / "sweep.json").write_text(json.dumps({
        "dataset": "Toy", "searched": ["n_levels"], "n_trials": 2, "n_errors": 0,
        "best": {"n_levels": 2, "ndcg@10": 0.05}, "command": "python run_hyper.py --dataset=Toy",
        "space": "lndk.yaml", "epochs": 1, "fixed": {"tokenizer_steps_per_epoch": 100}}))

    path = report.build_report("Toy", str(results), str(tmp_path / "reports"),
                               str(tmp_path / "ray_results"))
    text = open(path).read()
    assert "| Metric | GRU4Rec | SASRec | BBQRec | Improv. | p-value |" in text
    assert "python run_recbole_bbqrec.py --model=GRU4Rec --dataset=Toy" in text
    # Ablation: the variant against the full model, not mixed into Table 2.
    assert "| Metric | BBQRec-ablation-noMIM | BBQRec | Improv. | p-value |" in text
    assert "| signal | collision_rate | codebook_use |" in text  # "command" is not a column
    assert "python run_recbole_bbqrec.py --stage=tokenizer" in text
    assert "| users_per_s | beam |" in text
    figure = tmp_path / "reports" / "Toy-figures" / "00-BBQRec-Toy-lndk.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](Toy-figures/00-BBQRec-Toy-lndk.png)" in text
    assert "python run_hyper.py --dataset=Toy" in text
    # a reduced budget is stated next to the figure it produced
    assert "Every trial: epochs=1, tokenizer_steps_per_epoch=100 (space `lndk.yaml`)" in text


def test_report_on_an_empty_dataset_names_the_commands(tmp_path):
    path = report.main(["--dataset=Nothing", "--results", str(tmp_path / "results"),
                        "--out", str(tmp_path / "reports"),
                        "--ray_results", str(tmp_path / "ray_results")])
    text = open(path).read()
    assert "--run table2 --dataset=Nothing" in text
    assert "--run_tag=ablation-" in text and "--stage=tokenizer" in text
    assert "properties/hyper/bbqrec_lndk.yaml" in text
    assert os.path.basename(path) == "Nothing.md"


def test_report_lists_each_protocol_and_flags_a_mismatch(tmp_path):
    results, arrays = tmp_path / "results", per_user(1, 0.3)
    leave_one_out = {"split": {"LS": "valid_and_test"}, "mode": "full", "order": "TO"}
    for model, history in (("GRU4Rec", 20), ("SASRec", 20), ("BBQRec", 50)):
        record, path = write_run(results, model, arrays)
        with open(path) as f:
            on_disk = json.load(f)
        on_disk["config"].update(eval_args=leave_one_out, MAX_ITEM_LIST_LENGTH=history,
                                 topk=[5, 10], valid_metric="NDCG@10")
        with open(path, "w") as f:
            json.dump(on_disk, f)
    text = open(report.build_report("Toy", str(results), str(tmp_path / "reports"),
                                    str(tmp_path / "ray_results"))).read()
    section = text.split("## Protocol")[1].split("\n## ")[0]
    assert "`MAX_ITEM_LIST_LENGTH`=20" in section and "`MAX_ITEM_LIST_LENGTH`=50" in section
    assert section.count("\n- ") == 2  # one line per distinct protocol
    assert ": GRU4Rec, SASRec" in section and ": BBQRec" in section
    assert "The runs differ in protocol" in section


def test_ray_sweep_state_beside_the_results_is_not_read_as_a_run(toy, tmp_path):
    results, _ = toy
    trial = results / "Toy" / "sweeps" / "lndk" / "trial_0"
    trial.mkdir(parents=True)
    (trial / "result.json").write_text('{"ndcg@10": 0.1}\n{"ndcg@10": 0.2}\n')  # JSON lines
    (trial / "params.json").write_bytes(b"\x80\x04binary")
    text = compare.main([str(results / "Toy")])
    assert "| Metric | GRU4Rec | SASRec | BBQRec |" in text


def test_ablations_are_compared_only_at_the_same_budget(tmp_path):
    results = tmp_path / "results"

    def run_at(model, epochs, level, seed, run_tag=None):
        _, path = write_run(results, model, per_user(seed, level), run_tag=run_tag)
        with open(path) as f:
            on_disk = json.load(f)
        on_disk["config"]["epochs"] = epochs
        with open(path, "w") as f:
            json.dump(on_disk, f)

    run_at("BBQRec", 6, 0.6, 1)                                 # long full run
    run_at("BBQRec", 6, 0.4, 2, run_tag="ablation-no_id")       # its variant
    run_at("BBQRec", 2, 0.3, 3, run_tag="ablation-full")        # short study
    run_at("BBQRec", 2, 0.2, 4, run_tag="ablation-no_mim")
    run_at("BBQRec", 2, 0.25, 5, run_tag="ablation-no_id")      # same label, other budget
    text = open(report.build_report("Toy", str(results), str(tmp_path / "reports"),
                                    str(tmp_path / "ray_results"))).read()
    section = text.split("## Ablations")[1].split("\n## ")[0]
    assert "### Budget: epochs=6" in section and "### Budget: epochs=2" in section
    long_study = section.split("### Budget: epochs=6")[1].split("### Budget")[0]
    short_study = section.split("### Budget: epochs=2")[1].split("### Budget")[0]
    assert "| Metric | BBQRec-ablation-no_id | BBQRec | Improv. | p-value |" in long_study
    header = next(line for line in short_study.splitlines() if line.startswith("| Metric |"))
    assert "BBQRec-ablation-no_mim" in header and "BBQRec-ablation-no_id" in header
    assert header.endswith("| BBQRec-ablation-full | Improv. | p-value |")
    assert "ablation-no_mim" not in long_study


def test_a_finished_sweep_is_replotted_from_its_csv(tmp_path):
    from recbole_bbqrec.experiments.sweep_results import read_trials_csv, replot, write_trials_csv

    space_file = tmp_path / "space.yaml"
    space_file.write_text("one_at_a_time: true\nn_levels: {grid: [2, 3], base: 3}\n"
                          "n_buckets: {grid: [10, 100], base: 100}\n")
    rows = [{"trial": "t0", "status": "COMPLETED", "n_levels": 3, "n_buckets": 100,
             "ndcg@10": 0.0054},
            {"trial": "t1", "status": "COMPLETED", "n_levels": 2, "n_buckets": 100,
             "ndcg@10": 0.0044},
            {"trial": "t2", "status": "ERROR", "n_levels": 3, "n_buckets": 10, "error": "boom"}]
    out = tmp_path / "sweep"
    out.mkdir()
    write_trials_csv(rows, ["n_levels", "n_buckets"], str(out / "trials.csv"))
    (out / "sweep.json").write_text(json.dumps({"space": str(space_file), "model": "BBQRec",
                                                "dataset": "Toy"}))
    back = read_trials_csv(str(out / "trials.csv"), ["n_levels", "n_buckets"])
    assert back[1]["n_levels"] == 2 and back[1]["ndcg@10"] == pytest.approx(0.0044)
    assert back[2]["ndcg@10"] is None and back[2]["error"] == "boom"
    assert replot(str(out)) == str(out / "sweep.png")
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table2_cites_one_run_per_model_chosen_by_validation():
    from recbole_bbqrec.experiments.tables import cited_runs

    def rec(model, label, valid, ablation=False):
        config = {"run_tag": "ablation-x"} if ablation else {}
        return {"model": model, "label": (f"ablation-{label}" if ablation else label),
                "valid": {"ndcg@10": valid}, "test": {"ndcg@10": valid / 2}, "config": config}

    records = [rec("BBQRec", "BBQRec", 0.020), rec("BBQRec", "BBQRec-budget20m", 0.028),
               rec("TIGER", "TIGER", 0.025), rec("TIGER", "TIGER-budget20m", 0.024),
               rec("BBQRec", "no_id", 0.090, ablation=True)]
    cited = {r["label"]: r["cited_label"] for r in cited_runs(records)}
    # the best validation wins within a model; an ablation is never the model's cited run
    assert cited == {"BBQRec": "BBQRec-budget20m", "TIGER": "TIGER"}


def test_run_tag_and_seed_of_config_files_are_what_a_run_sees(tmp_path):
    # Config merges files in order, so the last file that sets a key wins.
    from recbole_bbqrec.experiments.budget_compare import RECBOLE_DEFAULT_SEED, configured_seed
    from recbole_bbqrec.experiments.compare import entry_label

    first, last = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("run_tag: first\nseed: 3\n")
    last.write_text("run_tag: last\n")
    entry = {"model": "BBQRec", "config_files": [str(first), str(last)]}
    assert entry_label(entry) == "BBQRec-last"
    assert entry_label({**entry, "run_tag": "own"}) == "BBQRec-own"
    assert entry_label({"model": "SASRec"}) == "SASRec"
    assert configured_seed([str(first), str(last)]) == 3         # only the first sets a seed
    assert configured_seed([str(last)]) == RECBOLE_DEFAULT_SEED
