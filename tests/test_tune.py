"""Ray Tune search over the plugin pipeline: space files, a real 2-trial search on ml-100k,
a failing trial that does not end the search, and --resume."""

import csv
import importlib.util
import os

import pytest

from recbole_bbqrec.experiments import tune as bbq_tune
from recbole_bbqrec.experiments.search_space import POINT_KEY, load_space, trial_params
from recbole_bbqrec.experiments.tune import prepare_setup, run_search

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HYPER = os.path.join(REPO, "properties", "hyper")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --- space files (no Ray) ----------------------------------------------------------------------
def test_space_file_samplers_and_numbers(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("learning_rate: {loguniform: [1e-4, 1e-2]}\nhidden_size: {choice: [32, 64]}\n"
                    "n_layers: {grid: [1, 2]}\nfixed: {n_heads: 2}\n")
    space = load_space(str(path))
    assert space.keys == ["learning_rate", "hidden_size", "n_layers"]
    assert space.params["learning_rate"]["args"] == [1e-4, 1e-2]  # YAML 1.1 reads "1e-4" as str
    assert space.fixed == {"n_heads": 2} and space.is_log("learning_rate")
    ray_space = space.ray_space()
    assert ray_space["n_layers"] == {"grid_search": [1, 2]}
    assert 1e-4 <= ray_space["learning_rate"].sample() <= 1e-2


@pytest.mark.parametrize("text, message", [
    ("hidden_size: {pick: [1, 2]}\n", "hidden_size"),
    ("hidden_size: {grid: []}\n", "non-empty"),
    ("learning_rate: {loguniform: [0, 1]}\n", "> 0"),
    ("one_at_a_time: true\nhidden_size: {grid: [16, 32], base: 64}\n", "base=64"),
    ("hidden_size: {grid: [16]}\nfixed: {hidden_size: 32}\n", "both searched and fixed"),
    ("fixed: {n_heads: 2}\n", "no searched keys"),
])
def test_bad_space_files_are_named(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        load_space(str(path))
    assert "bad.yaml" in str(err.value)


def test_lndk_space_is_the_papers_one_at_a_time_study():
    space = load_space(os.path.join(HYPER, "bbqrec_lndk.yaml"))
    assert space.keys == ["n_levels", "codebook_size", "code_dim", "n_buckets"]
    points = space.points()
    assert len(points) == 13 and points[0] == {"n_levels": 3, "codebook_size": 256,
                                               "code_dim": 128, "n_buckets": 100}
    assert sorted(p["n_levels"] for p in points if p["codebook_size"] == 256
                  and p["code_dim"] == 128 and p["n_buckets"] == 100) == [1, 2, 3, 4]
    trial = space.ray_space()[POINT_KEY]["grid_search"][1]
    assert trial_params({POINT_KEY: trial}) == trial


def test_searched_key_on_the_command_line_or_misspelt_is_refused(tmp_path):
    space = load_space(os.path.join(HYPER, "sasrec_tiny.yaml"))
    with pytest.raises(ValueError, match="also given on the command line"):
        prepare_setup("SASRec", "ml-100k", space, argv=["--hidden_size=64"])
    path = tmp_path / "typo.yaml"
    path.write_text("hiden_size: {grid: [16, 32]}\n")
    with pytest.raises(ValueError, match="hiden_size"):
        prepare_setup("SASRec", "ml-100k", load_space(str(path)))


# --- real searches (local Ray, 2 CPUs) ----------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray():
    import ray

    assert bbq_tune.init_ray(num_cpus=2, verbose=False)  # the local Ray run_hyper.py starts
    yield
    ray.shutdown()


def test_local_trials_run_at_normal_priority(local_ray):
    import ray

    # Ray's default is 15 above the caller: beside another job the trials would barely get
    # CPU. They run at the caller's own priority (also when the suite itself runs under nice).
    assert ray.get(ray.remote(lambda: os.nice(0)).remote()) == os.nice(0)


def test_two_trial_search_writes_csv_and_sweep_plot(local_ray, ml100k_root, tmp_path):
    out = tmp_path / "ray_results" / "tiny"
    summary = run_search("SASRec", "ml-100k", os.path.join(HYPER, "sasrec_tiny.yaml"),
                         config_dict={"data_path": ml100k_root,
                                      "checkpoint_dir": str(tmp_path / "saved")},
                         epochs=1, output_dir=str(out), verbose=0,
                         # FIFO: under ASHA the trial that reaches the first rung second is
                         # stopped when it is the weaker one, so which trials finish would
                         # depend on the order the two happen to report in
                         scheduler="fifo")
    rows = read_csv(out / "trials.csv")
    assert [r["hidden_size"] for r in rows] == ["16", "32"]
    assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED"]
    for row in rows:  # reported per validation epoch, then tested with the best checkpoint
        assert 0.0 < float(row["ndcg@10"]) <= float(row["recall@10"]) <= 1.0
        assert 0.0 < float(row["test_recall@10"]) <= 1.0 and row["error"] == ""
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["n_trials"] == 2 and summary["best"]["ndcg@10"] == max(
        float(r["ndcg@10"]) for r in rows)
    # Trials started in the same second keep separate checkpoints.
    assert len(os.listdir(out / "checkpoints")) == 2


def test_invalid_trial_fails_alone_and_resume_keeps_finished_ones(local_ray, ml100k_root, tmp_path):
    spec = importlib.util.spec_from_file_location("run_hyper", os.path.join(REPO, "run_hyper.py"))
    run_hyper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_hyper)
    space = tmp_path / "heads.yaml"
    space.write_text("n_heads: {grid: [3, 1]}\n"  # 16 is not a multiple of 3 heads: SASRec refuses
                     "fixed: {hidden_size: 16, inner_size: 32, n_layers: 1, state: WARNING, "
                     "train_batch_size: 512, user_inter_num_interval: '[0,40]'}\n")
    out = tmp_path / "ray_results" / "heads"
    args = ["--dataset=ml-100k", "--model=SASRec", "--space", str(space), "--epochs", "1",
            "--max_concurrent", "1", "--output_dir", str(out), "--verbose", "0",
            f"--data_path={ml100k_root}", f"--checkpoint_dir={tmp_path / 'saved'}"]
    summary = run_hyper.main(args)
    rows = read_csv(out / "trials.csv")
    assert [(r["n_heads"], r["status"]) for r in rows] == [("3", "ERROR"), ("1", "COMPLETED")]
    assert "multiple of the number of attention heads" in rows[0]["error"]
    assert summary["n_errors"] == 1 and float(rows[1]["ndcg@10"]) > 0
    # --resume re-runs the errored trial only; the finished one keeps its results.
    run_hyper.main(args + ["--resume"])
    again = read_csv(out / "trials.csv")
    assert [(r["n_heads"], r["status"]) for r in again] == [("3", "ERROR"), ("1", "COMPLETED")]
    assert again[1]["ndcg@10"] == rows[1]["ndcg@10"] and again[1]["path"] == rows[1]["path"]


# --- GPUs on a Ray cluster (resource request and device choice; no GPU needed) -----------------
def test_trials_ask_ray_for_cpus_and_a_gpu_share():
    from recbole_bbqrec.experiments.tune import trial_resources

    assert trial_resources(1) == {"cpu": 1}  # CPU-only search: no GPU key at all
    assert trial_resources(4, 0.25) == {"cpu": 4, "gpu": 0.25}  # four trials per card
    with pytest.raises(ValueError, match="gpus_per_trial"):
        trial_resources(1, -1)


def test_a_trial_trains_on_the_gpu_ray_assigned_else_on_the_cpu():
    from recbole_bbqrec.experiments.tune import trial_device_keys

    assert trial_device_keys(["3"], 0.5) == {"use_gpu": True, "gpu_id": "3"}
    assert trial_device_keys([2, 5], 2) == {"use_gpu": True, "gpu_id": "2,5"}
    assert trial_device_keys([], 0) == {"use_gpu": False, "gpu_id": ""}
    assert trial_device_keys(["0"], 0) == {"use_gpu": False, "gpu_id": ""}  # asked for none


class _Stop(Exception):
    pass


def test_run_search_passes_the_gpu_share_to_ray(ml100k_root, tmp_path, monkeypatch):
    import ray.tune

    asked = {}

    def with_resources(trainable, resources):
        asked.update(resources)
        raise _Stop

    monkeypatch.setattr(bbq_tune, "init_ray", lambda *a, **k: False)
    monkeypatch.setattr(ray.tune, "with_resources", with_resources)
    spec = importlib.util.spec_from_file_location("run_hyper", os.path.join(REPO, "run_hyper.py"))
    run_hyper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_hyper)
    with pytest.raises(_Stop):
        run_hyper.main(["--dataset=ml-100k", "--model=SASRec", "--space",
                        os.path.join(HYPER, "sasrec_tiny.yaml"), "--gpus_per_trial", "0.5",
                        "--cpus_per_trial", "2", "--address", "auto", "--output_dir",
                        str(tmp_path / "out"), f"--data_path={ml100k_root}"])
    assert asked == {"cpu": 2, "gpu": 0.5}


def test_inside_ray_the_trial_config_gets_the_assigned_gpu(monkeypatch):
    import ray
    from ray.air import session

    seen, real_run_trial = {}, bbq_tune.run_trial
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: ["1"])
    monkeypatch.setattr(session, "get_trial_id", lambda: "t0")
    monkeypatch.setattr(bbq_tune, "run_trial",
                        lambda trial, setup, report=None: seen.update(setup=setup))
    setup = {"model": "SASRec", "dataset": "ml-100k", "config_file_list": [], "argv": [],
             "config_dict": {}, "trial_checkpoint_dir": "/tmp", "gpus": 0.5}
    bbq_tune.ray_trainable({}, setup)
    assert seen["setup"]["gpu_ids"] == ["1"]

    def build_config(model, dataset, files, config_dict, argv):
        seen.update(config_dict=config_dict, argv=argv)
        raise _Stop

    import recbole_bbqrec.quick_start as quick_start

    monkeypatch.setattr(quick_start, "build_config", build_config)
    with pytest.raises(_Stop):  # the command line's device keys give way to Ray's choice
        real_run_trial({}, {**seen["setup"], "argv": ["--gpu_id=0", "--epochs=1"]})
    assert seen["config_dict"]["gpu_id"] == "1" and seen["config_dict"]["use_gpu"] is True
    assert seen["argv"] == ["--epochs=1"]
