"""Time budgets: a run stops when its clock has spent the budget, validates what it bought,
charges stage 1, and keeps its learning curve in the results JSON."""

from __future__ import annotations

import time

import pytest

from recbole_bbqrec.budget import TrainingClock, _BudgetedBatches, resolve_clock
from recbole_bbqrec.errors import ConfigError
from recbole_bbqrec.experiments.budget_compare import budget_records, budget_tag, run_commands, write_outputs
from recbole_bbqrec.quick_start import run, stage1_cost
from tests.conftest import TINY_RUN


def test_clock_counts_only_running_intervals_and_charges():
    clock = TrainingClock("wall")
    clock.charge(5.0)
    time.sleep(0.05)  # not running: not counted
    assert clock.elapsed() == pytest.approx(5.0)
    clock.start()
    time.sleep(0.05)
    clock.stop()
    assert 5.04 <= clock.elapsed() < 5.5
    assert clock.charged == 5.0 and clock.trained > 0.04


def test_process_clock_ignores_sleeping():
    clock = TrainingClock("process")
    clock.start()
    time.sleep(0.2)  # waiting on others (a busy machine) costs no CPU time
    clock.stop()
    assert clock.trained < 0.1


def test_batches_are_cut_when_the_budget_is_spent_but_the_first_is_free():
    clock = TrainingClock("wall")
    clock.charge(100.0)  # already over a 10 s budget
    cut = _BudgetedBatches(list(range(5)), clock, limit_s=10.0, free_batches=1)
    assert list(cut) == [0] and cut.cut
    unlimited = _BudgetedBatches(list(range(5)), clock, limit_s=None)
    assert list(unlimited) == [0, 1, 2, 3, 4] and not unlimited.cut
    assert len(cut) == 5  # RecBole sizes progress bars by the loader's length


def test_auto_clock_and_stage1_charge():
    assert resolve_clock("auto", "cpu") == "process"
    assert resolve_clock("auto", "cuda") == "wall"
    with pytest.raises(ValueError, match="budget_clock"):
        resolve_clock("sundial", "cpu")
    assert stage1_cost({"cpu_s": 12.5, "train_s": 30.0}, "process") == 12.5
    assert stage1_cost({"cpu_s": 12.5, "train_s": 30.0}, "wall") == 30.0
    assert stage1_cost({"train_s": 30.0}, "process") == 30.0  # IDs from before cpu_s
    assert stage1_cost(None, "process") == 0.0


@pytest.fixture(scope="module")
def budget_runs(ml100k_root, tmp_path_factory):
    """SASRec and GRU4Rec, 2 CPU seconds each, tagged as one comparison."""
    root = tmp_path_factory.mktemp("budget")
    records = []
    for model in ("SASRec", "GRU4Rec"):
        # 40 epochs take minutes; the 2-second budget must end each run within the first ones
        config = dict(TINY_RUN, data_path=ml100k_root, checkpoint_dir=str(root / "saved"),
                      results_dir=str(root / "results"), epochs=40, eval_step=5,
                      time_budget=2 / 60, budget_clock="process", torch_threads=1,
                      run_tag=budget_tag(2 / 60))
        records.append(run(model, "ml-100k", config_dict=config))
    return root, records


def test_a_budgeted_run_stops_early_validates_and_records_its_curve(budget_runs):
    record = budget_runs[1][0]
    budget = record["budget"]
    assert budget["spent"] and budget["minutes"] == pytest.approx(2 / 60)
    assert record["epochs_trained"] < 40
    assert 2.0 <= budget["charged_s"] < 2.0 + 10.0  # stops at the first batch past the budget
    assert record["curve"], "the epoch that spent the budget must be validated"
    last = record["curve"][-1]
    assert last["seconds"] == pytest.approx(budget["charged_s"], abs=0.01)
    assert 0.0 <= last["ndcg@10"] <= 1.0 and record["test"]["ndcg@10"] >= 0.0


def test_an_unbudgeted_run_still_records_its_curve(tiny_run_config):
    record = run("SASRec", "ml-100k", config_dict=dict(tiny_run_config, epochs=2, eval_step=1))
    assert not record["budget"]["spent"] and record["budget"]["minutes"] is None
    assert [p["epoch"] for p in record["curve"]] == [0, 1]
    assert record["curve"][0]["seconds"] < record["curve"][1]["seconds"]


@pytest.mark.parametrize("bad", [0, -1, "ten", float("nan")])
def test_a_bad_budget_is_refused_before_any_work(tiny_run_config, bad):
    with pytest.raises(ConfigError, match="time_budget"):
        run("SASRec", "ml-100k", config_dict=dict(tiny_run_config, time_budget=bad))


def test_the_comparison_finds_its_runs_and_writes_table_and_curves(budget_runs):
    root, records = budget_runs
    tag = budget_tag(2 / 60)
    found = budget_records(str(root / "results"), "ml-100k", tag)
    assert sorted(r["label"] for r in found) == [f"GRU4Rec-{tag}", f"SASRec-{tag}"]
    assert budget_records(str(root / "results"), "ml-100k", "budget99m") == []
    md, png = write_outputs("ml-100k", 2 / 60, str(root / "results"), str(root / "reports"))
    text = open(md, encoding="utf-8").read()
    for r in records:
        assert r["label"] in text and r["command"] in text
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # the dataset report embeds the table and links the curves
    from recbole_bbqrec.experiments.report import equal_budget_section

    section = equal_budget_section(found, "ml-100k", str(root / "results"), str(root / "reports"))
    assert f"### {tag}" in section and f"SASRec-{tag}" in section
    assert f"(ml-100k-{tag}.png)" in section
    # a run that learned similarity tables gets its own small table under the budget's
    learned = dict(found[0], label="BBQRec-" + tag, config=dict(found[0]["config"], run_tag=tag),
                   model_diagnostics={"similarity_scale_by_bucket_decile": [[1.0, 1.25]]})
    section = equal_budget_section([learned], "ml-100k", str(root / "results"),
                                   str(root / "reports"))
    assert f"Learned value scales of BBQRec-{tag}" in section and "| layer 0 | 1.000 | 1.250 |" in section


def test_comparison_commands_tag_every_run_and_give_each_one_thread():
    runs = run_commands("Beauty", 20, ["SASRec", "BBQRec"], {"no_id": ["--signals=['text']"]},
                        ["properties/overrides/cpu_budget.yaml"], ["--seed=3"], python="py")
    labels = [label for label, _ in runs]
    assert labels == ["SASRec-budget20m", "BBQRec-budget20m", "BBQRec-budget20m-no_id"]
    for _, argv in runs:
        assert "--time_budget=20" in argv and "--torch_threads=1" in argv and "--seed=3" in argv
    assert "--signals=['text']" in runs[2][1] and "--run_tag=budget20m-no_id" in runs[2][1]


def test_a_budget_under_ddp_is_refused_before_any_work(tiny_run_config):
    with pytest.raises(ConfigError, match="nproc"):
        run("SASRec", "ml-100k", config_dict=dict(tiny_run_config, time_budget=1, nproc=2))


def test_variant_flags_reach_the_run_unquoted(ml100k_root):
    from recbole_bbqrec.experiments.budget_compare import variant_flags

    flags = variant_flags("ml-100k", ["no_id"], [], [f"--data_path={ml100k_root}"])
    assert flags == {"no_id": ["--signals=['text']"]}  # no shell: quotes would stay in the value


def test_seeded_comparison_runs_every_model_once_per_seed():
    runs = run_commands("Beauty", 20, ["TIGER", "BBQRec"], {"no_id": ["--signals=['text']"]},
                        [], [], python="py", seeds=[2020, 2])
    assert [label for label, _ in runs] == [
        "TIGER-budget20m", "BBQRec-budget20m", "BBQRec-budget20m-no_id",
        "TIGER-budget20m-seed2", "BBQRec-budget20m-seed2", "BBQRec-budget20m-no_id-seed2"]
    assert "--seed=2020" in runs[0][1] and "--run_tag=budget20m" in runs[0][1]
    assert "--seed=2" in runs[5][1] and "--run_tag=budget20m-no_id-seed2" in runs[5][1]
    # seeds that leave out the configured one (2020) are all tagged: none passes as canonical
    later = run_commands("Beauty", 20, ["TIGER"], {}, [], [], python="py", seeds=[2, 3])
    assert [label for label, _ in later] == ["TIGER-budget20m-seed2", "TIGER-budget20m-seed3"]
    assert "--seed=3" in later[1][1] and "--run_tag=budget20m-seed3" in later[1][1]


def test_a_config_file_that_sets_the_seed_decides_the_plain_tag(tmp_path):
    config = tmp_path / "seed7.yaml"
    config.write_text("seed: 7  # (int) a site's own seed\n", encoding="utf-8")
    runs = run_commands("Beauty", 20, ["TIGER"], {}, [str(config)], [], python="py",
                        seeds=[2020, 7])
    assert [label for label, _ in runs] == ["TIGER-budget20m-seed2020", "TIGER-budget20m"]


def _seed_record(tmp_path, label, seed, ndcg_per_user):
    """A result record as load_results returns it, with its per-user file beside it."""
    import numpy as np

    ndcg = np.asarray(ndcg_per_user, dtype=np.float32)
    name = f"{label}-{seed}.users.npz"
    np.savez(tmp_path / name, **{"recall@10": (ndcg > 0).astype(np.float32), "ndcg@10": ndcg})
    return {"model": label.split("-")[0], "label": label, "config": {"seed": seed},
            "test": {"recall@10": float((ndcg > 0).mean()), "ndcg@10": float(ndcg.mean())},
            "valid": {"ndcg@10": float(ndcg.mean())}, "per_user_file": name,
            "_path": str(tmp_path / f"{label}-{seed}.json")}


def test_seed_table_gives_the_spread_and_tests_that_see_it(tmp_path):
    import numpy as np
    from scipy.stats import ttest_ind, ttest_rel

    from recbole_bbqrec.experiments.seeds import group_by_seed, seed_table

    rng = np.random.default_rng(0)
    users = 400
    a = [rng.random(users) * (rng.random(users) < 0.3) for _ in range(3)]
    b = [rng.random(users) * (rng.random(users) < 0.2) for _ in range(2)]
    records = ([_seed_record(tmp_path, "A-budget1m" + s, seed, x)
                for s, seed, x in zip(["", "-seed2", "-seed3"], [2020, 2, 3], a)]
               + [_seed_record(tmp_path, "B-budget1m" + s, seed, x)
                  for s, seed, x in zip(["", "-seed2"], [2020, 2], b)]
               + [_seed_record(tmp_path, "C-budget1m", 2020, b[0])])      # one run: no row
    assert list(group_by_seed(records)) == ["A-budget1m", "B-budget1m", "C-budget1m"]
    text = seed_table(records, "A-budget1m")
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()[2:]}
    assert set(rows) == {"A-budget1m", "B-budget1m"}
    means = [float(x.astype(np.float32).mean()) for x in a]
    assert f"{np.mean(means):.4f} ± {np.std(means, ddof=1):.4f}" in rows["A-budget1m"]
    assert "2020, 2, 3" in rows["A-budget1m"]
    b_means = [float(x.astype(np.float32).mean()) for x in b]
    welch = ttest_ind(means, b_means, equal_var=False).pvalue
    averaged = ttest_rel(np.mean([x.astype(np.float32) for x in a], 0),
                         np.mean([x.astype(np.float32) for x in b], 0)).pvalue
    from recbole_bbqrec.experiments.tables import fmt_pvalue

    assert f"{fmt_pvalue(welch)} / {fmt_pvalue(averaged)}" in rows["B-budget1m"]
    assert seed_table(records[-1:], "A-budget1m") is None
